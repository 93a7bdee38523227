"""A real cluster (history + gateway nodes a and b as processes) shared by the e2e tests, and the
fault tests' clusters on private Postgres and Redis servers they may stop."""

import pytest

from services.devtools.stores import PrivatePostgres, drop_database, ensure_database
from tests.support import (TEST_RUN_DIR, ChatClient, Cluster, TestStores, assert_no_errors_logged, create_user, migrate,
                           private_redis_server, running_cluster)


@pytest.fixture(scope="session")
def cluster(stores) -> Cluster:
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "e2e") as running:
        yield running
    # Whatever the tests threw at it, no service logged an error (an unhandled exception).
    assert_no_errors_logged(running)


@pytest.fixture
def make_user(cluster):
    async def make(name: str | None = None):
        return await create_user(cluster.history_url, name)

    return make


@pytest.fixture
async def connect(cluster):
    """Connects a recording client for `user` to gateway node `node`; all are closed afterwards."""
    opened: list[ChatClient] = []

    async def open_client(user, node: str = "a", token: str | None = None, **kwargs) -> ChatClient:
        client = ChatClient(cluster.gateway_url(node), token if token is not None else user.token)
        opened.append(client)
        return await client.connect(**kwargs)

    yield open_client
    for client in opened:
        await client.close()


FAULT_DIR = TEST_RUN_DIR / "faults"


@pytest.fixture(scope="module")
def private_postgres():
    server = PrivatePostgres(FAULT_DIR / "postgres")
    server.start()
    # A fresh database every run: the server's data directory outlives the run.
    drop_database(server.admin_url, "parley")
    url = ensure_database(server.admin_url, "parley")
    migrate(url)
    yield server, url
    server.stop("immediate")


@pytest.fixture
def private_redis():
    with private_redis_server(FAULT_DIR / "redis") as server:
        yield server


@pytest.fixture
def fault_cluster(private_postgres, private_redis, request):
    server, url = private_postgres
    stores = TestStores(database_url=url, redis_url=private_redis.url, redis_prefix="faults")
    with running_cluster(stores, FAULT_DIR / "logs" / request.node.name) as cluster:
        cluster.database_url = url
        yield cluster
