"""The one place a Redis client is made: one Redis server, or a Redis Cluster.

`REDIS_URL` names either: `redis://host:port/db` (`rediss://` for TLS) for one server, or
`redis+cluster://host:port,host:port,...` (`rediss+cluster://`) for a cluster, listing any of its
nodes (the client discovers the rest, and follows failovers). Credentials and query options are
written as for one server: `redis+cluster://:secret@10.0.0.1:6379,10.0.0.2:6379`.

A cluster changes two things for the code that uses the client, both decided here and in
`keys.py`, nowhere else: key names take a hash tag (`cluster_key_prefix`), so that every key a
Lua script touches lands in one slot; and the per-node Socket.IO channels use sharded pub/sub
(routed_manager), so that fan-out spreads over the shards.
"""

from urllib.parse import urlsplit

import redis.asyncio
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.connection import parse_url
from redis.exceptions import ConnectionError, RedisClusterException, TimeoutError

from .keys import cluster_prefix

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

Client = redis.asyncio.Redis | RedisCluster


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def key_prefix(url: str, prefix: str) -> str:
    """The prefix the functions of `keys.py` take for this Redis: REDIS_PREFIX as it is for one
    server (key names unchanged), hash-tagged for a cluster."""
    return cluster_prefix(prefix) if is_cluster(url) else prefix


def connect(url: str, *, max_connections: int | None = None, **options) -> Client:
    """An asyncio client for `url`, not yet connected. `max_connections`: a bounded pool where a
    caller waits (up to 5 s) for a free connection, on one server; per cluster node, on a cluster."""
    if is_cluster(url):
        return _cluster(url, max_connections, options)
    if max_connections is not None:
        return redis.asyncio.Redis.from_pool(redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=5, **options))
    return redis.asyncio.Redis.from_url(url, **options)


def _cluster(url: str, max_connections: int | None, options: dict) -> RedisCluster:
    scheme, rest = url.split("://", 1)
    credentials, _, hosts_and_path = rest.rpartition("@")
    hosts, slash, path = hosts_and_path.partition("/")
    addresses = [address.strip() for address in hosts.split(",") if address.strip()]
    if not addresses:
        raise ValueError("a redis+cluster:// URL names at least one node: redis+cluster://host:port,host:port")
    nodes = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a Redis Cluster node must be host:port, not {address!r}")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    # Credentials and query options parsed as for one server; a cluster has database 0 only.
    single = f"{CLUSTER_SCHEMES[scheme]}://{credentials + '@' if credentials else ''}{addresses[0]}{slash}{path}"
    parsed = {name: value for name, value in parse_url(single).items() if name not in ("host", "port", "db", "path")}
    if parsed.pop("connection_class", None) is not None:  # rediss: TLS
        parsed["ssl"] = True
    if max_connections is not None:
        options["max_connections"] = max_connections
    if options.pop("retry_on_timeout", False):  # the cluster client names it so
        options["retry_on_error"] = [TimeoutError]
    return _RedisCluster(startup_nodes=nodes, **parsed, **options)


class _RedisCluster(RedisCluster):
    """redis-py's cluster client, whose errors while a slot has no master (mid-failover: its
    `SlotNotCoveredError`, `RedisClusterException`) are `ConnectionError`s, as Redis being away is
    to every caller of one server's client: they already answer 503 and retry."""

    async def execute_command(self, *args, **kwargs):
        try:
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise ConnectionError(f"Redis Cluster: {exc}") from exc

    def pipeline(self, transaction=None, shard_hint=None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)
        return _ClusterPipeline(self, transaction)


class _ClusterPipeline(ClusterPipeline):
    async def execute(self, *args, **kwargs):
        try:
            return await super().execute(*args, **kwargs)
        except RedisClusterException as exc:
            raise ConnectionError(f"Redis Cluster: {exc}") from exc
