"""Connection-state recovery (issue 20) with the real socket.io-client, driven by Node.

The client is the guide's kind, as it is: socket.io-client from npm with its default options
(tests/e2e/node/recovering_client.mjs). It reaches the gateways through one address, a TCP proxy
playing the load balancer: the proxy can point at node a or b, refuse connections, and cut those
it carries. What is checked is what the client's own code reports: `socket.recovered`, and every
event its handlers received.
"""

import asyncio
import os
import signal
import time

import aiohttp
import pytest

from services.gateway.delivery_log import ResumePoint
from services.gateway.recovery import PidSigner
from tests.e2e.node_clients import NodeClient, Proxy, metric, port_of
from tests.support import (GATEWAY_TOKEN, TEST_RUN_DIR, ChatClient, TestStores, assert_no_errors_logged, create_user,
                           private_redis_server, running_cluster)

MAX_EVENTS = 5  # RECOVERY_MAX_EVENTS of this cluster: small, so the bound is cheap to pass
RESTART_WAIT_SECONDS = 40.0


@pytest.fixture(scope="module")
def recovery_cluster(stores):
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "recovery", RECOVERY_MAX_EVENTS=str(MAX_EVENTS)) as cluster:
        yield cluster
    # Forged pids, drops and a SIGKILL: still no service logged an error.
    assert_no_errors_logged(cluster)


@pytest.fixture
async def proxy():
    running = Proxy()
    url = await running.start()
    running.url = url
    yield running
    await running.close()


@pytest.fixture
async def clients():
    opened: list = []
    yield opened
    for client in opened:
        await client.close()


async def node_client(clients: list, url: str, token: str) -> NodeClient:
    client = await NodeClient(url, token).start()
    clients.append(client)
    return client


async def chat_client(clients: list, url: str, token: str) -> ChatClient:
    client = await ChatClient(url, token).connect()
    clients.append(client)
    return client


async def send(sender: ChatClient, receiver_id: str, texts: list[str]) -> list[dict]:
    """Sends each text (acknowledged, so stored) and returns the stored messages."""
    stored = []
    for text in texts:
        ack = await sender.call("sendMessage", {"receiverId": receiver_id, "text": text})
        assert ack["ok"] is True, ack
        stored.append(ack["message"])
    return stored


def received_ids(client: NodeClient) -> list[str]:
    return [args[0]["_id"] for args in client.events("receiveMessage")]


def has(offset: str, message: dict) -> bool:
    """Whether an offset (a resume point) says the client has this message."""
    point, position = ResumePoint.parse(offset), int(message["_id"])
    return position <= point.settled or position in point.above


async def test_a_dropped_client_recovers_on_another_node_exactly_what_it_missed(recovery_cluster, proxy, clients):
    alice = await create_user(recovery_cluster.history_url)
    bob = await create_user(recovery_cluster.history_url)
    bob_b = await chat_client(clients, recovery_cluster.gateway_url("b"), bob.token)
    proxy.target = port_of(recovery_cluster.gateway_url("a"))
    client = await node_client(clients, proxy.url, alice.token)
    first = await client.connected(1)
    assert first["recovered"] is False and first["pid"]

    [before] = await send(bob_b, alice.id, ["before the drop"])
    await client.wait_for(lambda r: r.get("event") == "receiveMessage", what="the first message")
    [[payload, offset]] = client.events("receiveMessage")
    assert payload == before and has(offset, before)  # the offset: a resume point that has it
    recovered_before = await metric(recovery_cluster, "b", "parley_gateway_sessions_recovered_total")

    proxy.target = None  # the load balancer has nowhere to send it for now
    proxy.cut()
    await client.wait_for(lambda r: r["type"] == "disconnect", what="the drop")
    missed = await send(bob_b, alice.id, [f"missed {n}" for n in range(4)])
    async with aiohttp.ClientSession() as session:  # one of them deleted meanwhile
        async with session.delete(f"{recovery_cluster.gateway_url('b')}/api/messages/{missed[1]['_id']}",
                                  headers=bob.auth_headers) as answer:
            assert answer.status == 200, await answer.text()
    proxy.target = port_of(recovery_cluster.gateway_url("b"))  # it comes back on the other node

    second = await client.connected(2)
    assert second["recovered"] is True and second["pid"] == first["pid"]
    [after] = await send(bob_b, alice.id, ["after the return"])
    await client.wait_for(lambda r: r.get("event") == "receiveMessage" and r["args"][0]["_id"] == after["_id"],
                          what="the live message after recovery")
    # Exactly what was missed (the deleted one as its deletion), in order, once, before anything new.
    kept = [missed[0], missed[2], missed[3]]
    assert received_ids(client) == [before["_id"], *(m["_id"] for m in kept), after["_id"]]
    assert all(has(offset, message) for message, offset in client.events("receiveMessage"))
    [deleted] = client.events("messageDeleted")
    assert deleted[0]["_id"] == missed[1]["_id"] and int(deleted[1]) > int(missed[3]["_id"])
    assert await metric(recovery_cluster, "b", "parley_gateway_sessions_recovered_total") == recovered_before + 1


