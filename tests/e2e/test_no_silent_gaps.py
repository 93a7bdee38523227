"""No silent gaps (issue 20): under load, through each fault, every acknowledged message reaches
every receiver's device, with the guide's client as it is and no call to `sync`.

The receivers are socket.io-client driven by Node with its default options (reconnection on,
connection-state recovery as the library speaks it: tests/e2e/node/recovering_client.mjs), each
behind a TCP proxy in front of its node, as behind a load balancer. The senders are Python clients
on the other node (on node b when node a is killed). What counts is what the receivers' own
handlers got: live, replayed by recovery, or caught up after a pub/sub outage; never by `sync`.
"""

import asyncio
from collections import Counter

import pytest

from tests.e2e.faults import RECORDED, Sender, Tally, stored_ids
from tests.e2e.node_clients import NodeClient, Proxy, metric, port_of
from tests.support import ChatClient, create_user

PAIRS = 4  # senders and receivers: receivers alternate between nodes a and b
SECONDS_BEFORE, SECONDS_AFTER = 1.0, 2.0  # of traffic around the fault: 4 x 20 msg/s, a few hundred in all
OUTAGE_SECONDS = 1.5
CATCH_UP_SECONDS = 5.0  # the bound: caught up within 5 s of Redis being back
# A killed node's clients reconnect with socket.io-client's backoff (up to 5 s, with jitter).
DELIVERY_SECONDS = 40.0


class Gaps:
    """Senders, the Node receivers (through one proxy per node) and what each got."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.proxies: dict[str, Proxy] = {}
        self.senders: list[Sender] = []
        self.receivers: dict[str, NodeClient] = {}  # user id -> the receiver's client
        self.opened: list = []

    async def open(self, sender_node: str | None = None) -> "Gaps":
        for node in "ab":
            proxy = self.proxies[node] = Proxy()
            proxy.url = await proxy.start()
            proxy.target = port_of(self.cluster.gateway_url(node))
        for number in range(PAIRS):
            node = "ab"[number % 2]
            sender, receiver = await create_user(self.cluster.history_url), await create_user(self.cluster.history_url)
            client = await NodeClient(self.proxies[node].url, receiver.token).start()
            self.opened.append(client)
            await client.connected(1)
            self.receivers[receiver.id] = client
            chat = await ChatClient(self.cluster.gateway_url(sender_node or ("b" if node == "a" else "a")),
                                    sender.token).connect()
            self.opened.append(chat)
            self.senders.append(Sender(chat, receiver))
        return self

    async def run(self, fault) -> None:
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(sender.run(stop)) for sender in self.senders]
        await asyncio.sleep(SECONDS_BEFORE)
        await fault()
        await asyncio.sleep(SECONDS_AFTER)
        stop.set()
        await asyncio.gather(*tasks)

    def missing(self) -> int:
        return sum(len(set(s.acked) - self.delivered(s.receiver.id)) for s in self.senders)

    def delivered(self, user_id: str) -> set[str]:
        return {args[0]["_id"] for args in self.receivers[user_id].events("receiveMessage")}

    async def all_delivered(self, timeout: float) -> float:
        """Waits until every acknowledged message reached its receiver; the loop time then."""
        for sender in self.senders:
            client = self.receivers[sender.receiver.id]
            await client.wait_for(lambda _: set(sender.acked) <= self.delivered(sender.receiver.id), timeout,
                                  f"every acknowledged message ({self.missing()} missing)")
        return asyncio.get_running_loop().time()

    async def tally(self, fault: str) -> tuple[Tally, int]:
        """The fault's row (received = delivered without sync), and the duplicates seen."""
        acked = [message_id for sender in self.senders for message_id in sender.acked]
        stored = await stored_ids(self.cluster.database_url, acked)
        delivered = sum(len(set(s.acked) & self.delivered(s.receiver.id)) for s in self.senders)
        duplicates = 0
        for client in self.receivers.values():
            counts = Counter(args[0]["_id"] for args in client.events("receiveMessage"))
            duplicates += sum(count - 1 for count in counts.values())
        result = Tally(len(acked), len(stored & set(acked)), delivered, len(acked) - min(len(stored), delivered),
                       without_sync=delivered)
        RECORDED.append((fault, result))
        return result, duplicates

    async def close(self) -> None:
        for client in self.opened:
            await client.close()
        for proxy in self.proxies.values():
            await proxy.close()


