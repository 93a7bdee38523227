"""The media service in-process against the run's Postgres: uploads, type detection and
refusals, EXIF stripping, thumbnails, signed downloads with ranges, the sweeper, and S3
(a real S3-compatible server: moto's, started here on 127.0.0.1)."""

import io
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from services.devtools.stores import free_port
from services.media.app import create_app, sweep
from services.media.app_keys import STORE
from services.media.settings import MediaSettings
from tests.integration.media_files import (
    ELF_HEADER,
    GPS_IFD,
    SVG_WITH_SCRIPT,
    jpeg_with_gps,
    png,
    png_bomb,
    small_zip,
    zip_bomb,
)
from tests.support import GATEWAY_TOKEN, JWT

MB = 1024 * 1024


def media_settings(stores, storage_url: str, **overrides) -> MediaSettings:
    values = dict(database_url=stores.database_url, storage_url=storage_url, jwt_secret=JWT.jwt_secret,
                  url_signing_secret="test-url-signing-secret-long-enough-0123456789")
    values.update(overrides)
    return MediaSettings(**values)


@pytest.fixture
async def media_dir(tmp_path) -> Path:
    return tmp_path / "objects"


@pytest.fixture
async def media(stores, media_dir, history):  # history: its migrations made the attachments table
    app = create_app(media_settings(stores, f"file://{media_dir}"))
    async with TestClient(TestServer(app)) as client:
        yield client


def form(data: bytes, filename: str, content_type: str = "application/octet-stream") -> aiohttp.FormData:
    body = aiohttp.FormData()
    body.add_field("file", io.BytesIO(data), filename=filename, content_type=content_type)
    return body


async def upload(client, user, data: bytes, filename: str):
    answer = await client.post("/api/attachments", data=form(data, filename), headers=user.auth_headers)
    return answer.status, await answer.json()


def stored_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


async def fetch(client, user, url: str, **headers):
    """Follows the authenticated route's redirect to the signed link (as a browser does)."""
    answer = await client.get(url, headers=user.auth_headers, allow_redirects=False)
    assert answer.status == 302, await answer.text()
    return await client.get(answer.headers["Location"], headers=headers)


async def test_an_image_is_stored_without_exif_with_a_thumbnail(media, make_user, media_dir):
    ada = await make_user()
    original = jpeg_with_gps(1200, 800)
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(GPS_IFD)  # the test file has a position
    status, body = await upload(media, ada, original, "../../holiday.JPG")
    assert status == 201, body
    assert body["contentType"] == "image/jpeg" and (body["width"], body["height"]) == (1200, 800)
    assert body["name"] == "holiday.JPG"
    assert body["url"] == f"/api/attachments/{body['_id']}" and body["thumbnailUrl"].endswith("/thumbnail")
    full = await fetch(media, ada, body["url"])
    assert full.status == 200 and full.headers["Content-Type"] == "image/jpeg"
    assert full.headers["X-Content-Type-Options"] == "nosniff"
    assert full.headers["Content-Disposition"].startswith("inline;")
    stored = Image.open(io.BytesIO(await full.read()))
    assert not stored.getexif() and not stored.getexif().get_ifd(GPS_IFD) and "exif" not in stored.info
    thumb = await fetch(media, ada, body["thumbnailUrl"])
    assert thumb.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(await thumb.read())).size == (320, 213)
    assert len(stored_files(media_dir)) == 2


@pytest.mark.parametrize(
    "data, filename, why",
    [
        (ELF_HEADER, "cat.png", "application/x-executable"),
        (b"MZ\x90\x00" + b"\x00" * 60 + b"PE\x00\x00" + b"\x00" * 200, "cat.png", "cannot be attached"),
        (SVG_WITH_SCRIPT, "cat.svg", "cannot be attached"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "page.txt", "cannot be attached"),
        (png_bomb(), "bomb.png", "pixels"),
        (zip_bomb(), "bomb.zip", "zip bomb"),
        (png()[:40], "cut.png", "cannot be read"),
    ],
    ids=["elf-as-png", "exe-as-png", "svg-script", "html", "png-bomb", "zip-bomb", "truncated-png"],
)
async def test_refused_files_get_a_400_and_store_nothing(media, make_user, media_dir, stores, data, filename, why):
    ada = await make_user()
    status, body = await upload(media, ada, data, filename)
    assert status == 400 and body["code"] == "invalid_file" and why in body["message"], body
    assert stored_files(media_dir) == []
    assert not await attachment_rows(media, ada.id)