async def test_a_client_that_had_received_nothing_recovers_from_a_restarted_node(recovery_cluster, proxy, clients):
    """SIGKILL node a under a client that has had no event yet; messages meanwhile go through
    node b; node a restarted, the client comes back to it and is replayed them."""
    carol = await create_user(recovery_cluster.history_url)
    dave = await create_user(recovery_cluster.history_url)
    dave_b = await chat_client(clients, recovery_cluster.gateway_url("b"), dave.token)
    node_a = recovery_cluster.stack["gateway-a"]
    proxy.target = port_of(recovery_cluster.gateway_url("a"))
    client = await node_client(clients, proxy.url, carol.token)
    first = await client.connected(1)
    assert received_ids(client) == []

    node_a.kill()
    await client.wait_for(lambda r: r["type"] == "disconnect", what="the drop")
    missed = await send(dave_b, carol.id, ["while a was down 1", "while a was down 2"])
    node_a.start()
    await asyncio.to_thread(node_a.wait_ready)

    second = await client.connected(2, timeout=RESTART_WAIT_SECONDS)
    assert second["recovered"] is True and second["pid"] == first["pid"]
    await client.wait_for(lambda _: len(received_ids(client)) >= len(missed), what="the replay")
    assert received_ids(client) == [m["_id"] for m in missed]


async def test_a_client_past_the_event_bound_gets_a_normal_connection(recovery_cluster, proxy, clients):
    erin = await create_user(recovery_cluster.history_url)
    frank = await create_user(recovery_cluster.history_url)
    frank_b = await chat_client(clients, recovery_cluster.gateway_url("b"), frank.token)
    proxy.target = port_of(recovery_cluster.gateway_url("a"))
    client = await node_client(clients, proxy.url, erin.token)
    first = await client.connected(1)

    proxy.target = None
    proxy.cut()
    await client.wait_for(lambda r: r["type"] == "disconnect", what="the drop")
    await send(frank_b, erin.id, [f"one too many {n}" for n in range(MAX_EVENTS + 1)])
    proxy.target = port_of(recovery_cluster.gateway_url("a"))

    second = await client.connected(2)
    assert second["recovered"] is False and second["pid"] != first["pid"]  # it knows to sync
    # Nothing of a partial replay: the next message is the first thing it hears.
    [live] = await send(frank_b, erin.id, ["live"])
    await client.wait_for(lambda r: r.get("event") == "receiveMessage", what="the live message")
    assert received_ids(client) == [live["_id"]]


