"""A Socket.IO manager over Redis that sends an emit for a user only to the nodes holding them.

python-socketio's AsyncRedisManager publishes every emit on one channel that every node
decodes, so each node pays for all the traffic of the cluster. Here each node also listens on a
channel of its own, and keeps, in Redis, which nodes hold sockets of each `user:<id>` room (a
set of node ids, written when a user's first socket arrives on a node and when their last one
leaves), and likewise of each `presence:<id>` room (the sockets watching a user's presence), so
that presence's announcements are routed too. A node proves it is alive with its one liveness key (`keys.node_alive_key`), written
here at start and every HEARTBEAT_SECONDS with a TTL of NODE_TTL_SECONDS: an idle cluster costs
one Redis command per node per refresh, not one per connected user. Presence's sweeper reads the
same key, so a node's users go offline when its routes die, and delivery never waits on presence. An emit to
user and presence rooms is published only on the channels of the live nodes found there (a dead node's
entries are dropped as they are met); anything else (other rooms, everyone) and any emit whose
lookup fails goes on the shared channel, as before.

A node subscribes when its app starts (`start`), not on its first connection as python-socketio
would, and `subscribed` tells readiness when Redis has confirmed it.

The emitting node delivers to its own sockets directly (python-socketio does), never via Redis.
Routed emits made while a publish is under way leave together: one script call, and one pub/sub
message for each node concerned. The emitter does not wait for its publish.

What nodes write to each other (node-channel payloads, the registry, the liveness key's value)
is versioned, so that two releases run side by side in a rolling upgrade: see route_format.

What Redis loses is caught up, not re-published (issue 20; the gateway's `catchup` module does it):
`on_catch_up` is called when this node's subscription is confirmed again after a loss, and when
a catch-up request arrives; a publish given up (Redis unreachable twice) makes this manager
broadcast that request as soon as Redis takes publishes again. `packet_for`, when set, makes the
engine.io packet of an encoded emit (the gateway's feed events get each socket's own offset).

On a Redis Cluster (`redis+cluster://`, see `redis_client`) the node channels use sharded pub/sub
(SSUBSCRIBE/SPUBLISH), so each node's traffic goes through the shard owning its channel, not
through every shard: see "On a Redis Cluster" below. The shared channel stays classic pub/sub,
which a cluster forwards to every node: it carries what every gateway must hear anyway
(broadcasts, catch-up requests), so it could gain nothing from sharding, and one node's
subscription then hears it whichever shard it is connected to.

Measured (bench/RESULTS.md): pub/sub messages decoded per delivered message, per node, 0.07 over
two nodes and 0.08 over four ("Delivery"), where python-socketio's stock manager decodes 2 per
node per message (appendix, "Delivery": node scaling). Besides `_publish` and `_listen`, the
extension points python-socketio documents, this overrides its internals (`emit`,
`_handle_emit`, `enter_room`, `initialize`, and the room table's `basic_enter_room`,
`basic_leave_room`, `basic_disconnect`, `get_rooms`) and calls the server's `_send_eio_packet`:
pyproject.toml pins python-socketio exactly, and tests/unit/test_library_seams.py names what
moved after an upgrade.
"""

import asyncio
import logging
import time

import orjson
import redis.asyncio as redis
from engineio import packet as eio_packet
from prometheus_client import Counter
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import RedisClusterException, RedisError
from socketio.async_pubsub_manager import AsyncPubSubManager
from socketio.packet import EVENT

from . import fast_json, route_format
from .batching import Batcher
from .keys import node_alive_key, node_channel, room_nodes_key, sio_channel
from .redis_client import connect, is_cluster, key_prefix
from .settings import NodeLivenessSettings
from .tasks import cancel_and_wait

log = logging.getLogger(__name__)

USER_ROOM_PREFIX = "user:"
# The rooms whose nodes the registry keeps (`keys.room_nodes_key`), so that emits to them are
# routed: a user's sockets, and the sockets watching a user's presence (`watchPresence`).
ROUTED_ROOM_PREFIXES = (USER_ROOM_PREFIX, "presence:")
# A user's entry lapses this long after it was last written, which only matters for entries of
# nodes that died without cleaning up; live nodes write theirs again at half that age.
USER_ROUTE_TTL_SECONDS = 3600
# Between attempts to subscribe again (or to send a catch-up request): at most 2 s, so a node
# hears again, and catches up, within a few seconds of Redis being back (issue 20: 5 s).
LISTEN_RETRY_SECONDS = (0.2, 0.5, 1, 2)
# Published on the shared channel by a node (or history) that gave up a publish: every node then
# catches up its sockets from history (`on_catch_up`). python-socketio ignores unknown methods.
CATCH_UP_METHOD = "parley_catch_up"

