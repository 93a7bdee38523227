"""DATABASE_READ_URL (issue 19): history's read routes read from a real streaming replica
(`pg_basebackup -R` of a primary, both started here on 127.0.0.1), and never stale: a read that
the replica could not serve with every commit made before it began is served by the primary."""

import dataclasses

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.devtools.stores import PrivatePostgres, PrivateReplica, ensure_database, with_database
from services.history.app import create_app
from services.shared.web import INTERNAL_APP, REGISTRY
from tests.integration.conftest import history_settings, wait_schema_ready
from tests.integration.history_client import Api, RecordingNotifier
from tests.support import TEST_RUN_DIR, eventually, migrate

MAX_WAIT_SECONDS = 0.2


@pytest.fixture(scope="module")
def primary_and_replica():
    primary = PrivatePostgres(TEST_RUN_DIR / "replication" / "primary")
    primary.start()
    replica = None
    try:
        url = ensure_database(primary.admin_url, "parley")
        migrate(url)
        # After the database exists: the base backup carries it, and the replica follows from there.
        replica = PrivateReplica(primary, TEST_RUN_DIR / "replication" / "replica")
        replica.start()
        yield primary, replica, url, with_database(replica.admin_url, "parley")
    finally:
        if replica is not None:
            replica.stop("immediate")
        primary.stop("immediate")


@pytest.fixture
async def api(stores, primary_and_replica, monkeypatch):
    _, _, primary_url, replica_url = primary_and_replica
    settings = history_settings(dataclasses.replace(stores, database_url=primary_url), database_read_url=replica_url,
                                read_replica_max_wait_seconds=MAX_WAIT_SECONDS)
    app = create_app(settings)
    async with TestClient(TestServer(app)) as public, TestClient(TestServer(app[INTERNAL_APP])) as internal:
        await wait_schema_ready(app)
        api = Api(public, internal, RecordingNotifier(monkeypatch))
        api.registry = app[REGISTRY]
        yield api


def reads(api: Api, source: str) -> float:
    return api.registry.get_sample_value("parley_history_reads_total", {"source": source}) or 0.0


async def send_and_read(api: Api) -> tuple[dict, list[dict]]:
    """Ada sends Bob a message; at once, Ada reads their conversation: it must be there."""
    ada, bob = await api.user(), await api.user()
    [stored] = await api.store({"senderId": ada.id, "receiverId": bob.id, "text": "read your own writes"})
    page, _ = await api.call("GET", f"/api/messages/{bob.id}", ada)
    return stored["message"], page


async def test_reads_come_from_the_replica_with_every_commit_made_before_them(api):
    before = reads(api, "replica"), reads(api, "primary")
    message, page = await send_and_read(api)
    assert [m["_id"] for m in page] == [message["_id"]]
    assert (reads(api, "replica"), reads(api, "primary")) == (before[0] + 1, before[1])


async def test_a_replica_that_lags_never_serves_a_stale_read(api, primary_and_replica):
    _, replica, _, _ = primary_and_replica
    replica.sql("SELECT pg_wal_replay_pause()")
    try:
        before = reads(api, "primary")
        message, page = await send_and_read(api)  # the replica has not replayed the send
        assert [m["_id"] for m in page] == [message["_id"]]
        assert reads(api, "primary") == before + 1
    finally:
        replica.sql("SELECT pg_wal_replay_resume()")
    before = reads(api, "replica")
    message, page = await send_and_read(api)
    assert [m["_id"] for m in page] == [message["_id"]] and reads(api, "replica") == before + 1


async def test_a_replica_out_of_reach_leaves_reads_to_the_primary_until_it_is_back(api, primary_and_replica):
    _, replica, _, _ = primary_and_replica
    replica.stop("immediate")
    try:
        before = reads(api, "primary")
        message, page = await send_and_read(api)
        assert [m["_id"] for m in page] == [message["_id"]] and reads(api, "primary") == before + 1
    finally:
        replica.start()

    async def replica_serves_again():
        before = reads(api, "replica")
        message, page = await send_and_read(api)
        assert [m["_id"] for m in page] == [message["_id"]] and reads(api, "replica") == before + 1

    await eventually(replica_serves_again, timeout=15, interval=0.2)
