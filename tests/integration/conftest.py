"""The history app in-process (aiohttp test server) against the run's real Postgres and Redis."""

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.history.app import create_app
from services.history.app_keys import STORE
from services.history.settings import HistorySettings
from tests.support import INTERNAL_TOKEN, JWT, create_user


def history_settings(stores, **overrides) -> HistorySettings:
    values = dict(
        database_url=stores.database_url,
        redis_url=stores.redis_url,
        redis_prefix=stores.redis_prefix,
        internal_token=INTERNAL_TOKEN,
        jwt_secret=JWT.jwt_secret,
    )
    values.update(overrides)
    return HistorySettings(**values)


async def wait_schema_ready(app, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not app[STORE].schema_ready:
        assert asyncio.get_running_loop().time() < deadline, "migrations did not finish"
        await asyncio.sleep(0.02)


@pytest.fixture
async def history(stores):
    app = create_app(history_settings(stores))
    async with TestClient(TestServer(app)) as client:
        await wait_schema_ready(app)
        yield client


@pytest.fixture
def make_user(history):
    async def make(name: str | None = None):
        return await create_user(str(history.make_url("")).rstrip("/"), name)

    return make


@pytest.fixture
def send(history):
    """Stores a message through the internal route, as a gateway does; returns (message, created)."""

    async def send_message(sender, receiver, text: str, client_id: str | None = None):
        answer = await history.post(
            "/internal/messages",
            json={"senderId": sender.id, "receiverId": receiver.id, "text": text, "clientId": client_id},
            headers={"X-Internal-Token": INTERNAL_TOKEN},
        )
        assert answer.status == 200, await answer.text()
        body = await answer.json()
        return body["message"], body["created"]

    return send_message
