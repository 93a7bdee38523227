"""Parley on a real Redis Cluster (three masters, a replica each, `redis+cluster://`): the
message path, presence, and failovers while messages flow, with nothing acknowledged lost and
live delivery back without restarting any Parley service.

One cluster and one stack (history, presence, gateway nodes a and b) for the module; the
fault tests come last and leave the cluster healthy again (roles swapped, a killed master
back as a replica).
"""

import asyncio
import uuid

import pytest
import redis.asyncio
import redis.cluster

from services.devtools.stores import PrivateRedisCluster
from services.gateway.call_store import CallStore
from services.presence.store import PresenceStore
from services.shared.keys import cluster_prefix, node_alive_key, node_channel, user_nodes_key
from services.shared.redis_client import connect, key_prefix
from services.shared.routed_manager import RoutedRedisManager
from tests.e2e.faults import open_pairs, run_traffic, tally
from tests.e2e.test_calls import ANSWER, CANDIDATE, OFFER, of
from tests.e2e.test_faults import befriend, online, post
from tests.notifications.conftest import NOTIFIER_TIMING
from tests.notifications.receiver import PushReceiver
from tests.notifications.test_push import relayed
from tests.support import TEST_RUN_DIR, ChatClient, TestStores, create_user, eventually, running_cluster

CLUSTER_DIR = TEST_RUN_DIR / "redis-cluster"


@pytest.fixture(scope="module")
def redis_cluster():
    server = PrivateRedisCluster(CLUSTER_DIR / "nodes")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def on_cluster(private_postgres, redis_cluster):
    _, database_url = private_postgres
    stores = TestStores(database_url=database_url, redis_url=redis_cluster.url, redis_prefix="on-cluster")
    with running_cluster(stores, CLUSTER_DIR / "logs", nodes=("a", "b"), **NOTIFIER_TIMING,
                         ready_timeout=90) as cluster:  # seven processes starting at once, on a busy machine
        cluster.database_url = database_url
        yield cluster


async def test_one_to_one_and_group_messages_cross_nodes(on_cluster):
    ada, grace, linus = [await create_user(on_cluster.history_url) for _ in range(3)]
    clients = [ChatClient(on_cluster.gateway_url(node), user.token) for node, user in zip("aba", (ada, grace, linus))]
    for client in clients:
        await client.connect()
    sender, grace_client, linus_client = clients
    try:
        ack = await sender.call("sendMessage", {"receiverId": grace.id, "text": "over the shards"})
        assert ack["ok"], ack
        received = await grace_client.wait_for("receiveMessage", lambda m: m["_id"] == ack["message"]["_id"])
        assert received["text"] == "over the shards"

        status, group = await post(f"{on_cluster.gateway_url('a')}/api/groups",
                                   {"name": "Cluster", "memberIds": [grace.id, linus.id]}, ada.auth_headers)
        assert status == 201, group
        ack = await sender.call("sendMessage", {"groupId": group["_id"], "text": "to the group"})
        assert ack["ok"], ack
        for member in (grace_client, linus_client):
            await member.wait_for("receiveMessage", lambda m: m["_id"] == ack["message"]["_id"])
    finally:
        for client in clients:
            await client.close()


async def test_node_channels_are_sharded_over_the_masters(on_cluster, redis_cluster):
    """Each gateway listens with SSUBSCRIBE on the master owning its channel's slot (which the
    node id decides: the nodes' channels spread over the shards), and nowhere else."""
    prefix = cluster_prefix(on_cluster.stack.env["REDIS_PREFIX"])
    with redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0]) as client:
        for node in "ab":
            channel = node_channel(prefix, f"gateway-{node}")
            owner = client.get_node_from_key(channel).port
            subscribed_on = []
            for port in redis_cluster.masters():
                with redis_cluster.node(port) as master:
                    if master.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1] == 1:
                        subscribed_on.append(port)
            assert subscribed_on == [owner], (channel, subscribed_on, owner)


