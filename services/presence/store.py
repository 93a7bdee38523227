"""The online state in Redis. Every change is one Lua script, so replicas never double-count.

A user is online while their count of sockets (on nodes not yet swept) is above zero; each
script returns the users whose count crossed zero, the only moments anyone is told.

Whether a gateway node is alive is not presence's to say: the node keeps its own liveness key
(`keys.node_alive_key`, written by its Socket.IO manager), which presence only reads, to sweep
the sockets of nodes whose key has lapsed.
"""

import logging

import redis.asyncio as redis
from redis.exceptions import RedisError

from ..shared.errors import StoreUnavailable
from ..shared.keys import known_nodes_key, node_alive_key, node_sockets_key, socket_counts_key

log = logging.getLogger(__name__)

# KEYS: node sockets hash, per-user counts, known nodes, node alive key.
# ARGV: node id, then pairs: sid, user (connected), "-", then sid, user (disconnected).
# Returns {online users, offline users, 1 if sockets were refused}. Adding an existing sid or
# removing a missing one changes nothing, so a retried batch is harmless. A node whose alive key
# has lapsed adds nothing: a dead node's report that arrives after its sweep (sent just before
# it died) would bring its users back online; a live node whose key Redis lost (a restart) has
# it back within a heartbeat, and sends its table again then.
_APPLY_EVENTS = """
local online, offline = {}, {}
local alive = redis.call('EXISTS', KEYS[4]) == 1
local refused = 0
if alive then redis.call('SADD', KEYS[3], ARGV[1]) end
local i, removing = 2, false
while i <= #ARGV do
  if ARGV[i] == '-' then
    removing = true
    i = i + 1
  else
    local sid, user = ARGV[i], ARGV[i + 1]
    if not removing then
      if not alive then
        refused = 1
      elseif redis.call('HSETNX', KEYS[1], sid, user) == 1 then
        if redis.call('HINCRBY', KEYS[2], user, 1) == 1 then table.insert(online, user) end
      end
    else
      if redis.call('HDEL', KEYS[1], sid) == 1 then
        if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
          redis.call('HDEL', KEYS[2], user)
          table.insert(offline, user)
        end
      end
    end
    i = i + 2
  end
end
return {online, offline, refused}
"""

# KEYS: node sockets hash, per-user counts, known nodes, node alive key. ARGV: node id, "force".
# Forgets every socket of a node whose alive key has lapsed (checked here, atomically, so a node
# that refreshes it meanwhile is kept), or of a node that left ("force"; its key is the node's
# own, left alone). Once only: the hash is gone afterwards, and the node no longer known.
# Returns the users who went offline.
_SWEEP_NODE = """
if ARGV[2] ~= 'force' and redis.call('EXISTS', KEYS[4]) == 1 then return {} end
local offline = {}
local pairs_ = redis.call('HGETALL', KEYS[1])
for i = 1, #pairs_, 2 do
  local user = pairs_[i + 1]
  if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
    redis.call('HDEL', KEYS[2], user)
    table.insert(offline, user)
  end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[1])
return offline
"""


class PresenceStore:
    """Expects a client made with `decode_responses=True`."""

    def __init__(self, client: redis.Redis, prefix: str):
        self._redis = client
        self._prefix = prefix
        self._apply = client.register_script(_APPLY_EVENTS)
        self._sweep = client.register_script(_SWEEP_NODE)

    def _keys(self, node_id: str) -> list[str]:
        return [
            node_sockets_key(self._prefix, node_id),
            socket_counts_key(self._prefix),
            known_nodes_key(self._prefix),
            node_alive_key(self._prefix, node_id),
        ]

    async def ping(self) -> None:
        await self._guard(self._redis.ping())

    async def apply_events(
        self, node_id: str, connected: list[tuple[str, str]], disconnected: list[tuple[str, str]]
    ) -> tuple[list[str], list[str], bool]:
        """Sockets that came and went on a node: the users who came online and went offline, and
        whether its sockets were taken (False: its liveness key has lapsed, see `_APPLY_EVENTS`;
        removals are applied all the same)."""
        argv: list[str] = [node_id]
        for sid, user in connected:
            argv += [sid, user]
        argv.append("-")
        for sid, user in disconnected:
            argv += [sid, user]
        online, offline, refused = await self._guard(self._apply(keys=self._keys(node_id), args=argv))
        return list(online), list(offline), not refused

    async def knows(self, node_id: str) -> bool:
        """Whether presence holds the node's sockets: False for a node that never reported, one
        swept (its liveness lapsed) or forgotten (it left), or when Redis lost the state."""
        return bool(await self._guard(self._redis.sismember(known_nodes_key(self._prefix), node_id)))

    async def replace_node(self, node_id: str, sockets: list[tuple[str, str]]) -> tuple[list[str], list[str], bool]:
        """Makes the node's recorded sockets exactly `sockets` (the gateway's own list)."""
        recorded = await self._guard(self._redis.hgetall(node_sockets_key(self._prefix, node_id)))
        wanted = dict(sockets)
        connected = [(sid, user) for sid, user in wanted.items() if recorded.get(sid) != user]
        disconnected = [(sid, user) for sid, user in recorded.items() if wanted.get(sid) != user]
        return await self.apply_events(node_id, connected, disconnected)

    async def sweep_dead_nodes(self) -> list[str]:
        """Forgets the sockets of every node whose liveness expired: the users gone offline."""
        nodes = await self._guard(self._redis.smembers(known_nodes_key(self._prefix)))
        offline: list[str] = []
        for node_id in nodes:
            offline += await self._guard(self._sweep(keys=self._keys(node_id), args=[node_id, ""]))
        return offline

    async def forget_node(self, node_id: str) -> list[str]:
        """A node that leaves cleanly (drained): its users' other sockets keep them online."""
        return await self._guard(self._sweep(keys=self._keys(node_id), args=[node_id, "force"]))

    async def online_among(self, user_ids: list[str]) -> list[str]:
        if not user_ids:
            return []
        counts = await self._guard(self._redis.hmget(socket_counts_key(self._prefix), user_ids))
        return [user for user, count in zip(user_ids, counts) if count is not None and int(count) > 0]

    async def _guard(self, awaitable):
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            log.warning("redis unavailable: %r", exc)
            raise StoreUnavailable("The presence store is unavailable") from None

