"""Fan-out that does not grow with the cluster: only the nodes holding a user decode its emits."""

import asyncio

import aiohttp
import pytest

from tests.support import TEST_RUN_DIR, ChatClient, create_user, running_cluster


@pytest.fixture(scope="module")
def three_nodes(stores):
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "fanout", nodes=("a", "b", "c")) as running:
        yield running


@pytest.fixture
async def listening(three_nodes):
    """A bystander on every node: python-socketio subscribes a node only once it has a client."""
    bystanders = []
    for node in ("a", "b", "c"):
        user = await create_user(three_nodes.history_url)
        client = ChatClient(three_nodes.gateway_url(node), user.token)
        await client.connect()
        bystanders.append(client)
    await after_broadcasts(three_nodes, {node: 0 for node in "abc"}, expected=0)
    yield three_nodes
    for client in bystanders:
        await client.close()


async def decoded(cluster, node: str) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.get(cluster.gateway_internal_url(node) + "/metrics") as answer:
            text = await answer.text()
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("parley_gateway_pubsub_messages_received_total "))


async def counts(cluster) -> dict[str, float]:
    return {node: await decoded(cluster, node) for node in ("a", "b", "c")}


async def after_broadcasts(cluster, baseline: dict[str, float], expected: int) -> dict[str, float]:
    """Counters once every node has decoded the `expected` broadcasts since `baseline` (the
    userOnline of each new user, to watchers on any node), then stayed quiet."""
    for _ in range(100):
        now = await counts(cluster)
        if all(now[node] - baseline.get(node, 0) >= expected for node in now):
            await asyncio.sleep(0.3)
            if await counts(cluster) == now:
                return now
        await asyncio.sleep(0.1)
    raise AssertionError(f"the connects' broadcasts never arrived: {baseline} -> {now}")


async def test_only_the_receivers_node_decodes_a_message(listening):
    three_nodes = listening
    ada, grace = await create_user(three_nodes.history_url), await create_user(three_nodes.history_url)
    sender = ChatClient(three_nodes.gateway_url("a"), ada.token)
    receiver = ChatClient(three_nodes.gateway_url("b"), grace.token)
    baseline = await counts(three_nodes)
    await sender.connect()
    await receiver.connect()
    try:
        before = await after_broadcasts(three_nodes, baseline, expected=2)
        for number in range(20):
            assert (await sender.call("sendMessage", {"receiverId": grace.id, "text": f"routed {number}"}))["ok"]
        await receiver.wait_for("receiveMessage", lambda message: message["text"] == "routed 19")
        after = await after_broadcasts(three_nodes, before, expected=0)
    finally:
        await sender.close()
        await receiver.close()
    delta = {node: after[node] - before[node] for node in after}
    # receiveMessage goes to node b only; messageSent stays on node a (the sender's own node).
    assert delta == {"a": 0, "b": 20, "c": 0}, delta


async def test_a_user_on_two_nodes_hears_on_both_and_the_third_stays_quiet(listening):
    three_nodes = listening
    ada, grace = await create_user(three_nodes.history_url), await create_user(three_nodes.history_url)
    sender = ChatClient(three_nodes.gateway_url("a"), ada.token)
    tabs = [ChatClient(three_nodes.gateway_url(node), grace.token) for node in ("a", "b")]
    baseline = await counts(three_nodes)
    for client in (sender, *tabs):
        await client.connect()
    try:
        before = await after_broadcasts(three_nodes, baseline, expected=2)
        assert (await sender.call("sendMessage", {"receiverId": grace.id, "text": "both tabs"}))["ok"]
        for tab in tabs:
            assert (await tab.wait_for("receiveMessage"))["text"] == "both tabs"
        after = await after_broadcasts(three_nodes, before, expected=0)
    finally:
        for client in (sender, *tabs):
            await client.close()
    assert {node: after[node] - before[node] for node in after} == {"a": 0, "b": 1, "c": 0}
