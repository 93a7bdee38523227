"""Key names on a Redis Cluster: the keys each Lua script is given share one hash slot, the
node channels spread over the slots, and on one Redis every name is what it always was.

Slots are computed as Redis Cluster computes them (redis-py's `key_slot`: CRC16 of the hash
tag), so a key added to a script without the tag fails here, not in production."""

import re

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from services.gateway import call_store
from services.presence.store import PresenceStore
from services.shared import keys
from services.shared.redis_client import connect, is_cluster, key_prefix
from services.shared.routed_manager import RoutedRedisManager

CLUSTER_URL = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
PREFIX = key_prefix(CLUSTER_URL, "parley")


def slots(names) -> set[int]:
    return {key_slot(name.encode()) for name in names}


def test_one_redis_keeps_every_name():
    prefix = key_prefix("redis://127.0.0.1:6379/0", "parley")
    assert prefix == "parley"
    assert keys.user_nodes_key(prefix, "u1") == "parley:route:nodes-of:u1"
    assert keys.presence_watchers_key(prefix, "u1") == "parley:route:nodes-watching:u1"
    assert keys.room_nodes_key(prefix, "user:u1") == keys.user_nodes_key(prefix, "u1")
    assert keys.room_nodes_key(prefix, "presence:u1") == keys.presence_watchers_key(prefix, "u1")
    assert keys.node_alive_key(prefix, "g1") == "parley:node-alive:g1"
    assert keys.node_sockets_key(prefix, "g1") == "parley:presence:node:g1:sockets"
    assert keys.known_nodes_key(prefix) == "parley:presence:nodes"
    assert keys.socket_counts_key(prefix) == "parley:presence:sockets-per-user"
    assert keys.node_channel(prefix, "g1") == "parley:socketio:node:g1"
    assert keys.sio_channel(prefix) == "parley:socketio"
    assert keys.visible_sockets_key(prefix, "u1") == "parley:visible:u1"
    assert keys.push_stream_key(prefix) == "parley:push:jobs"
    assert keys.push_epoch_key(prefix) == "parley:push:epoch"
    assert keys.call_key(prefix, "c1") == "parley:call:c1"
    assert keys.call_busy_key(prefix, "u1") == "parley:call-busy:u1"
    assert keys.calls_due_key(prefix) == "parley:calls:due"


def test_the_routing_scripts_keys_share_a_slot():
    """`_ROUTE_SHARDED`: the route sets of the emits' rooms (users' and presence watchers') and
    the known nodes' liveness keys."""
    names = [keys.user_nodes_key(PREFIX, f"user-{n}") for n in range(50)]
    names += [keys.presence_watchers_key(PREFIX, f"user-{n}") for n in range(50)]
    names += [keys.node_alive_key(PREFIX, f"gateway-{n}") for n in range(20)]
    assert len(slots(names)) == 1


async def test_the_presence_scripts_keys_share_a_slot():
    """What `PresenceStore` gives its scripts, for any node, in one slot with routing's keys
    (both read the nodes' liveness keys)."""
    client = connect(CLUSTER_URL)
    store = PresenceStore(client, PREFIX)
    names = [name for node in ("gateway-a", "gateway-b", "pod-7f9c") for name in store._keys(node)]
    names.append(keys.user_nodes_key(PREFIX, "u1"))
    assert len(slots(names)) == 1
    await client.aclose()


def test_the_call_scripts_keys_share_a_slot():
    """What the call scripts are given (calls, due, busy markers, a route set, liveness keys):
    all in the registry's slot."""
    names = [keys.call_key(PREFIX, "c1"), keys.call_key(PREFIX, "c2"), keys.calls_due_key(PREFIX),
             keys.call_busy_key(PREFIX, "u1"), keys.call_busy_key(PREFIX, "u2"), keys.user_nodes_key(PREFIX, "u2"),
             keys.node_alive_key(PREFIX, "gateway-a"), keys.node_alive_key(PREFIX, "gateway-b")]
    assert len(slots(names)) == 1


def _call_scripts() -> dict[str, str]:
    return {name: value for name, value in vars(call_store).items()
            if name.startswith("_") and isinstance(value, str) and "redis.call" in value}


# A key argument as the call scripts may write it: KEYS[...], or a name holding one of KEYS.
DECLARED_KEY = re.compile(r"KEYS\[[^\]]+\]|\w+_key|alive_key\[node\]")


