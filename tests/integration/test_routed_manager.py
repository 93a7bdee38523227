"""The routing registry of the Socket.IO manager, against a real Redis server of its own."""

import asyncio
import logging
import random
import time

import orjson
import pytest
import redis.asyncio as redis
import socketio
from prometheus_client import CollectorRegistry, Counter

from services.shared.keys import node_alive_key, node_channel, presence_watchers_key, sio_channel, user_nodes_key
from services.shared import routed_manager
from services.shared.routed_manager import MAX_ROOMS_PER_CALL, USER_ROUTE_TTL_SECONDS, NotSubscribed, RoutedRedisManager
from services.shared.settings import NodeLivenessSettings
from tests.support import TEST_RUN_DIR, eventually, private_redis_server

PREFIX = "routing-test"
# Long enough that no node's liveness lapses during a test unless the test deletes its key.
LIVENESS = NodeLivenessSettings(heartbeat_seconds=10, node_ttl_seconds=30)
MARKER = b"marker"


@pytest.fixture(scope="module")
def private_redis():
    with private_redis_server(TEST_RUN_DIR / "routing-redis") as server:
        yield server


@pytest.fixture
async def nodes(private_redis):
    """Managers of two gateway nodes (no sockets, no listener: their registry side only)."""
    managers = [RoutedRedisManager(private_redis.url, PREFIX, node_id=node, liveness=LIVENESS) for node in ("n1", "n2")]
    yield managers
    for manager in managers:
        await manager._redis.aclose()
    client = redis.Redis.from_url(private_redis.url)
    await client.flushall()
    await client.aclose()


def hold(manager: RoutedRedisManager, *user_ids: str) -> list[str]:
    """Puts a socket of each user in this node's rooms (python-socketio's table), as a connect does."""
    rooms = [f"user:{user_id}" for user_id in user_ids]
    for number, room in enumerate(rooms):
        manager.basic_enter_room(f"sid-{number}", "/", room, eio_sid=f"eio-{number}")
    return rooms


async def published_to(private_redis, publisher: RoutedRedisManager, user_id: str,
                       nodes: tuple[str, ...] = ("n1", "n2")) -> dict[str, list[bytes]]:
    """What each node's channel received for one routed emit to `user_id`."""
    client = redis.Redis.from_url(private_redis.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    channels = {node: node_channel(PREFIX, node) for node in nodes}
    await pubsub.subscribe(*channels.values())
    await publisher._publish_batch([([user_nodes_key(PREFIX, user_id)], b'{"event":"x"}')])
    # Then a marker on every channel: Redis delivers in order, so once each marker is in, all is.
    for channel in channels.values():
        await client.publish(channel, MARKER)
    received: dict[str, list[bytes]] = {node: [] for node in channels}
    marked: set[str] = set()
    deadline = time.monotonic() + 5
    while marked != set(channels):
        assert time.monotonic() < deadline, f"no marker on {set(channels) - marked} within 5 s"
        message = await pubsub.get_message(timeout=0.1)
        if message is None:  # nothing yet, or a subscribe confirmation
            continue
        node = next(node for node, channel in channels.items() if channel.encode() == message["channel"])
        if message["data"] == MARKER:
            marked.add(node)
        else:
            received[node].append(message["data"])
    await pubsub.aclose()
    await client.aclose()
    return received


async def test_an_emit_goes_only_to_the_live_nodes_holding_the_user(private_redis, nodes):
    n1, n2 = nodes
    await n1._register(hold(n1, "ada"))

    assert await published_to(private_redis, n2, "ada") == {"n1": [b'[{"event":"x"}]'], "n2": []}
    assert await published_to(private_redis, n1, "ada") == {"n1": [], "n2": []}  # its own: delivered directly

    # n1 dies: once its key lapses, emits skip it, and its entry is dropped on the way.
    await n1._redis.delete(node_alive_key(PREFIX, "n1"))
    assert await published_to(private_redis, n2, "ada") == {"n1": [], "n2": []}
    assert await n2._redis.smembers(user_nodes_key(PREFIX, "ada")) == set()


async def test_presence_rooms_are_registered_beside_user_rooms_in_calls_of_bounded_size(private_redis, nodes):
    """A refresh registers every room of the node: more than one call carries, users' and
    presence watchers' alike, each with its TTL, and the node's liveness key with them."""
    n1, n2 = nodes
    users = [f"user-{number}" for number in range(MAX_ROOMS_PER_CALL + 10)]
    rooms = hold(n1, *users) + [f"presence:{user}" for user in users[:3]]
    await n1._redis.delete(node_alive_key(PREFIX, "n1"))

    assert await n1._register(sorted(rooms), every_room=True)

    assert await n2._redis.get(node_alive_key(PREFIX, "n1")) is not None
    for user in (users[0], users[-1]):
        assert await n2._redis.smembers(user_nodes_key(PREFIX, user)) == {b"n1"}
        assert 0 < await n2._redis.ttl(user_nodes_key(PREFIX, user)) <= USER_ROUTE_TTL_SECONDS
    assert await n2._redis.smembers(presence_watchers_key(PREFIX, users[0])) == {b"n1"}
    assert await n2._redis.smembers(presence_watchers_key(PREFIX, users[3])) == set()


async def test_an_idle_refresh_is_one_command_whatever_the_number_of_users(private_redis, nodes):
    n1, _ = nodes
    rooms = hold(n1, *(f"user-{number}" for number in range(500)))
    await n1._register(rooms)
    await n1._redis.config_resetstat()

    await n1._refresh(written=time.monotonic())

    stats = await n1._redis.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()
             if name not in ("cmdstat_info", "cmdstat_config|resetstat")}  # the test's own
    assert calls == {"set": 1}


