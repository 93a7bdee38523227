"""A real cluster (history + gateway nodes a and b as processes) shared by the e2e tests."""

import pytest

from tests.support import TEST_RUN_DIR, ChatClient, Cluster, create_user, running_cluster


@pytest.fixture(scope="session")
def cluster(stores) -> Cluster:
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "e2e") as running:
        yield running
    # Whatever the tests threw at it, no service logged an error (an unhandled exception).
    for process in running.stack.processes.values():
        errors = [line for line in process.log_text().splitlines() if '"level": "error"' in line]
        assert not errors, f"{process.name} logged errors: {errors[:3]}"


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