async def attachment_rows(client, uploader_id: str):
    async with client.app[STORE]._pool.acquire() as connection:
        return await connection.fetch("SELECT * FROM attachments WHERE uploader_id = $1", uploader_id)


async def test_a_26_mb_file_is_refused_with_413_and_nothing_stored(media, make_user, media_dir):
    ada = await make_user()
    status, body = await upload(media, ada, b"a" * (26 * MB), "big.txt")
    assert status == 413 and body["code"] == "payload_too_large"
    assert stored_files(media_dir) == [] and not await attachment_rows(media, ada.id)


async def test_a_streamed_body_past_the_limit_is_cut_off_with_413(media, make_user, media_dir):
    """No Content-Length (chunked): media counts as it reads and stops at the limit."""
    ada = await make_user()

    async def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n\r\n"
        for _ in range(26):
            yield b"a" * MB
        yield b"\r\n--b--\r\n"

    answer = await media.post("/api/attachments", data=chunks(),
                              headers={**ada.auth_headers, "Content-Type": "multipart/form-data; boundary=b"})
    assert answer.status == 413
    assert stored_files(media_dir) == [] and not await attachment_rows(media, ada.id)


async def test_text_pdf_and_zip_are_accepted_as_attachments(media, make_user):
    ada = await make_user()
    status, body = await upload(media, ada, "héllo, plain text\n".encode(), "notes.txt")
    assert (status, body["contentType"]) == (201, "text/plain") and "thumbnailUrl" not in body
    answer = await fetch(media, ada, body["url"])
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.headers["Content-Disposition"] == "attachment; filename=\"notes.txt\"; filename*=UTF-8''notes.txt"
    status, body = await upload(media, ada, small_zip(), "n.zip")
    assert (status, body["contentType"]) == (201, "application/zip")
    status, body = await upload(media, ada, b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "a.pdf")
    assert (status, body["contentType"]) == (201, "application/pdf")


async def test_ranges_and_the_signed_link(media, make_user):
    ada, bob = await make_user(), await make_user()
    text = ("0123456789" * 1000).encode()
    status, body = await upload(media, ada, text, "digits.txt")
    assert status == 201
    part = await fetch(media, ada, body["url"], Range="bytes=10-19")
    assert part.status == 206 and part.headers["Content-Range"] == f"bytes 10-19/{len(text)}"
    assert await part.read() == text[10:20]
    tail = await fetch(media, ada, body["url"], Range="bytes=-5")
    assert await tail.read() == text[-5:]
    past = await fetch(media, ada, body["url"], Range=f"bytes={len(text)}-")
    assert past.status == 416
    # Someone else cannot get a link to an upload not sent to them; a forged link is refused.
    assert (await media.get(body["url"], headers=bob.auth_headers, allow_redirects=False)).status == 404
    assert (await media.get(body["url"], allow_redirects=False)).status == 401
    link = (await media.get(body["url"] + "?redirect=false", headers=ada.auth_headers)).status
    assert link == 200
    answer = await media.get(body["url"], headers=ada.auth_headers, allow_redirects=False)
    forged = answer.headers["Location"].replace("variant=full", "variant=thumbnail")
    assert (await media.get(forged)).status == 403
    tampered = answer.headers["Location"][:-1] + ("0" if answer.headers["Location"][-1] != "0" else "1")
    assert (await media.get(tampered)).status == 403