async def test_a_node_whose_key_lapsed_writes_its_users_back(private_redis, nodes):
    n1, n2 = nodes
    await n1._register(hold(n1, "ada", "grace"))
    await n1._redis.delete(node_alive_key(PREFIX, "n1"))
    await published_to(private_redis, n2, "ada")  # meanwhile an emit dropped n1 from ada's set

    await n1._refresh(written=time.monotonic())

    assert await published_to(private_redis, n2, "ada") == {"n1": [b'[{"event":"x"}]'], "n2": []}
    assert await n2._redis.smembers(user_nodes_key(PREFIX, "grace")) == {b"n1"}


async def test_a_user_who_left_the_node_is_taken_out_at_the_next_refresh(private_redis, nodes):
    n1, n2 = nodes
    await n1._register(hold(n1, "ada"))
    n1.basic_leave_room("sid-0", "/", "user:ada")

    await n1._refresh(written=time.monotonic())

    assert await n2._redis.smembers(user_nodes_key(PREFIX, "ada")) == set()
    assert await published_to(private_redis, n2, "ada") == {"n1": [], "n2": []}


async def test_a_user_whose_socket_disconnected_is_taken_out_and_one_who_came_back_is_kept(private_redis, nodes):
    """The refresh looks only at the user rooms emptied since the last one (not every room)."""
    n1, n2 = nodes
    await n1._register(hold(n1, "ada", "grace"))
    n1.basic_disconnect("sid-0", "/")  # ada's only socket: python-socketio leaves each of its rooms
    n1.basic_leave_room("sid-1", "/", "user:grace")
    n1.basic_enter_room("sid-9", "/", "user:grace", eio_sid="eio-9")  # grace is back before the refresh

    await n1._refresh(written=time.monotonic())

    assert await n2._redis.smembers(user_nodes_key(PREFIX, "ada")) == set()
    assert await n2._redis.smembers(user_nodes_key(PREFIX, "grace")) == {b"n1"}
    assert await published_to(private_redis, n2, "grace") == {"n1": [b'[{"event":"x"}]'], "n2": []}