async def test_presence_online_and_offline_across_nodes(on_cluster):
    ada, grace = await create_user(on_cluster.history_url), await create_user(on_cluster.history_url)
    await befriend(on_cluster, ada, grace)
    watcher = ChatClient(on_cluster.gateway_url("b"), grace.token)
    await watcher.connect()
    ada_client = ChatClient(on_cluster.gateway_url("a"), ada.token)
    try:
        async def only_grace_online():  # befriend's socket of ada has gone (else no transition below)
            assert await online(on_cluster, [ada.id, grace.id], grace) == {grace.id}

        await eventually(only_grace_online, timeout=5)
        await ada_client.connect()
        await watcher.wait_for("userOnline", lambda user: user == ada.id)

        async def both_online():
            assert await online(on_cluster, [ada.id, grace.id], grace) == {ada.id, grace.id}

        await eventually(both_online, timeout=5)
        heard_before = len(watcher.events)
        await ada_client.close()

        async def announced_offline():
            assert ("userOffline", ada.id) in watcher.events[heard_before:]

        await eventually(announced_offline, timeout=5)
        assert await online(on_cluster, [ada.id, grace.id], grace) == {grace.id}
    finally:
        await ada_client.close()
        await watcher.close()


async def test_push_job_stream_and_visibility_on_the_cluster(on_cluster):
    """History's relay appends to the job stream, the notifier takes the job and pushes; a tab on
    the other node that says it is visible (visibility keys on the cluster) stops the push."""
    receiver = await PushReceiver(on_cluster.vapid_public_key).start()
    ada, grace = await create_user(on_cluster.history_url), await create_user(on_cluster.history_url)
    browser = receiver.new_browser()
    status, body = await post(f"{on_cluster.gateway_url('a')}/api/push/subscriptions", browser.subscription(),
                              grace.auth_headers)
    assert status == 201, body
    sender = await ChatClient(on_cluster.gateway_url("a"), ada.token).connect()
    tab = await ChatClient(on_cluster.gateway_url("b"), grace.token).connect()
    try:
        assert (await tab.call("visibility", {"visible": True}))["ok"]
        while_looking = (await sender.call("sendMessage", {"receiverId": grace.id, "text": "seen"}))["message"]["_id"]
        await relayed(on_cluster, while_looking)
        assert (await tab.call("visibility", {"visible": False}))["ok"]
        while_hidden = (await sender.call("sendMessage", {"receiverId": grace.id, "text": "pushed"}))["message"]["_id"]
        # The relay takes messages in id order: the second's push proves it passed the first.
        await receiver.wait_for(lambda: while_hidden in receiver.message_ids_to(browser))
        assert while_looking not in receiver.message_ids_to(browser)
    finally:
        await sender.close()
        await tab.close()
        await receiver.close()


async def test_a_call_across_nodes_on_the_cluster(on_cluster):
    """Placed on node a, answered on node b: what goes to one party's socket (the answer, ICE
    candidates) is published on that node's sharded channel alone (`emit_to_socket`)."""
    ada, grace = await create_user(on_cluster.history_url), await create_user(on_cluster.history_url)
    ada_a = await ChatClient(on_cluster.gateway_url("a"), ada.token).connect()
    grace_b = await ChatClient(on_cluster.gateway_url("b"), grace.token).connect()
    try:
        ack = await ada_a.call("callUser", {"to": grace.id, "kind": "audio", "sdp": OFFER})
        assert ack["ok"], ack
        call_id = ack["callId"]
        await grace_b.wait_for("incomingCall", of(call_id))
        assert (await grace_b.call("answerCall", {"callId": call_id, "sdp": ANSWER}))["ok"]
        assert (await ada_a.wait_for("callAnswered", of(call_id)))["sdp"] == ANSWER
        assert (await grace_b.call("iceCandidate", {"callId": call_id, "candidate": CANDIDATE}))["ok"]
        assert (await ada_a.wait_for("iceCandidate", of(call_id)))["candidate"] == CANDIDATE
        assert (await ada_a.call("endCall", {"callId": call_id}))["ok"]
        for device in (ada_a, grace_b):
            assert await device.wait_for("callEnded", of(call_id)) == {"callId": call_id, "reason": "ended"}
    finally:
        await ada_a.close()
        await grace_b.close()


