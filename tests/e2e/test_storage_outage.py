"""A storage outage (issue 16): the S3-compatible store goes away while clients keep sending.

The cluster's media service writes to `s3://` on moto's S3 server, a real HTTP S3 API started
here in the test process. Stopping it closes its listening socket (connections are refused, as
when a store's endpoint is down). While it is down, uploads, the first step of every send with
an attachment, are refused at once with 503 `store_unavailable` and nothing is kept; text-only
sends go on being acknowledged and delivered; once it is back, uploads and sends with
attachments work again without restarting anything.
"""

import asyncio
import contextlib
import time

from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest
from aiobotocore.session import get_session

from tests.e2e.faults import Sender, open_pairs, run_traffic, tally
from tests.integration.media_files import jpeg_with_gps
from tests.support import TEST_RUN_DIR, ChatClient, User, create_user, eventually, free_port, running_cluster

BUCKET = "parley-outage"
S3_CREDENTIALS = {"S3_ACCESS_KEY_ID": "test", "S3_SECRET_ACCESS_KEY": "test", "S3_REGION": "us-east-1"}
# An upload during the outage must be refused within this long (not left to hang on retries).
REFUSED_WITHIN_SECONDS = 10.0


class S3Server:
    """moto's threaded S3 server on a fixed port, which can be stopped (socket closed) and started
    again; its objects live in this process, so they survive a restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        self._server.stop()
        self._server._server.server_close()  # shutdown() alone leaves the socket accepting


@pytest.fixture
async def s3_server():
    server = S3Server()
    server.start()

    async with get_session().create_client("s3", endpoint_url=server.url, region_name="us-east-1",
                                           aws_access_key_id="test", aws_secret_access_key="test") as s3:
        await s3.create_bucket(Bucket=BUCKET)
    yield server
    with contextlib.suppress(Exception):
        server.stop()


async def upload(base_url: str, user) -> tuple[int, dict]:
    body = aiohttp.FormData()
    body.add_field("file", jpeg_with_gps(), filename="photo.jpg", content_type="image/jpeg")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/api/attachments", data=body, headers=user.auth_headers) as answer:
            return answer.status, await answer.json()


@dataclass
class Uploader:
    user: User
    client: ChatClient


async def send_photo(cluster, uploader: Uploader, sender: Sender) -> dict:
    """Uploads a photo through node a and sends it: acknowledged ids go to `sender.acked`."""
    status, photo = await upload(cluster.gateway_url("a"), uploader.user)
    assert status == 201, photo
    ack = await uploader.client.call("sendMessage", {"receiverId": sender.receiver.id, "text": "",
                                                          "attachmentIds": [photo["_id"]]})
    assert ack["ok"], ack
    sender.acked.append(ack["message"]["_id"])
    return photo


async def test_a_storage_outage_refuses_uploads_clearly_while_text_sends_go_on(stores, s3_server):
    with running_cluster(stores, TEST_RUN_DIR / "faults" / "logs" / "storage-outage", STORAGE_URL=f"s3://{BUCKET}",
                         S3_ENDPOINT_URL=s3_server.url, **S3_CREDENTIALS) as cluster:
        senders, receivers, clients = await open_pairs(cluster, count=2)
        ada = await create_user(cluster.history_url)
        uploader = Uploader(ada, await ChatClient(cluster.gateway_url("a"), ada.token).connect())
        clients.append(uploader.client)
        # Photos go to the first pair's receiver, listening on node b.
        photo_sender = Sender(uploader.client, senders[0].receiver)
        refused = []

        async def storage_outage():
            photo = await send_photo(cluster, uploader, photo_sender)
            await asyncio.to_thread(s3_server.stop)
            started = time.monotonic()
            refused.append(await upload(cluster.gateway_url("a"), ada))
            refused.append(await upload(cluster.gateway_url("b"), ada))
            refused.append(time.monotonic() - started)
            refused.append(await get_json(cluster.gateway_url("b") + photo["url"], senders[0].receiver.auth_headers))
            status, body = await get_json(cluster.stack["media"].internal_url + "/readyz")
            assert (status, body["status"]) == (200, "degraded") and "storage" in body["failures"], body
            await asyncio.sleep(1.0)  # text traffic runs on through the outage
            await asyncio.to_thread(s3_server.start)

            async def uploads_again():
                await send_photo(cluster, uploader, photo_sender)

            await eventually(uploads_again, timeout=15, interval=0.5)

        try:
            await run_traffic(senders, storage_outage)
            text = await tally("S3 storage stopped: text sends", stores.database_url, cluster.gateway_url("b"),
                               senders, receivers)
            photos = await tally("S3 storage stopped: photo sends", stores.database_url, cluster.gateway_url("b"),
                                 [photo_sender], receivers)
            attachments_left = await count_unsent(stores.database_url, ada.id)
        finally:
            for client in clients:
                await client.close()
        logged_errors = {name: [line for line in process.log_text().splitlines() if '"level": "error"' in line]
                         for name, process in cluster.stack.processes.items()}

    (status_a, body_a), (status_b, body_b), seconds, (status_download, body_download) = refused
    assert (status_a, body_a["code"]) == (503, "store_unavailable"), body_a
    assert (status_b, body_b["code"]) == (503, "store_unavailable"), body_b
    assert seconds < 2 * REFUSED_WITHIN_SECONDS, seconds
    # A download during the outage is refused before any byte is sent, not cut off mid-way.
    assert (status_download, body_download["code"]) == (503, "store_unavailable"), body_download
    assert attachments_left == 0  # the refused uploads kept no row
    assert not any(logged_errors.values()), logged_errors
    assert all(sender.acked for sender in senders) and not any(sender.errors for sender in senders)
    assert text.acknowledged == text.stored == text.received and text.lost == 0, text
    assert photos.acknowledged == photos.stored == photos.received == 2 and photos.lost == 0, photos


async def get_json(url: str, headers=None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers=headers) as answer:
            return answer.status, await answer.json()


async def count_unsent(database_url: str, user_id: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetchval(
            "SELECT count(*) FROM attachments WHERE uploader_id = $1 AND message_id IS NULL", user_id)
    finally:
        await connection.close()