MAX_EMITS_PER_CALL = 256
MAX_ROOMS_PER_CALL = 500
# How long what a node's liveness key says it reads is taken as known (`emit_to_socket`): a node
# writes it each heartbeat, and it changes only when a node restarts under the same id with
# another release. Read for every signal, it was a Redis round trip before each of a call's
# candidates; known for this long, back to back (`python -m bench.call_bench`, 2 runs each):
# 109 -> 88 Redis commands, 12.7 -> 11.1 / 11.6 CPU-ms and candidate p50 13.4 -> 10.9 ms a call,
# 145 -> 160 / 167 calls a second. A node restarted under its id with a release that reads none
# of our formats may be sent, for at most this long, signals it cannot read.
NODE_FORMAT_KNOWN_SECONDS = 5.0
NODE_FORMATS_KEPT = 256  # past this many nodes, those whose reading has expired are forgotten

# KEYS: this node's liveness key, then the route sets of the rooms it enters. ARGV: the node id,
# the liveness key's value, its TTL (ms), the route sets' TTL (s). One command where a pipeline
# sent 2N + 1 (SET, then SADD and EXPIRE a room), whose packing and replies in redis-py were two
# thirds of a connect storm's registrations (py-spy, bench/RESULTS.md "Connect storm and presence").
_REGISTER = """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[4])
end
"""

# Whether a live node reads the format this release writes, from its liveness key's value ("1",
# or "1,2": route_format.advertisement); the nodes that do not are collected in `unread`, once each.
_READS_FORMAT_LUA = """
local unread, unread_seen = {}, {}
local function reads_format(node, advertised)
  if string.find(',' .. advertised .. ',', ',FORMAT,', 1, true) then return true end
  if not unread_seen[node] then unread_seen[node] = true; unread[#unread + 1] = node end
  return false
end
""".replace("FORMAT", str(route_format.FORMAT))

# KEYS: the route sets of every emit's target users, emit after emit. ARGV: this node, the node
# channel prefix, the node key prefix, then for each emit how many of KEYS are its, and the emit
# (JSON). Looks every node up and publishes to each live one (but this one) a single JSON array
# of the emits for its users, in order: one round trip for the whole batch, one message for each
# node to decode. The node keys are read without being declared: on one Redis only (a cluster: below).
# A live node that reads none of this release's formats (its liveness key's value, see
# route_format) gets nothing; the script returns how many nodes it published to, and those.
_ROUTE_AND_PUBLISH = """
local me, channel_prefix, node_prefix = ARGV[1], ARGV[2], ARGV[3]
local batches, order, alive, first_key = {}, {}, {}, 1
""" + _READS_FORMAT_LUA + """
for i = 4, #ARGV, 2 do
  local key_count, seen = tonumber(ARGV[i]), {}
  for k = first_key, first_key + key_count - 1 do
    for _, node in ipairs(redis.call('SMEMBERS', KEYS[k])) do
      if alive[node] == nil then alive[node] = redis.call('GET', node_prefix .. node) end
      if not alive[node] then
        redis.call('SREM', KEYS[k], node)
      elseif node ~= me and not seen[node] and reads_format(node, alive[node]) then
        seen[node] = true
        if batches[node] == nil then batches[node] = {}; order[#order + 1] = node end
        table.insert(batches[node], ARGV[i + 1])
      end
    end
  end
  first_key = first_key + key_count
end
for _, node in ipairs(order) do
  redis.call('PUBLISH', channel_prefix .. node, '[' .. table.concat(batches[node], ',') .. ']')
end
return {#order, unread}
"""

# On a Redis Cluster a script may touch only keys it is given, all in one slot (the hash tag of
# `keys.cluster_prefix`), and cannot SPUBLISH to another slot's channel. So this one is also given
# the liveness keys of the nodes this manager knows of, and returns the batches, which Python
# publishes (`_route_sharded`). KEYS: the route sets, as above, then the liveness keys of the
# known nodes. ARGV: this node, how many KEYS are route sets, the known nodes (in the order of
# their keys), then for each emit how many route sets are its, and the emit. Returns {the nodes
# met that were not known, the known nodes found dead, the live nodes reading none of this
# release's formats (skipped, as on one Redis), then node, batch, node, batch...}. A node not
# known is published to, as if alive (at worst one batch to nobody), and known from then on.
_ROUTE_SHARDED = """
local me, route_count = ARGV[1], tonumber(ARGV[2])
local alive_key, unknown, dead = {}, {}, {}
for k = route_count + 1, #KEYS do alive_key[ARGV[2 + k - route_count]] = KEYS[k] end
local batches, order, alive, first_key = {}, {}, {}, 1
""" + _READS_FORMAT_LUA + """
for i = 3 + #KEYS - route_count, #ARGV, 2 do
  local key_count, seen = tonumber(ARGV[i]), {}
  for k = first_key, first_key + key_count - 1 do
    for _, node in ipairs(redis.call('SMEMBERS', KEYS[k])) do
      if alive[node] == nil then
        if alive_key[node] == nil then
          alive[node] = ''
          if node ~= me then unknown[#unknown + 1] = node end
        else
          alive[node] = redis.call('GET', alive_key[node])
          if not alive[node] then dead[#dead + 1] = node end
        end
      end
      if not alive[node] then
        redis.call('SREM', KEYS[k], node)
      elseif node ~= me and not seen[node] and (alive[node] == '' or reads_format(node, alive[node])) then
        seen[node] = true
        if batches[node] == nil then batches[node] = {}; order[#order + 1] = node end
        table.insert(batches[node], ARGV[i + 1])
      end
    end
  end
  first_key = first_key + key_count
end
local result = {unknown, dead, unread}
for _, node in ipairs(order) do
  result[#result + 1] = node
  result[#result + 1] = '[' .. table.concat(batches[node], ',') .. ']'
end
return result
"""


