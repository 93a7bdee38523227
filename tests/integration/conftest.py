"""The history app in-process (aiohttp test server) against the run's real Postgres and Redis."""

import asyncio
import uuid
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.devtools.stores import drop_database, ensure_database, with_database
from services.history.app import create_app
from services.history.app_keys import STORE
from services.history.settings import HistorySettings
from services.shared.web import INTERNAL_APP
from tests.integration.history_client import Api, RecordingNotifier
from tests.support import ADMIN_TOKEN, GATEWAY_TOKEN, JWT, PRESENCE_TOKEN, create_user, migrate


def history_settings(stores, **overrides) -> HistorySettings:
    values = dict(
        database_url=stores.database_url,
        redis_url=stores.redis_url,
        redis_prefix=stores.redis_prefix,
        gateway_internal_token=GATEWAY_TOKEN,
        presence_internal_token=PRESENCE_TOKEN,
        admin_internal_token=ADMIN_TOKEN,
        jwt_secret=JWT.jwt_secret,
    )
    values.update(overrides)
    return HistorySettings(**values)


async def wait_schema_ready(app, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not app[STORE].schema_ready:
        assert asyncio.get_running_loop().time() < deadline, "migrations did not finish"
        await asyncio.sleep(0.02)


@dataclass(frozen=True)
class OwnDatabase:
    admin_url: str  # the server's `postgres` database, for what is done to this one from outside
    name: str
    url: str


@pytest.fixture
def own_database(stores):
    """An empty database of this test's own, dropped after it: for a test that migrates, fills,
    prunes or reconfigures a database, which the other tests' shared one must not see."""
    admin_url = with_database(stores.database_url, "postgres")
    name = f"{stores.redis_prefix.replace('-', '_')}_own_{uuid.uuid4().hex[:8]}"
    database = OwnDatabase(admin_url, name, ensure_database(admin_url, name))
    try:
        yield database
    finally:
        drop_database(admin_url, name)


@pytest.fixture
def migrated_database(own_database) -> str:
    """`own_database` with history's schema: for a test whose data or whose work the shared
    database's other users must not meet (pruning would take other tests' events; the e2e
    cluster's notification relay relays every message of its database, and its notifier
    removed a relay test's subscriptions, whose keys are fakes, while that test ran)."""
    migrate(own_database.url)
    return own_database.url


@pytest.fixture
async def history_app(stores):
    app = create_app(history_settings(stores))
    async with TestClient(TestServer(app)) as public, TestClient(TestServer(app[INTERNAL_APP])) as internal:
        await wait_schema_ready(app)
        yield public, internal


@pytest.fixture
def history(history_app):
    """A client of history's public listener (the REST API)."""
    return history_app[0]


@pytest.fixture
def history_internal(history_app):
    """A client of history's internal listener (`/internal/*`, probes, metrics)."""
    return history_app[1]


@pytest.fixture
def make_user(history_internal):
    async def make(name: str | None = None):
        return await create_user(str(history_internal.make_url("")).rstrip("/"), name)

    return make


@pytest.fixture
def send(history_internal):
    """Stores a message through the internal route, as a gateway does; returns (message, created)."""

    async def send_message(sender, receiver, text: str, client_id: str | None = None):
        answer = await history_internal.post(
            "/internal/messages",
            json={"senderId": sender.id, "receiverId": receiver.id, "text": text, "clientId": client_id},
            headers={"X-Internal-Token": GATEWAY_TOKEN},
        )
        assert answer.status == 200, await answer.text()
        body = await answer.json()
        return body["message"], body["created"]

    return send_message


@pytest.fixture
async def app_clients(stores, monkeypatch):
    """History in-process (a member limit of 6, so limits are cheap to reach), with its events recorded."""
    recorder = RecordingNotifier(monkeypatch)
    app = create_app(history_settings(stores, max_group_members=6))
    async with TestClient(TestServer(app)) as public, TestClient(TestServer(app[INTERNAL_APP])) as internal:
        await wait_schema_ready(app)
        yield public, internal, recorder


@pytest.fixture
def api(app_clients) -> Api:
    return Api(*app_clients)