async def test_a_node_listens_from_start_up_and_is_not_ready_until_subscribed(private_redis):
    manager = RoutedRedisManager(private_redis.url, PREFIX, node_id="n3", liveness=LIVENESS)
    server = socketio.AsyncServer(client_manager=manager, async_mode="aiohttp")
    client = redis.Redis.from_url(private_redis.url)
    channels = [sio_channel(PREFIX), node_channel(PREFIX, "n3")]
    try:
        with pytest.raises(NotSubscribed):
            await manager.subscribed()

        manager.start()  # no connection needed
        await eventually(manager.subscribed)

        assert server.manager_initialized  # the first connection will not start a second listener
        assert dict(await client.pubsub_numsub(*channels)) == {channel.encode(): 1 for channel in channels}
    finally:
        await manager.close()
        await client.aclose()


async def test_a_node_stopped_while_it_connects_still_stops(private_redis):
    """A gateway stopped within milliseconds of its start cancels its listener and liveness loops
    while they connect, where Python 3.11's wait_for (inside redis-py) can swallow a cancellation
    (services/shared/tasks.py): about one stop in five here then waited for ever. Stopped at
    random moments of its start, every node stops, and leaves no liveness key behind."""
    chance = random.Random(11)
    client = redis.Redis.from_url(private_redis.url)
    try:
        for attempt in range(40):
            node = f"n-stopped-{attempt}"
            manager = RoutedRedisManager(private_redis.url, PREFIX, node_id=node, liveness=LIVENESS)
            socketio.AsyncServer(client_manager=manager, async_mode="aiohttp")
            manager.start()
            await asyncio.sleep(chance.uniform(0, 0.004))  # the moment of the stop, not a wait for anything
            await asyncio.wait_for(manager.close(), 10)
            assert not await client.exists(node_alive_key(PREFIX, node))
    finally:
        await client.aclose()


# --- the routing format (services/shared/route_format.py) ------------------------------------------

async def test_each_node_is_sent_the_format_it_reads(private_redis, nodes, caplog):
    """n1 is this release; `later` a node of a release that also reads an unknown format 99; `future`
    one that reads format 99 only (a release skipped in an upgrade). The previous release (9f02a0c)
    writes "1" in its liveness key, as this one does."""
    n1, n2 = nodes
    await n1._register(hold(n1, "ada"))
    assert await n1._redis.get(node_alive_key(PREFIX, "n1")) == b"1"
    for node, advertised in (("later", "1,99"), ("future", "99")):
        await n1._redis.set(node_alive_key(PREFIX, node), advertised)
        await n1._redis.sadd(user_nodes_key(PREFIX, "ada"), node)

    with caplog.at_level(logging.WARNING, logger="services.shared.routed_manager"):
        received = await published_to(private_redis, n2, "ada", nodes=("n1", "later", "future"))

    assert received == {"n1": [b'[{"event":"x"}]'], "later": [b'[{"event":"x"}]'], "future": []}
    warnings = [record.getMessage() for record in caplog.records if "routing formats" in record.getMessage()]
    assert len(warnings) == 1 and "node future" in warnings[0]
    # Still alive and still routed to: only what it cannot read is held back.
    assert await n2._redis.smembers(user_nodes_key(PREFIX, "ada")) == {b"n1", b"later", b"future"}

    # A call's signal to one socket follows the same rule.
    pubsub = n2._redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(node_channel(PREFIX, "later"), node_channel(PREFIX, "future"))
    await n2.emit_to_socket("callSignal", {"n": 1}, "sid-f", "future")
    await n2.emit_to_socket("callSignal", {"n": 2}, "sid-l", "later")
    deadline, message = time.monotonic() + 5, None
    while message is None:
        assert time.monotonic() < deadline, "no call signal within 5 s"
        message = await pubsub.get_message(timeout=0.1)
    # The first one was never sent: Redis delivers in order.
    assert message["channel"] == node_channel(PREFIX, "later").encode()
    assert message["data"].startswith(b'[{"method":"emit","event":"callSignal"')
    await pubsub.aclose()


