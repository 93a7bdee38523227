"""Fan-out that does not grow with the cluster: only the nodes holding a user decode its emits."""

import asyncio

import aiohttp
import pytest

from tests.support import TEST_RUN_DIR, ChatClient, create_user, start_cluster


@pytest.fixture(scope="module")
def three_nodes(stores):
    running = start_cluster(stores, TEST_RUN_DIR / "logs" / "fanout", nodes=("a", "b", "c"))
    yield running
    running.stack.stop()


async def decoded(cluster, node: str) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.get(cluster.gateway_url(node) + "/metrics") as answer:
            text = await answer.text()
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("parley_gateway_pubsub_messages_received_total "))


async def settled_counts(cluster) -> dict[str, float]:
    """Counters once nothing more arrives (presence broadcasts of the connects are over)."""
    previous = None
    for _ in range(50):
        counts = {node: await decoded(cluster, node) for node in ("a", "b", "c")}
        if counts == previous:
            return counts
        previous = counts
        await asyncio.sleep(0.3)
    raise AssertionError("pub/sub never went quiet")


async def test_only_the_receivers_node_decodes_a_message(three_nodes):
    ada, grace = await create_user(three_nodes.history_url), await create_user(three_nodes.history_url)
    sender = ChatClient(three_nodes.gateway_url("a"), ada.token)
    receiver = ChatClient(three_nodes.gateway_url("b"), grace.token)
    await sender.connect()
    await receiver.connect()
    try:
        before = await settled_counts(three_nodes)
        for number in range(20):
            assert (await sender.call("sendMessage", {"receiverId": grace.id, "text": f"routed {number}"}))["ok"]
        await receiver.wait_for("receiveMessage", lambda message: message["text"] == "routed 19")
        after = await settled_counts(three_nodes)
    finally:
        await sender.close()
        await receiver.close()
    delta = {node: after[node] - before[node] for node in after}
    # receiveMessage goes to node b only; messageSent stays on node a (the sender's own node).
    assert delta == {"a": 0, "b": 20, "c": 0}, delta


async def test_a_user_on_two_nodes_hears_on_both_and_the_third_stays_quiet(three_nodes):
    ada, grace = await create_user(three_nodes.history_url), await create_user(three_nodes.history_url)
    sender = ChatClient(three_nodes.gateway_url("a"), ada.token)
    tabs = [ChatClient(three_nodes.gateway_url(node), grace.token) for node in ("a", "b")]
    for client in (sender, *tabs):
        await client.connect()
    try:
        before = await settled_counts(three_nodes)
        assert (await sender.call("sendMessage", {"receiverId": grace.id, "text": "both tabs"}))["ok"]
        for tab in tabs:
            assert (await tab.wait_for("receiveMessage"))["text"] == "both tabs"
        after = await settled_counts(three_nodes)
    finally:
        for client in (sender, *tabs):
            await client.close()
    assert {node: after[node] - before[node] for node in after} == {"a": 0, "b": 1, "c": 0}