@pytest.fixture
async def gaps(fault_cluster):
    opened = Gaps(fault_cluster)
    yield opened
    await opened.close()


def assert_no_gap(result: Tally, duplicates: int, senders: list[Sender]) -> None:
    assert all(sender.acked for sender in senders)
    assert result.acknowledged >= 100, result  # under load: a few hundred messages
    assert result.acknowledged == result.stored == result.without_sync and result.lost == 0, result
    assert duplicates == 0


async def test_redis_restart_every_acknowledged_message_reaches_connected_clients_without_sync(
        gaps, private_redis):
    await gaps.open()
    back_at: list[float] = []

    async def restart_redis():
        port = private_redis.port
        await asyncio.to_thread(private_redis.kill)
        await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself
        private_redis.port = port
        await asyncio.to_thread(private_redis.start)
        back_at.append(asyncio.get_running_loop().time())

    await gaps.run(restart_redis)
    # The clients never dropped: what they missed came by catch-up, not by recovery.
    assert all(len(client.connects()) == 1 for client in gaps.receivers.values())
    done_at = await gaps.all_delivered(timeout=back_at[0] + CATCH_UP_SECONDS - asyncio.get_running_loop().time())
    assert done_at - back_at[0] <= CATCH_UP_SECONDS
    assert_no_gap(*await gaps.tally("Redis restarted (guide's client)"), gaps.senders)
    for node in "ab":  # each node caught its sockets up, and said so
        assert await metric(gaps.cluster, node, "parley_gateway_catch_ups_total") >= 1
    assert sum([await metric(gaps.cluster, node, "parley_gateway_events_caught_up_total") for node in "ab"]) > 0


async def test_gateway_sigkill_and_restart_every_acknowledged_message_reaches_its_clients_without_sync(
        gaps, fault_cluster):
    await gaps.open(sender_node="b")
    node_a = fault_cluster.stack["gateway-a"]

    async def kill_and_restart_node_a():
        node_a.kill()
        await asyncio.sleep(OUTAGE_SECONDS)
        node_a.start()
        await asyncio.to_thread(node_a.wait_ready)

    await gaps.run(kill_and_restart_node_a)
    await gaps.all_delivered(DELIVERY_SECONDS)
    assert_no_gap(*await gaps.tally("gateway SIGKILL (guide's client)"), gaps.senders)


async def test_history_restart_every_acknowledged_message_reaches_its_clients_without_sync(
        gaps, fault_cluster):
    await gaps.open()
    history = fault_cluster.stack["history"]

    async def kill_and_restart_history():
        history.kill()
        await asyncio.sleep(OUTAGE_SECONDS)
        history.start()
        await asyncio.to_thread(history.wait_ready)

    await gaps.run(kill_and_restart_history)
    await gaps.all_delivered(DELIVERY_SECONDS)
    assert_no_gap(*await gaps.tally("history restarted (guide's client)"), gaps.senders)


async def test_network_cut_in_front_of_a_node_every_acknowledged_message_reaches_its_clients_without_sync(gaps):
    await gaps.open()
    proxy = gaps.proxies["a"]

    async def cut_node_a():
        target, proxy.target = proxy.target, None  # connections refused, and the open ones dropped
        proxy.cut()
        await asyncio.sleep(OUTAGE_SECONDS)
        proxy.target = target

    await gaps.run(cut_node_a)
    await gaps.all_delivered(DELIVERY_SECONDS)
    cut_off = [client for client in gaps.receivers.values() if client.url == proxy.url]
    assert cut_off and all(len(client.connects()) >= 2 and client.connects()[-1]["recovered"] for client in cut_off)
    assert_no_gap(*await gaps.tally("network cut (guide's client)"), gaps.senders)
