"""A cluster with a notifier, and the push receiver the tests start (receiver.py)."""

import dataclasses
import uuid

import aiohttp
import pytest

from services.devtools.stores import drop_database, ensure_database, with_database
from tests.notifications.receiver import Browser, PushReceiver
from tests.support import (TEST_RUN_DIR, ChatClient, Cluster, User, assert_no_errors_logged, create_user, migrate,
                           running_cluster)

# Quick retries and a short collapse window, so the tests take seconds.
NOTIFIER_TIMING = {"COLLAPSE_SECONDS": "1", "PUSH_BACKOFF_SECONDS": "0.1", "PUSH_TIMEOUT_SECONDS": "2",
                   "PUSH_MAX_RETRY_AFTER_SECONDS": "2", "PUSH_RELAY_POLL_SECONDS": "0.5"}



@pytest.fixture(scope="module")
def stores(stores):
    """The run's stores with a database of these tests' own: every history relays its database's
    messages to the push subscriptions in it, so another cluster of the run on the shared one
    (the e2e cluster lives through the whole run) would push to these tests' receivers too."""
    admin_url = with_database(stores.database_url, "postgres")
    database = f"parley_notify_{uuid.uuid4().hex[:8]}"
    url = ensure_database(admin_url, database)
    migrate(url)
    yield dataclasses.replace(stores, database_url=url)
    drop_database(admin_url, database)


@pytest.fixture(scope="module")
def cluster(stores, request) -> Cluster:
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "notifications" / request.module.__name__.split(".")[-1],
                         **NOTIFIER_TIMING) as running:
        yield running
    assert_no_errors_logged(running)


@pytest.fixture
async def receiver(cluster):
    receiver = await PushReceiver(cluster.vapid_public_key).start()
    yield receiver
    await receiver.close()


@pytest.fixture
def make_user(cluster):
    async def make(name: str | None = None) -> User:
        return await create_user(cluster.history_url, name)

    return make


@pytest.fixture
async def connect(cluster):
    opened: list[ChatClient] = []

    async def open_client(user: User, node: str = "a") -> ChatClient:
        client = ChatClient(cluster.gateway_url(node), user.token)
        opened.append(client)
        return await client.connect()

    yield open_client
    for client in opened:
        await client.close()


@pytest.fixture
async def api(cluster):
    """`api(method, path, user, json=...)` through gateway a: (status, decoded body)."""
    async with aiohttp.ClientSession() as http:
        async def call(method: str, path: str, user: User | None = None, **kwargs) -> tuple[int, object]:
            headers = {**(user.auth_headers if user is not None else {}), **kwargs.pop("headers", {})}
            async with http.request(method, cluster.gateway_url("a") + path, headers=headers, **kwargs) as answer:
                body = await answer.json(content_type=None) if answer.content_length != 0 else None
                return answer.status, body

        yield call


@pytest.fixture
def subscribe(api):
    async def add(user: User, browser: Browser) -> None:
        status, body = await api("POST", "/api/push/subscriptions", user, json=browser.subscription())
        assert status == 201, body

    return add
