"""Fan-out that does not grow with the cluster: only the nodes holding a user decode its emits."""

from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.support import TEST_RUN_DIR, ChatClient, Cluster, create_user, running_cluster

NODES = ("a", "b", "c")


@dataclass
class WatchedCluster(Cluster):
    watchers: list[ChatClient] = field(default_factory=list)  # one per node
    opened: list[ChatClient] = field(default_factory=list)  # closed when the test ends
    probes: int = 0  # probe users announced so far: every node decoded each one's announcement


@pytest.fixture
async def three_nodes(stores):
    """A cluster of the test's own, with a watcher on every node: no other test's connects and
    closes are announced while it counts."""
    opened: list[ChatClient] = []
    # Watchers see strangers' presence here: this measures fan-out, not who may see whom.
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "fanout", nodes=NODES,
                         PRESENCE_VISIBILITY="everyone") as running:
        for node in NODES:
            user = await create_user(running.history_url)
            opened.append(await ChatClient(running.gateway_url(node), user.token).connect())
        try:
            yield WatchedCluster(running.stack, watchers=list(opened), opened=opened)
        finally:
            for client in opened:
                await client.close()


async def decoded(cluster, node: str) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.get(cluster.gateway_internal_url(node) + "/metrics") as answer:
            text = await answer.text()
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("parley_gateway_pubsub_messages_received_total "))


async def settled_counts(cluster: WatchedCluster) -> dict[str, float]:
    """Each node's count of decoded pub/sub messages once it has decoded all that the test's
    connects and emits so far caused, the probe users' own announcements left out.

    A probe user comes online on every node, watched by the watcher on every node. A node
    reports its connects to presence in order, so each probe's announcement follows those of
    the sockets connected before it on that node; and a node decodes its channels in the order
    Redis published to them. So once every watcher heard every probe, nothing earlier is pending.
    Presence's announcements are routed to the nodes watching (each node here), in batches of
    what is announced together: a probe connects only once every watcher heard the one before,
    so each reaches each node in a payload of its own.
    """
    probes = [await create_user(cluster.history_url) for _ in NODES]
    for watcher in cluster.watchers:
        assert (await watcher.call("watchPresence", [probe.id for probe in probes]))["ok"]
    for node, probe in zip(NODES, probes):
        cluster.opened.append(await ChatClient(cluster.gateway_url(node), probe.token).connect())
        for watcher in cluster.watchers:
            await watcher.wait_for("userOnline", lambda data, probe=probe: data == probe.id)
    cluster.probes += len(probes)
    return {node: await decoded(cluster, node) - cluster.probes for node in NODES}


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


async def test_an_announcement_reaches_only_the_nodes_watching(three_nodes):
    """`userOnline` of a user nobody else cares about goes to the node of its one watcher, not
    to every node (it was decoded by all, on the shared channel, until presence rooms were routed)."""
    ada, grace = await create_user(three_nodes.history_url), await create_user(three_nodes.history_url)
    watcher = await ChatClient(three_nodes.gateway_url("b"), grace.token).connect()
    three_nodes.opened.append(watcher)
    assert (await watcher.call("watchPresence", [ada.id]))["ok"]
    before = await settled_counts(three_nodes)
    three_nodes.opened.append(await ChatClient(three_nodes.gateway_url("a"), ada.token).connect())
    await watcher.wait_for("userOnline", lambda data: data == ada.id)
    after = await settled_counts(three_nodes)
    assert {node: after[node] - before[node] for node in after} == {"a": 0, "b": 1, "c": 0}