def undeclared(script: str) -> list[str]:
    """The places in a script's text where a key may not come from KEYS."""
    found = [f"{command} {key}" for command, key in re.findall(r"redis\.call\('(\w+)'(?:, *([^,)]+))?", script)
             if command != "TIME" and not DECLARED_KEY.fullmatch(key.strip())]
    # The names that hold keys are bound to KEYS: finish's parameters are given KEYS entries
    # (its definition aside), `alive_key` is filled from KEYS.
    for call in re.findall(r"finish\(([^)]*)\)", script):
        if not call.startswith("call_key,"):
            found += [f"finish({call})" for arg in call.split(",")[:4] if not arg.strip().startswith("KEYS[")]
    for target, value in re.findall(r"(\w+_key(?:\[[^=]*\])?) = ([^\n]+)", script):
        if value != "{}" and not value.startswith("KEYS["):
            found.append(f"{target} = {value}")
    return found


def test_the_call_scripts_touch_only_keys_they_are_given():
    """Every key a call script names in `redis.call` comes from KEYS, never built from ARGV or from
    what the script read (Redis's rule for scripts; a cluster or a proxy routes by KEYS only). The
    integration test `test_every_key_a_call_script_touches_is_declared` checks it as they run."""
    scripts = _call_scripts()
    assert {"_PRELUDE", "_START", "_ANSWER", "_END", "_DUE", "_SWEEP", "_RENEW", "_AWAY", "_REBIND"} <= set(scripts)
    assert {name: undeclared(script) for name, script in scripts.items()} == {name: [] for name in scripts}
    # What it catches: keys built from ARGV or read values, or names bound to them.
    assert undeclared("redis.call('EXISTS', ARGV[11] .. node)") == ["EXISTS ARGV[11] .. node"]
    assert undeclared("redis.call('GET', busy_prefix .. user)") == ["GET busy_prefix .. user"]
    assert undeclared("local call_key = ARGV[1] .. id") == ["call_key = ARGV[1] .. id"]
    assert undeclared("alive_key[node] = ARGV[2] .. node") == ["alive_key[node] = ARGV[2] .. node"]
    assert undeclared("done = finish(ARGV[1], KEYS[1], ARGV[2], id, 'lost', keep, now)") != []


def test_node_channels_spread_over_the_slots_and_leave_the_registrys():
    registry = slots([keys.user_nodes_key(PREFIX, "u1")])
    channels = slots(keys.node_channel(PREFIX, f"gateway-{n}") for n in range(32))
    assert len(channels) == 32 and not channels & registry
    # Three masters split the 16384 slots in three ranges: 32 channels reach all three.
    assert {slot * 3 // 16384 for slot in channels} == {0, 1, 2}
    # Keys no script touches spread too (one user's visibility, the push stream).
    assert slots([keys.visible_sockets_key(PREFIX, "u1"), keys.push_stream_key(PREFIX)]) - registry


def test_cluster_urls_make_a_cluster_client():
    url = "redis+cluster://:s3cret@10.0.0.1:6379,10.0.0.2:6380/?socket_keepalive=true"
    assert is_cluster(url) and not is_cluster("redis://127.0.0.1:6379/0")
    client = connect(url, socket_timeout=2)
    assert isinstance(client, RedisCluster)
    assert [(node.host, node.port) for node in client.nodes_manager.startup_nodes.values()] == [
        ("10.0.0.1", 6379), ("10.0.0.2", 6380)]
    assert client.nodes_manager.connection_kwargs["password"] == "s3cret"
    assert key_prefix(url, "parley") == "{parley}"


@pytest.mark.parametrize("url", ["redis+cluster://", "redis+cluster://host-without-port", "redis+cluster://h:x"])
def test_bad_cluster_urls_are_refused_clearly(url):
    with pytest.raises(ValueError, match="host:port"):
        connect(url)


async def test_a_manager_on_a_cluster_keeps_the_shared_channel_and_tags_its_keys():
    manager = RoutedRedisManager(CLUSTER_URL, "parley", write_only=True)
    assert manager.channel == "parley:socketio"  # classic pub/sub, heard on every cluster node
    assert manager._prefix == "{parley}"
    await manager._redis.aclose()


def test_the_redis_py_cluster_internals_we_rely_on_are_there():
    """redis_client.py subclasses RedisCluster and its pipeline (errors mid-failover become
    ConnectionError); routed_manager.py subscribes on the master owning its channel, found with
    `get_node_from_key` after `nodes_manager.initialize()`, through that node's connection settings."""
    import inspect

    from redis.asyncio.cluster import ClusterNode, ClusterPipeline, NodesManager

    assert inspect.iscoroutinefunction(RedisCluster.execute_command)
    assert inspect.iscoroutinefunction(ClusterPipeline.execute)
    assert list(inspect.signature(ClusterPipeline.__init__).parameters)[:3] == ["self", "client", "transaction"]
    assert inspect.iscoroutinefunction(NodesManager.initialize)
    assert callable(RedisCluster.get_node_from_key) and callable(RedisCluster.spublish)
    node = ClusterNode("127.0.0.1", 7000, socket_timeout=2)
    assert node.connection_kwargs["socket_timeout"] == 2 and node.connection_class is not None