async def test_the_sweeper_removes_old_unsent_uploads(media, make_user, media_dir):
    ada = await make_user()
    status, body = await upload(media, ada, png(), "p.png")
    assert status == 201 and len(stored_files(media_dir)) == 2
    async with media.app[STORE]._pool.acquire() as connection:
        await connection.execute("UPDATE attachments SET created_at = now() - interval '2 days' WHERE id = $1",
                                 body["_id"])
    assert await sweep(media.app) >= 1
    assert stored_files(media_dir) == [] and not await attachment_rows(media, ada.id)


# --- S3: moto's server, a real HTTP S3 API ---------------------------------------------------


@pytest.fixture
def s3_server(monkeypatch):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


async def test_s3_storage_with_multipart_upload(stores, history, make_user, s3_server):
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", endpoint_url=s3_server, region_name="us-east-1") as s3:
        await s3.create_bucket(Bucket="parley-media")
        settings = media_settings(stores, "s3://parley-media", s3_endpoint_url=s3_server, s3_part_bytes=5 * MB)
        async with TestClient(TestServer(create_app(settings))) as media:
            ada = await make_user()
            text = ("line of text\n" * 1_000_000).encode()[: 12 * MB]  # three parts of 5 MB
            status, body = await upload(media, ada, text, "big.txt")
            assert status == 201, body
            listed = await s3.list_objects_v2(Bucket="parley-media")
            assert [item["Size"] for item in listed["Contents"]] == [len(text)]
            part = await fetch(media, ada, body["url"], Range=f"bytes={6 * MB}-{6 * MB + 99}")
            assert part.status == 206 and await part.read() == text[6 * MB: 6 * MB + 100]
            status, image = await upload(media, ada, jpeg_with_gps(), "photo.jpg")
            assert status == 201
            thumb = await fetch(media, ada, image["thumbnailUrl"])
            assert max(Image.open(io.BytesIO(await thumb.read())).size) == 320
            async with media.app[STORE]._pool.acquire() as connection:
                await connection.execute(
                    "UPDATE attachments SET created_at = now() - interval '2 days' WHERE uploader_id = $1", ada.id)
            await sweep(media.app)
            assert "Contents" not in await s3.list_objects_v2(Bucket="parley-media")


# --- sending: history links the uploads; members download; deletion removes them --------------


async def store(history_internal, sender, *, receiver=None, group_id=None, text="", attachment_ids=(), client_id=None):
    message = {"senderId": sender.id, "text": text, "attachmentIds": list(attachment_ids), "clientId": client_id}
    message |= {"groupId": group_id} if group_id else {"receiverId": receiver.id}
    answer = await history_internal.post("/internal/messages/batch", json={"messages": [message]},
                                         headers={"X-Internal-Token": GATEWAY_TOKEN})
    assert answer.status == 200, await answer.text()
    return (await answer.json())["results"][0]