async def test_routing_on_the_cluster_learns_nodes_and_drops_dead_ones(redis_cluster):
    """`_ROUTE_SHARDED` with every key declared: a node met for the first time is published to
    and known from then on; a known node whose liveness key is gone is dropped from the route
    set, and nothing more is published to it."""
    manager = RoutedRedisManager(redis_cluster.url, f"routing-{uuid.uuid4().hex[:6]}", write_only=True)
    prefix = manager._prefix
    client = connect(redis_cluster.url)
    await client.set(node_alive_key(prefix, "live"), 1, ex=60)
    await client.sadd(user_nodes_key(prefix, "ada"), "live", "dead")
    owner = client.get_node_from_key(node_channel(prefix, "live"))
    listener = redis.asyncio.Redis(host=owner.host, port=owner.port)
    pubsub = listener.pubsub()
    await pubsub.ssubscribe(node_channel(prefix, "live"))
    try:
        await manager._route_sharded([([user_nodes_key(prefix, "ada")], b'{"n":1}')])
        assert manager._known_nodes == {"live", "dead"}
        assert await client.smembers(user_nodes_key(prefix, "ada")) == {b"live", b"dead"}  # not known dead yet
        await manager._route_sharded([([user_nodes_key(prefix, "ada")], b'{"n":2}')])
        assert manager._known_nodes == {"live"}
        assert await client.smembers(user_nodes_key(prefix, "ada")) == {b"live"}
        heard = []

        async def both_heard():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                heard.append(message["data"])
            assert heard == [b'[{"n":1}]', b'[{"n":2}]']

        await eventually(both_heard, timeout=5)
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await client.aclose()
        await manager._redis.aclose()


async def test_call_scripts_on_the_cluster(redis_cluster):
    """Every call script (they read calls, busy markers, route sets and liveness keys) runs on
    the cluster: Redis refuses a script whose keys are not in one slot of that master."""
    prefix = f"calls-{uuid.uuid4().hex[:6]}"
    client = connect(redis_cluster.url)
    tagged = key_prefix(redis_cluster.url, prefix)
    await client.set(node_alive_key(tagged, "node-1"), 1, ex=60)
    await client.sadd(user_nodes_key(tagged, "bob"), "node-1")
    store = CallStore(redis_cluster.url, prefix, ring_seconds=0.2, lost_after_seconds=60)
    try:
        answered = uuid.uuid4().hex
        assert (await store.start(answered, "al", "bob", "audio", "sid-1", "node-1"))[0] == "ringing"
        assert (await store.answer(answered, "bob", "sid-2", "node-1"))[0] == "active"
        assert await store.renew([f"{answered}|caller", f"{answered}|callee"]) == []
        await store.away(f"{answered}|caller", "sid-1")
        assert (await store.rebind("al", "sid-3", "node-1", stale_ms=0))[:2] == (answered, "caller")
        outcome, ended = await store.end(answered, "al", reject=False)
        assert (outcome, ended.reason) == ("ended", "ended")
        missed = uuid.uuid4().hex
        assert (await store.start(missed, "al", "bob", "video", "sid-1", "node-1"))[0] == "ringing"

        async def rang_out():
            assert [call.id for call in await store.sweep()] == [missed]

        await eventually(rang_out, timeout=5)
    finally:
        await store.close()
        await client.aclose()


async def test_presence_scripts_on_the_cluster(redis_cluster):
    prefix = key_prefix(redis_cluster.url, f"presence-{uuid.uuid4().hex[:6]}")
    client = connect(redis_cluster.url, decode_responses=True)
    store = PresenceStore(client, prefix)
    try:
        await client.set(node_alive_key(prefix, "a"), 1, px=300)
        assert await store.apply_events("a", [("s1", "ada"), ("s2", "bob")], []) == (["ada", "bob"], [], True)
        assert await store.apply_events("a", [], [("s2", "bob")]) == ([], ["bob"], True)
        assert await store.online_among(["ada", "bob"]) == ["ada"]

        async def swept():  # node a's liveness key lapses: its sockets are forgotten
            assert await store.sweep_dead_nodes() == ["ada"]

        await eventually(swept, timeout=5)
        assert not await store.knows("a")
    finally:
        await client.aclose()