async def test_what_a_node_reads_is_read_once_for_a_run_of_signals_and_again_once_expired(private_redis, nodes,
                                                                                           monkeypatch):
    """A call's candidates to one node: its liveness key is read for the first, not before each
    (NODE_FORMAT_KNOWN_SECONDS). A node that restarts under the same id reading none of this
    release's formats is honoured once that reading has expired."""
    _, n2 = nodes
    client = n2._redis
    await client.set(node_alive_key(PREFIX, "peer"), "1")
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(node_channel(PREFIX, "peer"), node_channel(PREFIX, "marker"))

    async def next_signal() -> tuple[bytes, bytes]:
        deadline, message = time.monotonic() + 5, None
        while message is None:
            assert time.monotonic() < deadline, "no signal within 5 s"
            message = await pubsub.get_message(timeout=0.1)
        return message["channel"], orjson.loads(message["data"])[0]["data"][0]["n"]

    gets_before = (await client.info("commandstats")).get("cmdstat_get", {}).get("calls", 0)
    for n in range(5):
        await n2.emit_to_socket("iceCandidate", {"n": n}, "sid-p", "peer")
    assert [await next_signal() for _ in range(5)] == [(node_channel(PREFIX, "peer").encode(), n) for n in range(5)]
    assert (await client.info("commandstats"))["cmdstat_get"]["calls"] - gets_before == 1

    await client.set(node_alive_key(PREFIX, "peer"), "99")  # restarted, reading format 99 only
    await n2.emit_to_socket("iceCandidate", {"n": 5}, "sid-p", "peer")  # within the reading: sent
    assert await next_signal() == (node_channel(PREFIX, "peer").encode(), 5)
    monkeypatch.setattr(routed_manager, "NODE_FORMAT_KNOWN_SECONDS", 0.0)
    await n2.emit_to_socket("iceCandidate", {"n": 6}, "sid-p", "peer")  # expired: read again, held back
    await n2.emit_to_socket("iceCandidate", {"n": 7}, "sid-m", "marker")
    # Redis delivers in order: the marker's signal coming next means n 6 was never published.
    assert await next_signal() == (node_channel(PREFIX, "marker").encode(), 7)
    await pubsub.aclose()


async def test_an_unreadable_payload_is_counted_and_logged_and_the_listener_goes_on(private_redis, caplog):
    registry = CollectorRegistry()
    unreadable = Counter("unreadable", "", ["reason"], registry=registry)
    manager = RoutedRedisManager(private_redis.url, PREFIX, node_id="n4", liveness=LIVENESS, unreadable=unreadable)
    socketio.AsyncServer(client_manager=manager, async_mode="aiohttp")
    caught_up = asyncio.Event()
    manager.on_catch_up = caught_up.set
    client = redis.Redis.from_url(private_redis.url)
    try:
        manager.start()
        await eventually(manager.subscribed)
        with caplog.at_level(logging.WARNING):
            for payload in (b"not json {", b'"a string"', b'{"format": 2, "emits": []}', b"\xff\xfe"):
                await client.publish(node_channel(PREFIX, "n4"), payload)
            # Something it reads, after them: the listener got past them, on the same subscription.
            await client.publish(node_channel(PREFIX, "n4"), b'[{"method": "parley_catch_up"}]')
            await asyncio.wait_for(caught_up.wait(), 5)

        assert registry.get_sample_value("unreadable_total", {"reason": "malformed"}) == 3
        assert registry.get_sample_value("unreadable_total", {"reason": "format"}) == 1
        dropped = [record.getMessage() for record in caplog.records if "cannot read" in record.getMessage()]
        assert len(dropped) == 4 and "format '2'" in dropped[2]
        assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
        await manager.subscribed()  # never lost its subscription over them
    finally:
        await manager.close()
        await client.aclose()