async def test_forged_foreign_and_expired_pids_get_a_normal_connection_and_nothing_else(
        recovery_cluster, proxy, clients):
    victim = await create_user(recovery_cluster.history_url)
    mallory = await create_user(recovery_cluster.history_url)
    friend = await create_user(recovery_cluster.history_url)
    friend_b = await chat_client(clients, recovery_cluster.gateway_url("b"), friend.token)
    proxy.target = port_of(recovery_cluster.gateway_url("a"))
    victim_client = await node_client(clients, proxy.url, victim.token)
    victim_pid = (await victim_client.connected(1))["pid"]
    await send(friend_b, victim.id, ["for the victim only"])
    await victim_client.wait_for(lambda r: r.get("event") == "receiveMessage", what="the victim's message")

    attacker = await node_client(clients, proxy.url, mallory.token)
    own_pid = (await attacker.connected(1))["pid"]
    payload, signature = own_pid.split(".")
    expired = PidSigner(GATEWAY_TOKEN, 86400, clock=lambda: time.time() - 86400 - 120).issue(mallory.id, 0)
    claims = [
        victim_pid,  # another user's, genuine
        f"{victim_pid.split('.')[0]}.{signature}",  # the victim's payload under mallory's signature
        f"{payload}.{'A' * len(signature)}",  # mallory's own payload, forged signature
        expired,  # genuine, mallory's own, older than RECOVERY_WINDOW_SECONDS
    ]
    for number, claim in enumerate(claims, start=2):
        await attacker.command(f"claim {claim} 0")
        answer = await attacker.connected(number)
        assert answer["recovered"] is False and answer["pid"] != claim, claim
    assert attacker.events("receiveMessage") == [] and attacker.events("messageSent") == []
    # The genuine pid of its own, with an offset, still recovers (the checks above are not blanket refusals).
    await attacker.command(f"claim {own_pid} -")
    assert (await attacker.connected(len(claims) + 2))["recovered"] is True


async def test_an_event_overtaken_on_its_way_is_replayed_once_after_a_drop(stores, proxy, clients):
    """The race of two emitters: a message through node b is committed first, but its publish is
    held up in Redis (SIGSTOP), so a later message, delivered by node a itself, overtakes it on
    the way to the client; the client drops before the first one arrives. Its offset is then the
    later message's: recovery must still replay the earlier one, and not repeat the later."""
    with private_redis_server(TEST_RUN_DIR / "overtaken-redis") as redis, \
            running_cluster(TestStores(stores.database_url, redis.url, "overtaken"),
                            TEST_RUN_DIR / "logs" / "overtaken") as cluster:
        grace, bob, carol = [await create_user(cluster.history_url) for _ in range(3)]
        bob_b = await chat_client(clients, cluster.gateway_url("b"), bob.token)
        carol_a = await chat_client(clients, cluster.gateway_url("a"), carol.token)
        proxy.target = port_of(cluster.gateway_url("a"))
        client = await node_client(clients, proxy.url, grace.token)
        first = await client.connected(1)

        os.kill(redis.process.pid, signal.SIGSTOP)
        try:
            [overtaken] = await send(bob_b, grace.id, ["committed first, held up in Redis"])
            [overtaking] = await send(carol_a, grace.id, ["committed second, delivered by node a"])
            assert int(overtaken["_id"]) < int(overtaking["_id"])
            await client.wait_for(lambda r: r.get("event") == "receiveMessage", what="the overtaking message")
            assert received_ids(client) == [overtaking["_id"]]
            proxy.target = None
            proxy.cut()
            await client.wait_for(lambda r: r["type"] == "disconnect", what="the drop")
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)
        proxy.target = port_of(cluster.gateway_url("a"))

        second = await client.connected(2)
        assert second["recovered"] is True and second["pid"] == first["pid"]
        [after] = await send(bob_b, grace.id, ["after the return"])
        await client.wait_for(lambda r: r.get("event") == "receiveMessage" and r["args"][0]["_id"] == after["_id"],
                              what="the live message after recovery")
        assert received_ids(client) == [overtaking["_id"], overtaken["_id"], after["_id"]]