async def _fault_while_sending(on_cluster, fault, name: str):
    senders, receivers, clients = await open_pairs(on_cluster)
    try:
        await run_traffic(senders, fault, seconds_after=2.0)
        probe_sender, probe_receiver = senders[0].client, receivers[senders[0].receiver.id]

        async def live_again():
            ack = await probe_sender.call("sendMessage", {"receiverId": senders[0].receiver.id, "text": "live?"})
            assert ack["ok"], ack
            senders[0].acked.append(ack["message"]["_id"])
            await probe_receiver.wait_for("receiveMessage", lambda m: m["_id"] == ack["message"]["_id"], timeout=1)

        await eventually(live_again, timeout=30)
        result = await tally(name, on_cluster.database_url, on_cluster.gateway_url("b"), senders, receivers)
    finally:
        for client in clients:
            await client.close()
    assert all(sender.acked for sender in senders)
    assert result.acknowledged == result.stored == result.received and result.lost == 0, result
    for process in on_cluster.stack.processes.values():
        assert process.alive(), process.name


def _master_of_node_b(on_cluster, redis_cluster) -> int:
    """The master whose shard carries gateway b's channel (where the receivers are)."""
    channel = node_channel(cluster_prefix(on_cluster.stack.env["REDIS_PREFIX"]), "gateway-b")
    for port in redis_cluster.masters():
        with redis_cluster.node(port) as client:
            if client.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1] == 1:
                return port
    raise AssertionError("no master holds gateway b's subscription")


async def test_manual_failover_while_messages_flow(on_cluster, redis_cluster):
    """CLUSTER FAILOVER on the replica of the master carrying node b's channel."""
    master = _master_of_node_b(on_cluster, redis_cluster)
    replica = redis_cluster.replica_of(master)

    async def failover():
        with redis_cluster.node(replica) as client:
            client.execute_command("CLUSTER", "FAILOVER")

        async def promoted():
            assert redis_cluster.roles()[replica] == "master"

        await eventually(promoted, timeout=10)

    await _fault_while_sending(on_cluster, failover, "Redis Cluster: CLUSTER FAILOVER")
    await asyncio.to_thread(redis_cluster.wait_healthy, 15)


def _master_of_the_registry(on_cluster, redis_cluster) -> int:
    """The master of the slot every script's keys share (routes, liveness, presence, calls)."""
    key = user_nodes_key(cluster_prefix(on_cluster.stack.env["REDIS_PREFIX"]), "anyone")
    with redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster.masters()[0]) as client:
        return client.get_node_from_key(key).port


@pytest.mark.parametrize("holding", ["the registry", "node b's channel"])
async def test_master_killed_while_messages_flow(on_cluster, redis_cluster, holding):
    """SIGKILL for a master; its replica takes over (node timeout 1 s). The registry's: routing
    scripts and presence wait for the new master (redis-py retries). Node b's channel's: node b
    subscribes again on the new master and catches up what was published meanwhile."""
    if holding == "the registry":
        master = _master_of_the_registry(on_cluster, redis_cluster)
    else:
        master = _master_of_node_b(on_cluster, redis_cluster)
    replica = redis_cluster.replica_of(master)

    async def kill_master():
        await asyncio.to_thread(redis_cluster.kill, master)

        async def promoted():
            assert redis_cluster.roles()[replica] == "master"

        await eventually(promoted, timeout=15)

    try:
        await _fault_while_sending(on_cluster, kill_master, f"Redis Cluster: SIGKILL, master of {holding}")
    finally:
        redis_cluster.start_node(master)  # back, as the new master's replica
        await asyncio.to_thread(redis_cluster.wait_healthy, 20)