class RoutedRedisManager(AsyncPubSubManager):
    name = "parley-routed-redis"

    def __init__(self, url: str, prefix: str, node_id: str | None = None, write_only: bool = False,
                 received: Counter | None = None, liveness: NodeLivenessSettings | None = None,
                 unreadable: Counter | None = None):
        """`liveness` (HEARTBEAT_SECONDS, NODE_TTL_SECONDS) is required of a node that listens;
        a write-only manager (history, presence) holds no sockets and keeps no key. `unreadable`
        (labelled by reason) counts the pub/sub payloads this node could not read."""
        prefix = key_prefix(url, prefix)
        super().__init__(channel=sio_channel(prefix), write_only=write_only, logger=log)
        if liveness is None and not write_only:
            raise ValueError("a listening node needs its liveness settings")
        self._prefix = prefix
        self.node_id = node_id
        self._liveness = liveness
        self._redis = connect(url, socket_connect_timeout=2, socket_timeout=5)
        self._cluster = is_cluster(url)
        # On a cluster: the nodes whose liveness keys the routing script is given (see `_route_sharded`).
        self._known_nodes: set[str] = set()
        self._route_sharded_script = self._redis.register_script(_ROUTE_SHARDED) if self._cluster else None
        self._received = received
        self._unreadable = unreadable
        self._unread_nodes_logged: set[str] = set()  # nodes reading none of our formats, warned of once
        # node -> (when its liveness key was read, whether it reads our format): NODE_FORMAT_KNOWN_SECONDS.
        self._node_formats: dict[str, tuple[float, bool]] = {}
        self._registered: set[str] = set()  # routed rooms (user and presence) this node has entered in the registry
        # Registered rooms whose last socket left since the last refresh (`basic_leave_room`):
        # the refresh unregisters those still empty, rather than scanning every room of the node.
        self._emptied: set[str] = set()
        # Rooms the refresh is taking this node out of now, each with the end of that call.
        self._unregistering: dict[str, asyncio.Future] = {}
        # The rooms of each socket besides the two every socket has (None, the namespace, and its
        # own sid room), namespace -> sid -> rooms: kept by basic_enter_room / basic_leave_room,
        # read by basic_disconnect. A list: a socket is in a few rooms (its user's, the presence
        # rooms it watches), and a list of one costs a third of a set (memory per socket, issue 21).
        self._rooms_of: dict[str, dict[str, list]] = {}
        # A registration failed (Redis away, or a pooled connection that died with a restart):
        # the next refresh writes every entry again, whatever the liveness key says.
        self._register_again = False
        self._refresher: asyncio.Task | None = None
        self._route_and_publish = self._redis.register_script(_ROUTE_AND_PUBLISH)
        self._register_script = self._redis.register_script(_REGISTER)
        # One script call at a time (so emits keep their order) carries every emit queued meanwhile.
        self._publisher: Batcher[tuple[list[str], bytes], None] = Batcher(
            self._publish_batch, max_batch=MAX_EMITS_PER_CALL)
        # A connect storm registers its users in a few pipelines, not one connection per socket.
        self._registrar: Batcher[str, None] = Batcher(self._register_batch, max_batch=MAX_ROOMS_PER_CALL)
        # Set while Redis has confirmed every channel of `_listen`: until then, a message
        # published to this node is lost, so the node must not be ready.
        self._subscribed = asyncio.Event()
        # The gateway's hooks (see the module docstring): on_catch_up() and packet_for(encoded, event, args).
        self.on_catch_up = None
        self.packet_for = None
        self._catch_up_request: asyncio.Task | None = None  # broadcasting one, after a publish given up

    # --- routing ---------------------------------------------------------------------------------

    async def emit(self, event, data, namespace=None, room=None, skip_sid=None, callback=None, to=None, **kwargs):
        """An emit to user rooms (or presence rooms) goes only to the nodes holding them, batched with the emits made
        meanwhile; anything else takes python-socketio's path. Measured (bench/RESULTS.md,
        appendix, "What each change did", row "routed emits batched per publish, orjson for
        Socket.IO (6ea35dc)"): 2,000/s p99 8,365 -> 2,962 ms, CPU 1.66 -> 1.06 ms a message."""
        target = to or room
        namespace = namespace or "/"
        rooms = _routed_rooms(target)
        payload = list(data) if isinstance(data, tuple) else [data]
        message = {"method": "emit", "event": event, "data": payload, "binary": False, "namespace": namespace,
                   "room": target, "skip_sid": skip_sid, "callback": None, "host_id": self.host_id}
        encoded = _encode(message) if rooms and callback is None and not kwargs.get("ignore_queue") else None
        if encoded is None:
            local_socket = isinstance(target, str) and self.server is not None and self.is_connected(target, namespace)
            if local_socket and callback is None:
                # A socket of this node: no other node could deliver it.
                return await self._emit_here(event, data, namespace, target, skip_sid)
            return await super().emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid,
                                      callback=callback, to=to, **kwargs)
        if self.server is not None:  # this node's own sockets, directly
            await self._emit_here(event, data, namespace, target, skip_sid)
        self._publish_routed(encoded, rooms)

    async def emit_to_socket(self, event: str, data, sid: str, node_id: str | None) -> None:
        """An emit to one socket whose node is known (a call's party, issue 17): delivered here if
        it is this node's, else published on that node's channel alone, so no other node decodes
        it (python-socketio would publish it to every node). A socket gone, or a node dead, loses
        the emit, as a socket that disconnected loses any; so does a node that reads none of this
        release's routing formats (its liveness key says which it reads: one GET, then taken as known
        for NODE_FORMAT_KNOWN_SECONDS)."""
        if node_id is None or node_id == self.node_id:
            await self._emit_here(event, data, "/", sid, None)
            return
        message = {"method": "emit", "event": event, "data": [data], "binary": False, "namespace": "/",
                   "room": sid, "skip_sid": None, "callback": None, "host_id": self.host_id}
        try:
            if not await self._node_reads_our_format(node_id):
                return
            await self._publish_to_node(node_id, orjson.dumps([message]))
        except (RedisError, OSError) as exc:
            log.warning("could not publish %s to node %s: %r", event, node_id, exc)

    async def _handle_emit(self, message):
        """An emit from another node (pub/sub) for sockets here, delivered by `_emit_here` (its
        measured reason there); callbacks and binary data keep python-socketio's path."""
        if message.get("callback") is not None or message.get("binary"):
            return await super()._handle_emit(message)
        data = message["data"]
        await self._emit_here(message["event"], data[0] if len(data) == 1 else tuple(data),
                              message.get("namespace"), message.get("room"), message.get("skip_sid"))

    async def _emit_here(self, event, data, namespace, room, skip_sid) -> None:
        """An emit without an ack callback to this node's sockets in `room`: encoded once, then
        handed to each socket in turn. python-socketio's own makes a task per socket and waits on
        them all (a tenth of a busy gateway's CPU); sending never waits here (see the gateway's
        websocket transport), so neither does this. Measured with the lean transport
        (bench/RESULTS.md, appendix, "Second session", table "Each change", row "lean websocket
        transport, local emits without tasks, ... (7a29971, 035605e)"): 3,000/s p99 1,041 ->
        247 ms, each gateway 0.185 -> 0.151 CPU-ms a message."""
        skipped = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        recipients = [eio_sid for sid, eio_sid in self.get_participants(namespace or "/", room) if sid not in skipped]
        if not recipients:
            return
        encoded = self.server.packet_class(EVENT, namespace=namespace, data=[event] + args).encode()
        if isinstance(encoded, str) and self.packet_for is not None:
            eio_packets = [self.packet_for(encoded, event, args)]
        else:
            eio_packets = [eio_packet.Packet(eio_packet.MESSAGE, part)
                           for part in (encoded if isinstance(encoded, list) else [encoded])]
        for eio_sid in recipients:
            for part in eio_packets:
                await self.server._send_eio_packet(eio_sid, part)

    async def _publish(self, data):
        """python-socketio's own messages (other rooms, disconnects, acks): every node."""
        await self._publish_to_every_node(fast_json.dumps(data).encode())

    def _publish_routed(self, encoded: bytes, rooms: list[str]) -> None:
        """Queued for the next publish, not awaited: the emitter goes on (its socket's ack leaves
        with the frames of that turn), and emits still leave in order."""
        keys = [room_nodes_key(self._prefix, room) for room in rooms]
        self._publisher.submit_nowait((keys, encoded)).add_done_callback(_log_publish_failure)

    async def _publish_batch(self, emits: list[tuple[list[str], bytes]]) -> list[None]:
        if self._cluster:
            await self._route_sharded(emits)
            return [None] * len(emits)
        args: list = [self.node_id or "", node_channel(self._prefix, ""), node_alive_key(self._prefix, "")]
        for keys, encoded in emits:
            args += [len(keys), encoded]
        try:
            _, unread = await self._route_and_publish(keys=[key for keys, _ in emits for key in keys], args=args)
            if unread:
                self._skipped_unread_nodes([node.decode() for node in unread])
        except (RedisError, OSError) as exc:
            log.warning("routed publish failed (%r): publishing to every node", exc)
            await self._publish_to_every_node(b"[" + b",".join(encoded for _, encoded in emits) + b"]")
        return [None] * len(emits)

    async def _publish_to_node(self, node_id: str, payload: bytes) -> None:
        if self._cluster:
            await self._redis.spublish(node_channel(self._prefix, node_id), payload)
        else:
            await self._redis.publish(node_channel(self._prefix, node_id), payload)

    # --- on a Redis Cluster ----------------------------------------------------------------------
    # The node channels are sharded (SPUBLISH / SSUBSCRIBE): a batch for a node goes through the
    # shard owning that node's channel alone, so fan-out spreads over the shards. The routing
    # registry (route sets, liveness keys) shares one slot, as its script needs.

    async def _route_sharded(self, emits: list[tuple[list[str], bytes]]) -> None:
        """`_ROUTE_SHARDED`, then one pipeline of SPUBLISHes, a batch for each node concerned.
        What Redis did not take (a shard failing over) is caught up, not published twice: a
        node that got its batch would deliver it again from the shared channel."""
        route_keys = [key for keys, _ in emits for key in keys]
        known = sorted(self._known_nodes)
        args: list = [self.node_id or "", len(route_keys), *known]
        for keys, encoded in emits:
            args += [len(keys), encoded]
        try:
            unknown, dead, unread, *batches = await self._route_sharded_script(
                keys=route_keys + [node_alive_key(self._prefix, node) for node in known], args=args)
        except (RedisError, OSError) as exc:
            log.warning("routed publish failed (%r): publishing to every node", exc)
            await self._publish_to_every_node(b"[" + b",".join(encoded for _, encoded in emits) + b"]")
            return
        if unread:
            self._skipped_unread_nodes([_text(node) for node in unread])
        self._known_nodes.update(_text(node) for node in unknown)
        self._known_nodes.difference_update(_text(node) for node in dead)
        if not batches:
            return
        nodes = [_text(node) for node in batches[::2]]
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for node, batch in zip(nodes, batches[1::2]):
                    pipe.spublish(node_channel(self._prefix, node), batch)
                results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            results = [exc] * len(nodes)
        failures = {node: result for node, result in zip(nodes, results) if isinstance(result, Exception)}
        if failures:
            log.warning("routed publish to node(s) %s failed (%r): a catch-up is requested",
                        ", ".join(failures), next(iter(failures.values())))
            self._request_catch_up()

    async def _subscribe(self, channels: list[str], refresh: bool):
        """A pub/sub connection subscribed to `channels` (the shared one, then this node's).
        On a cluster: to the master owning this node's channel, with SSUBSCRIBE for it and
        SUBSCRIBE for the shared one (classic pub/sub reaches every cluster node); after a loss
        (`refresh`) the cluster's map is read again, as a failover may have moved the slot."""
        if not self._cluster:
            pubsub = self._redis.pubsub()
            await pubsub.subscribe(*channels)
            return pubsub
        try:
            await self._redis.initialize()
            if refresh:
                await self._redis.nodes_manager.initialize()
            owner = self._redis.get_node_from_key(channels[1])
        except RedisClusterException as exc:  # mid-failover: the slot has no master yet
            raise redis.ConnectionError(f"no master for this node's channel yet: {exc}") from exc
        client = redis.Redis.from_pool(ConnectionPool(connection_class=owner.connection_class, **owner.connection_kwargs))
        pubsub = client.pubsub()
        await pubsub.subscribe(channels[0])
        await pubsub.ssubscribe(channels[1])
        return pubsub

    async def _publish_to_every_node(self, payload: bytes) -> None:
        """On the shared channel, which every node decodes."""
        for attempt in (1, 2):
            try:
                await self._redis.publish(self.channel, payload)
                return
            except (RedisError, OSError) as exc:
                if attempt == 2:
                    # Not re-published: every node catches up from history once Redis is back.
                    log.warning("publish to every node failed twice, giving up (a catch-up is requested "
                                "for when Redis is back): %r", exc)
                    self._request_catch_up()

    # --- the routing format (route_format: versioned for rolling upgrades) -------------------------

    async def _node_reads_our_format(self, node_id: str) -> bool:
        """Whether a node's liveness key advertises the format this release writes (a node that
        advertises nothing is taken to read it, as the previous release does); read again once
        NODE_FORMAT_KNOWN_SECONDS have passed."""
        now = time.monotonic()
        known = self._node_formats.get(node_id)
        if known is not None and now - known[0] < NODE_FORMAT_KNOWN_SECONDS:
            reads_ours = known[1]
        else:
            reads = route_format.advertised(await self._redis.get(node_alive_key(self._prefix, node_id)))
            reads_ours = route_format.newest_shared(reads) is not None
            if len(self._node_formats) >= NODE_FORMATS_KEPT:
                self._node_formats = {node: reading for node, reading in self._node_formats.items()
                                      if now - reading[0] < NODE_FORMAT_KNOWN_SECONDS}
            self._node_formats[node_id] = (now, reads_ours)
        if not reads_ours:
            self._skipped_unread_nodes([node_id])
        return reads_ours

    def _skipped_unread_nodes(self, nodes: list[str]) -> None:
        """Live nodes that read none of this release's formats got nothing: a release skipped in an
        upgrade (each release reads the format of the one before). Logged once a node."""
        for node in nodes:
            if node not in self._unread_nodes_logged:
                self._unread_nodes_logged.add(node)
                log.warning("node %s reads none of the routing formats this node writes (%s): it is sent "
                            "nothing; upgrade one release at a time", node, route_format.FORMAT)

    def _decode_payload(self, data: bytes) -> list:
        """The messages of one pub/sub payload; an unreadable one is counted, logged and dropped,
        and the listener goes on."""
        try:
            return route_format.decode(data)
        except route_format.UnreadablePayload as exc:
            if self._unreadable is not None:
                self._unreadable.labels(exc.reason).inc()
            log.warning("dropped a pub/sub payload this node cannot read (%s): %r", exc, data[:80])
            return []

    def _request_catch_up(self) -> None:
        if self._catch_up_request is None or self._catch_up_request.done():
            self._catch_up_request = asyncio.ensure_future(self._broadcast_catch_up())

    async def _broadcast_catch_up(self) -> None:
        """Asks every node to catch up, retrying until Redis takes the request."""
        attempt = 0
        while True:
            await asyncio.sleep(LISTEN_RETRY_SECONDS[min(attempt, len(LISTEN_RETRY_SECONDS) - 1)])
            try:
                await self._redis.publish(self.channel, orjson.dumps({"method": CATCH_UP_METHOD}))
                log.info("catch-up requested of every node")
                return
            except (RedisError, OSError) as exc:
                attempt += 1
                log.info("catch-up request not sent yet: %r", exc)

    # --- the registry of which nodes hold which users --------------------------------------------

    async def enter_room(self, sid, namespace, room, eio_sid=None):
        """Also registers the node for a user's room or a presence room, so routed emits find it
        (the routing above)."""
        await super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        if not room.startswith(ROUTED_ROOM_PREFIXES) or self.write_only:
            return
        if (unregistering := self._unregistering.get(room)) is not None:
            # The refresh is taking this node out of the room's set (its last socket had left):
            # registered again once that is done, or the socket that just came would hear nothing.
            await asyncio.shield(unregistering)
        if room not in self._registered:
            # Registered before the connect completes: from now on, emits for the user reach us.
            await self._registrar.submit(room)

    async def _register_batch(self, rooms: list[str]) -> list[None]:
        await self._register(sorted(set(rooms)))
        return [None] * len(rooms)

    async def _register(self, rooms: list[str], every_room: bool = False) -> bool:
        """Puts this node in the route sets of `rooms` (and says it is alive: without its key,
        emits would skip it); whether Redis took it. `every_room`: these are all this node's."""
        alive = node_alive_key(self._prefix, self.node_id)
        args = [self.node_id, route_format.advertisement(), self._ttl_ms, USER_ROUTE_TTL_SECONDS]
        try:
            # A refresh's every room: a call per MAX_ROOMS_PER_CALL, so no one call holds Redis long.
            for start in range(0, max(len(rooms), 1), MAX_ROOMS_PER_CALL):
                keys = [room_nodes_key(self._prefix, room) for room in rooms[start:start + MAX_ROOMS_PER_CALL]]
                await self._register_script(keys=[alive, *keys], args=args)
            self._registered.update(rooms)
            if every_room:
                self._register_again = False
            return True
        except (RedisError, OSError) as exc:
            # Until the next refresh succeeds, emits for these users reach nobody here (the
            # refresh then catches them up); so keep trying, loudly.
            self._register_again = True
            log.warning("could not register %d room(s): %r", len(rooms), exc)
            return False

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        """python-socketio's, and the room noted among the socket's (for `basic_disconnect`)."""
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if room is not None and room != sid:
            rooms = self._rooms_of.setdefault(namespace, {}).setdefault(sid, [])
            if room not in rooms:
                rooms.append(room)

    def basic_leave_room(self, sid, namespace, room):
        """python-socketio's, which deletes a room when its last socket leaves (a disconnect
        leaves each room through it): a registered routed room left empty is noted for the refresh.

        Measured: the refresh scanned every room of the node each heartbeat, 10 % of an idle
        gateway's CPU with 15,000 sockets (py-spy, 250 Hz, 30 s; `python -m bench.idle_bench`)."""
        super().basic_leave_room(sid, namespace, room)
        sockets = self._rooms_of.get(namespace)
        if sockets is not None and (rooms := sockets.get(sid)) is not None and room in rooms:
            rooms.remove(room)
            if not rooms:
                del sockets[sid]
        if room in self._registered and namespace == "/" and not self.rooms.get("/", {}).get(room):
            self._emptied.add(room)

    def basic_disconnect(self, sid, namespace, **kwargs):
        """python-socketio 5.18.1's, but the socket leaves its own rooms (`_rooms_of`) where
        python-socketio copies and scans every room of the namespace to find them.

        Measured: with python-socketio's, N sockets of a node disconnecting at once cost O(N x
        rooms): 1.8 s of the event loop for 5,000, 19 s for 15,000 (the manager alone); 10,000
        sockets over two nodes all closed at once were gone from the gateways and presence after
        14.6 s, 2.0 gateway CPU-ms a disconnect, against 1.3 s and 0.10 here
        (`python -m bench.presence_bench --sockets 10000`). The rest (callbacks, pending lists)
        is python-socketio 5.18.1's (tests/unit/test_library_seams.py notices a change there)."""
        if namespace not in self.rooms:
            return
        for room in [*self._rooms_of.get(namespace, {}).get(sid, ()), sid, None]:
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            if sid in pending.get(namespace, ()):
                pending[namespace].remove(sid)
                if not pending[namespace]:
                    del pending[namespace]

    def get_rooms(self, sid, namespace):
        """The rooms a socket is in, from `_rooms_of` (python-socketio scans every room)."""
        others = self._rooms_of.get(namespace, {}).get(sid, [])
        return [sid, *others] if sid in self.rooms.get(namespace, {}).get(sid, ()) else list(others)

    def _local_routed_rooms(self) -> set[str]:
        return {room for room, members in self.rooms.get("/", {}).items()
                if isinstance(room, str) and room.startswith(ROUTED_ROOM_PREFIXES) and members}

    @property
    def _ttl_ms(self) -> int:
        return int(self._liveness.node_ttl_seconds * 1000)

    async def _refresh_forever(self) -> None:
        """From start-up on: a live node with no user yet is alive too (presence asks)."""
        written = time.monotonic()
        while True:
            written = await self._refresh(written)
            await asyncio.sleep(self._liveness.heartbeat_seconds)

    async def _refresh(self, written: float) -> float:
        """Keeps this node's liveness key alive and its entries right; when they were last all written."""
        emptied, self._emptied = self._emptied, set()
        here = self.rooms.get("/", {})
        gone = sorted(room for room in emptied if room in self._registered and not here.get(room))
        if gone and not await self._unregister(gone):
            self._emptied.update(gone)  # the next refresh tries again
        try:
            # GET: the previous value, None if the key had lapsed (Redis unreachable for longer
            # than its TTL, or restarted empty): other nodes may have dropped our entries then.
            lapsed = await self._redis.set(node_alive_key(self._prefix, self.node_id), route_format.advertisement(),
                                           px=self._ttl_ms, get=True) is None
        except (RedisError, OSError) as exc:
            log.warning("could not refresh this node's liveness key: %r", exc)
            return written
        if lapsed or self._register_again or time.monotonic() - written > USER_ROUTE_TTL_SECONDS / 2:
            failed_before = self._register_again
            if not await self._register(sorted(self._local_routed_rooms()), every_room=True):
                return written
            if failed_before:  # emits for the users it missed reached nobody here meanwhile
                self._catch_up()
            return time.monotonic()
        return written

    async def _unregister(self, rooms: list[str]) -> bool:
        """Takes this node out of the route sets of `rooms`; whether Redis took it. A socket that
        enters one of them meanwhile waits for this, then registers it again (`enter_room`)."""
        done = asyncio.get_running_loop().create_future()
        self._unregistering.update(dict.fromkeys(rooms, done))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for room in rooms:
                    pipe.srem(room_nodes_key(self._prefix, room), self.node_id)
                await pipe.execute()
            self._registered.difference_update(rooms)
            return True
        except (RedisError, OSError) as exc:
            # Some may have been taken out all the same: those a socket entered meanwhile are
            # registered again by it; the others stay noted, and the next refresh tries again.
            here = self.rooms.get("/", {})
            self._registered.difference_update(room for room in rooms if here.get(room))
            log.warning("could not unregister %d room(s): %r", len(rooms), exc)
            return False
        finally:
            for room in rooms:
                if self._unregistering.get(room) is done:
                    del self._unregistering[room]
            done.set_result(None)

    # --- listening -------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts listening now, at the app's start-up.

        python-socketio calls `initialize` on the server's first connection, so a node that
        nobody had connected to yet was not subscribed, and a message published to its first
        user while it subscribed was lost (seen by them only after a `sync`). The server's own
        flag is raised, so that connection does not start a second listener.
        """
        if self.server.manager_initialized:
            return
        self.server.manager_initialized = True
        self.initialize()

    async def subscribed(self) -> None:
        """A readiness check: raises until Redis has confirmed this node's subscriptions (and
        again while the pub/sub connection is being restored)."""
        if self.write_only:
            return
        if not self._subscribed.is_set():
            raise NotSubscribed("not yet subscribed to this node's pub/sub channels")

    def initialize(self):
        """Also starts refreshing this node's liveness key (for routed emits and presence)."""
        super().initialize()
        if not self.write_only:
            self._refresher = asyncio.ensure_future(self._refresh_forever())

    async def _listen(self):
        """python-socketio's pub/sub messages, and the batches of routed emits for this node,
        from this node's channel and the shared one; re-subscribes after a lost connection."""
        channels = [self.channel, node_channel(self._prefix, self.node_id)]
        attempt = 0
        while True:
            # Subscribe confirmations are read (not ignored): they say when the node is reachable.
            pubsub = None
            try:
                pubsub = await self._subscribe(channels, refresh=attempt > 0)
                lost = attempt > 0
                if lost:
                    log.info("pub/sub listening again")
                    # Redis may have restarted empty: put this node's users back at once (before
                    # the catch-up reads history: what is emitted after that finds this node),
                    # or start over: a catch-up before it would leave a gap after it.
                    if not await self._register(sorted(self._local_routed_rooms()), every_room=True):
                        raise redis.ConnectionError("could not register this node's users again")
                attempt = 0
                confirmed: set[bytes] = set()
                async for message in pubsub.listen():
                    if message["type"] in ("subscribe", "ssubscribe"):
                        confirmed.add(message["channel"])
                        if len(confirmed) == len(channels):
                            self._subscribed.set()
                            if lost:  # what was published meanwhile reached nobody here
                                self._catch_up()
                    elif message["type"] == "sunsubscribe":
                        # Not asked for: the shard holding this node's channel moved (a failover).
                        raise redis.ConnectionError("this node's channel moved to another shard")
                    elif message["type"] in ("message", "smessage"):
                        if self._received is not None:
                            self._received.inc()
                        # A batch of routed emits is an array; python-socketio's own, one object.
                        for item in self._decode_payload(message["data"]):
                            if isinstance(item, dict) and item.get("method") == CATCH_UP_METHOD:
                                self._catch_up()
                            else:
                                yield item
            except (RedisError, OSError) as exc:
                delay = LISTEN_RETRY_SECONDS[min(attempt, len(LISTEN_RETRY_SECONDS) - 1)]
                log.warning("pub/sub connection lost (%r), retrying in %s s", exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
            finally:
                self._subscribed.clear()
                if pubsub is not None:
                    await pubsub.aclose()

    def _catch_up(self) -> None:
        if self.on_catch_up is not None:
            self.on_catch_up()

    async def close(self) -> None:
        """Stops listening and refreshing, leaves the registry, drops its liveness key, closes the connection."""
        await self._publisher.close()  # what is queued still goes out
        await self._registrar.close()
        await cancel_and_wait([getattr(self, "thread", None), self._refresher, self._catch_up_request])
        if self._registered and not self.write_only:
            await self._unregister(sorted(self._registered))
        if self._refresher is not None:  # this node is gone: routing and presence need not wait for the TTL
            try:
                await self._redis.delete(node_alive_key(self._prefix, self.node_id))
            except (RedisError, OSError) as exc:
                log.warning("could not remove this node's liveness key (it lapses by itself): %r", exc)
        await self._redis.aclose()


class NotSubscribed(RuntimeError):
    """This node is not (yet, or any more) subscribed to its pub/sub channels."""


def _log_publish_failure(published: asyncio.Future) -> None:
    if not published.cancelled() and (exc := published.exception()) is not None:
        log.error("routed publish failed: %r", exc)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _encode(message: dict) -> bytes | None:
    """The emit as JSON, or None when only python-socketio's own path can carry it: binary
    data, or an integer beyond 64 bits, which orjson refuses and JSON allows."""
    try:
        return orjson.dumps(message)
    except TypeError:
        return None


def _routed_rooms(target) -> list[str]:
    """The target's rooms when every one of them is a routed one (user or presence); else an empty list."""
    rooms = [target] if isinstance(target, str) else list(target or [])
    if rooms and all(isinstance(room, str) and room.startswith(ROUTED_ROOM_PREFIXES) for room in rooms):
        return rooms
    return []