@pytest.mark.parametrize("seed", range(20))
async def test_rooms_of_each_socket_stay_as_python_socketios_own_manager_keeps_them(nodes, seed):
    """RoutedRedisManager keeps each socket's rooms beside python-socketio's table, so that a
    disconnect leaves them without scanning every room of the node: after any sequence of
    connects, joins, leaves, room closes and disconnects, the table, each socket's rooms, the
    pending lists and the ack callbacks are what python-socketio's own manager makes of it."""
    routed, stock = nodes[0], socketio.AsyncManager()
    rng = random.Random(seed)
    connected: list[tuple[str, str]] = []
    rooms = [f"user:u{n}" for n in range(4)] + ["presence:u1", "group:7"]
    for step in range(300):
        action = rng.choice(["connect", "enter", "enter", "leave", "close", "disconnect", "pending"])
        if action == "connect" or not connected:
            namespace = rng.choice(["/", "/other"])
            sid = f"sid-{step}"
            connected.append((sid, namespace))
            for manager in (routed, stock):
                manager.basic_enter_room(sid, namespace, None, eio_sid=f"eio-{step}")
                manager.basic_enter_room(sid, namespace, sid)
                manager.callbacks[sid] = {1: "callback"}
            continue
        sid, namespace = rng.choice(connected)
        room = rng.choice([*rooms, sid])  # its own sid room too: left and entered again
        raised = []
        for manager in (routed, stock):
            try:
                if action == "enter":
                    manager.basic_enter_room(sid, namespace, room)
                elif action == "leave":
                    manager.basic_leave_room(sid, namespace, room)
                elif action == "close" and room != sid:
                    manager.basic_close_room(room, namespace)
                elif action == "pending":
                    manager.pre_disconnect(sid, namespace)
                elif action == "disconnect":
                    manager.basic_disconnect(sid, namespace)
                raised.append(None)
            except (KeyError, ValueError) as exc:  # a socket that left every room, say: alike in both
                raised.append(type(exc))
        assert raised[0] == raised[1], step
        if action == "disconnect" and rng.random() < 0.5:  # or kept, to be chosen again once gone
            connected.remove((sid, namespace))
        assert {ns: {room: dict(members) for room, members in table.items()} for ns, table in routed.rooms.items()} == \
            {ns: {room: dict(members) for room, members in table.items()} for ns, table in stock.rooms.items()}, step
        for each_sid, each_namespace in connected:
            assert sorted(routed.get_rooms(each_sid, each_namespace)) == \
                sorted(stock.get_rooms(each_sid, each_namespace)), step
        assert routed.pending_disconnect == stock.pending_disconnect and routed.callbacks == stock.callbacks, step


async def test_a_socket_that_enters_a_room_while_the_refresh_takes_the_node_out_keeps_it_routed(private_redis, nodes):
    """grace's last socket left node n1; the refresh is taking n1 out of her route set when her
    next socket arrives there. Redis holds the refresh's SREM (CLIENT PAUSE WRITE) until the
    socket has entered: the node must end in her set, or emits for her never reach that socket."""
    n1, n2 = nodes
    await n1._register(hold(n1, "grace"))
    n1.basic_disconnect("sid-0", "/")  # her only socket: the room is emptied, the refresh will unregister it
    admin = redis.Redis.from_url(private_redis.url)

    async def srem_held() -> None:  # the refresh's SREM has reached Redis, which holds it
        assert any(client["cmd"] == "srem" and "b" in client["flags"] for client in await admin.client_list())

    async def entered() -> None:
        assert "sid-9" in n1.rooms["/"].get("user:grace", {})

    # Longer than both waits below together, and inside the manager's 5 s socket timeout: the
    # SREM is still held when the socket has entered, and it waits rather than fails.
    await admin.execute_command("CLIENT", "PAUSE", 4000, "WRITE")
    try:
        refresh = asyncio.create_task(n1._refresh(written=time.monotonic()))
        await eventually(srem_held, timeout=1.5)
        n1.basic_enter_room("sid-9", "/", None, eio_sid="eio-9")  # her next socket connects here (as pre_connect)
        enter = asyncio.create_task(n1.enter_room("sid-9", "/", "user:grace"))
        await eventually(entered, timeout=1.5)
        assert not refresh.done()  # the socket is in the room while the SREM is still held
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
    await asyncio.wait_for(asyncio.gather(refresh, enter), timeout=10)

    assert await n2._redis.smembers(user_nodes_key(PREFIX, "grace")) == {b"n1"}
    assert await published_to(private_redis, n2, "grace") == {"n1": [b'[{"event":"x"}]'], "n2": []}
