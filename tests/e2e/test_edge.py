"""The compose edge for real: Debian's haproxy with deploy/haproxy.cfg in front of two gateways."""

import asyncio
import os
import shutil
import signal
import subprocess

import aiohttp
import pytest

from services.devtools.stores import free_port
from tests.e2e.faults import Sender, tally
from tests.support import TEST_RUN_DIR, ChatClient, create_user, running_cluster
from tests.deploy.test_deploy_files import HAPROXY_CFG


class Edge:
    def __init__(self, cluster):
        self.port = free_port()
        env = {
            **os.environ,
            "EDGE_BIND": f"127.0.0.1:{self.port}",
            "GATEWAY_A": f"127.0.0.1:{cluster.stack['gateway-a'].port}",
            "GATEWAY_B": f"127.0.0.1:{cluster.stack['gateway-b'].port}",
            # Where haproxy asks /readyz: the gateways' internal listeners.
            "GATEWAY_A_INTERNAL_PORT": str(cluster.stack["gateway-a"].internal_port),
            "GATEWAY_B_INTERNAL_PORT": str(cluster.stack["gateway-b"].internal_port),
        }
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.process = subprocess.Popen([haproxy, "-db", "-f", str(HAPROXY_CFG)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def url(self) -> str:
        # `localhost`, not an IP: aiohttp's cookie jar ignores cookies from IP-address hosts.
        return f"http://localhost:{self.port}"

    async def wait_ready(self) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(self.url + "/healthz") as answer:
                        if answer.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("haproxy did not come up")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
async def edge(cluster):
    running = Edge(cluster)
    await running.wait_ready()
    yield running
    running.stop()


async def sockets_per_node(cluster) -> dict[str, float]:
    counts = {}
    async with aiohttp.ClientSession() as http:
        for node in ("a", "b"):
            async with http.get(cluster.gateway_internal_url(node) + "/metrics") as answer:
                text = await answer.text()
            counts[node] = next(float(line.split()[-1]) for line in text.splitlines()
                                if line.startswith("parley_gateway_sockets_connected "))
    return counts


async def test_long_polling_clients_stay_on_one_node_and_chat_across_nodes(cluster, edge, make_user):
    ada, grace = await make_user(), await make_user()
    before = await sockets_per_node(cluster)
    clients = [ChatClient(edge.url, user.token) for user in (ada, grace)]
    try:
        for client in clients:
            await client.connect(transports=("polling",))
        sender, receiver = clients
        for number in range(10):  # many polling requests, each of which must reach the same node
            ack = await sender.call("sendMessage", {"receiverId": grace.id, "text": f"polled {number}"})
            assert ack["ok"], ack
        await receiver.wait_for("receiveMessage", lambda message: message["text"] == "polled 9")
        after = await sockets_per_node(cluster)
        assert sum(after.values()) - sum(before.values()) == 2
        assert {node: after[node] - before[node] for node in after} == {"a": 1, "b": 1}, "round robin, then sticky"
    finally:
        for client in clients:
            await client.close()


@pytest.fixture
def drain_cluster(stores):
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "edge-drain", DRAIN_DELAY_SECONDS="1.5") as running:
        yield running


async def test_sigterm_through_the_edge_moves_clients_and_loses_nothing(drain_cluster, stores):
    edge = Edge(drain_cluster)
    await edge.wait_ready()
    senders, receivers, clients = [], {}, []
    try:
        for _ in range(2):
            ada = await create_user(drain_cluster.history_url)
            grace = await create_user(drain_cluster.history_url)
            sender = ChatClient(edge.url, ada.token)
            sender.sio.reconnection = True
            sender.sio.reconnection_delay = 0.2
            receiver = ChatClient(drain_cluster.gateway_url("b"), grace.token)
            for client in (sender, receiver):
                await client.connect()
                clients.append(client)
            senders.append(Sender(sender, grace))
            receivers[grace.id] = receiver
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(sender.run(stop)) for sender in senders]
        await asyncio.sleep(1)
        node_a = drain_cluster.stack["gateway-a"]
        node_a.signal(signal.SIGTERM)
        assert await asyncio.to_thread(node_a.wait, 15) == 0
        for _ in range(100):  # reconnection backs off; give it up to 10 s
            if all(sender.client.sio.connected for sender in senders):
                break
            await asyncio.sleep(0.1)
        reconnected = [sender.client.sio.connected for sender in senders]
        await asyncio.sleep(1)  # and keep sending through the other node for a while
        stop.set()
        await asyncio.gather(*tasks)
        result = await tally("gateway SIGTERM behind haproxy", stores.database_url,
                             drain_cluster.gateway_url("b"), senders, receivers)
    finally:
        for client in clients:
            await client.close()
        edge.stop()
    assert all(len(sender.acked) > 20 for sender in senders)
    assert reconnected == [True, True], "clients of the drained node reconnected through the edge"
    assert result.acknowledged == result.stored == result.received and result.lost == 0, result