async def test_a_sent_attachment_reaches_the_receiver_once_and_goes_with_its_message(
        media, history, history_internal, make_user, media_dir):
    ada, bob, eve = await make_user(), await make_user(), await make_user()
    _, photo = await upload(media, ada, jpeg_with_gps(), "photo.jpg")
    _, notes = await upload(media, ada, b"notes", "notes.txt")
    _, eves = await upload(media, eve, b"eve's", "eve.txt")
    # Someone else's upload, or an unknown one, cannot be sent.
    refused = await store(history_internal, ada, receiver=bob, attachment_ids=[eves["_id"]])
    assert refused["error"]["code"] == "invalid_attachmentIds"
    assert (await media.get(photo["url"], headers=bob.auth_headers, allow_redirects=False)).status == 404
    sent = await store(history_internal, ada, receiver=bob, attachment_ids=[notes["_id"], photo["_id"]],
                       client_id="c-att")
    message = sent["message"]
    assert message["text"] == "" and [a["_id"] for a in message["attachments"]] == [notes["_id"], photo["_id"]]
    assert message["attachments"][1] == photo
    # A retry answers the message stored first; another message cannot take the same upload.
    retry = await store(history_internal, ada, receiver=bob, attachment_ids=[notes["_id"], photo["_id"]],
                        client_id="c-att")
    assert retry["message"]["_id"] == message["_id"] and retry["created"] is False
    again = await store(history_internal, ada, receiver=bob, text="again", attachment_ids=[photo["_id"]])
    assert again["error"]["code"] == "invalid_attachmentIds"
    # The receiver downloads; a stranger cannot; the page carries the attachments too.
    got = await fetch(media, bob, photo["url"])
    assert got.status == 200 and got.headers["Content-Type"] == "image/jpeg"
    assert (await media.get(photo["url"], headers=eve.auth_headers, allow_redirects=False)).status == 404
    page = await history.get(f"/api/messages/{ada.id}", headers=bob.auth_headers)
    assert (await page.json())[-1]["attachments"] == message["attachments"]
    # Deleting the message deletes its attachments: no more links, and the sweeper removes the bytes.
    assert (await history.delete(f"/api/messages/{message['_id']}", headers=ada.auth_headers)).status == 200
    assert (await media.get(photo["url"], headers=bob.auth_headers, allow_redirects=False)).status == 404
    await sweep(media.app)
    left = {path.name.split(".")[0] for path in stored_files(media_dir)}
    assert left == {eves["_id"]}


async def test_a_group_attachment_is_for_the_groups_members(media, history, history_internal, make_user):
    ada, bob, eve = await make_user(), await make_user(), await make_user()
    created = await history.post("/api/groups", json={"name": "Climbing", "memberIds": [bob.id]},
                                 headers=ada.auth_headers)
    assert created.status == 201, await created.text()
    group_id = (await created.json())["_id"]
    _, photo = await upload(media, ada, png(), "p.png")
    sent = await store(history_internal, ada, group_id=group_id, text="look", attachment_ids=[photo["_id"]])
    assert sent["message"]["groupId"] == group_id and sent["message"]["attachments"][0]["_id"] == photo["_id"]
    assert (await fetch(media, bob, photo["thumbnailUrl"])).status == 200
    assert (await media.get(photo["url"], headers=eve.auth_headers, allow_redirects=False)).status == 404


@pytest.mark.parametrize("payload, code", [
    ({"text": ""}, "invalid_messages.0.text"),
    ({"text": "", "attachmentIds": ["x" * 32]}, "invalid_messages.0.attachmentIds.0"),
    ({"text": "", "attachmentIds": ["a" * 32, "a" * 32]}, "invalid_messages.0.attachmentIds"),
    ({"text": "", "attachmentIds": [f"{n:032x}" for n in range(11)]}, "invalid_messages.0.attachmentIds"),
])
async def test_bad_attachment_ids_are_refused_naming_the_field(history_internal, make_user, payload, code):
    ada, bob = await make_user(), await make_user()
    answer = await history_internal.post(
        "/internal/messages/batch", json={"messages": [{"senderId": ada.id, "receiverId": bob.id, **payload}]},
        headers={"X-Internal-Token": GATEWAY_TOKEN})
    assert answer.status == 400 and (await answer.json())["code"] == code


@pytest.mark.parametrize("content_type, body", [
    ("application/json", b"{}"),
    (None, b""),
    ("multipart/form-data", b"x"),
    ("multipart/form-data; boundary=b", b"garbage"),
    ("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nhi\r\n--b--\r\n'),
    ("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="\x1f"\r\n\r\n\r\n--b--\r\n'),
    ("multipart/mixed; boundary=b", b"--b--\r\n"),
], ids=["json", "empty", "no-boundary", "garbage", "not-a-file", "control-character-name", "no-parts"])
async def test_a_body_without_a_file_part_is_a_400_naming_file(media, make_user, content_type, body):
    ada = await make_user()
    headers = {**ada.auth_headers, **({"Content-Type": content_type} if content_type else {})}
    answer = await media.post("/api/attachments", data=body, headers=headers)
    assert answer.status == 400 and (await answer.json())["code"] == "invalid_file"
