"""The routing registry of the Socket.IO manager, against a real Redis server of its own."""

import time

import pytest
import redis.asyncio as redis
import socketio

from services.shared.keys import node_alive_key, node_channel, sio_channel, user_nodes_key
from services.shared.routed_manager import NotSubscribed, RoutedRedisManager
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


async def published_to(private_redis, publisher: RoutedRedisManager, user_id: str) -> dict[str, list[bytes]]:
    """What each node's channel received for one routed emit to `user_id`."""
    client = redis.Redis.from_url(private_redis.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    channels = {node: node_channel(PREFIX, node) for node in ("n1", "n2")}
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
