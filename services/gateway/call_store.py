"""Call state in Redis (issue 17): every key and script of a call, in one place.

A call is one hash (`keys.call_key`): caller, callee, kind, state (`ringing` -> `active` ->
`ended`), each party's socket and the node holding it, and the times it started, was answered
and ended (Redis's clock, in ms, so nodes' clocks never disagree). Each user in a live call has
a busy marker (`keys.call_busy_key`) holding the call id. Every transition is one Lua script, so
two nodes racing (an answer on node b while the ring times out on node a's sweeper) see one
winner: the script that ends a call returns it once, to one node, which tells both parties and
stores the call's message.

Nothing lives only in a node's memory. What a node keeps is the list of call parties whose
socket it holds, and it renews their leases: in the sorted set `keys.calls_due_key`,
`<id>|caller` and `<id>|callee` are scored with the moment each lease lapses, and `<id>|ring`
with the ring deadline. Every gateway runs the sweeper (`sweep`), which ends what is due: a call
still ringing at its deadline is `missed`; a party whose lease lapsed (its socket left, or its
node died, and no node renewed it for `lost_after`) is `lost`. Any number of nodes may sweep at
once: each due entry is taken by one script call. Every key has a TTL (renewed with the leases),
so even with every gateway gone, nobody stays busy longer than that.
"""

import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from ..shared.errors import ServiceUnavailable
from ..shared.keys import call_busy_key, call_key, calls_due_key, node_alive_key, user_nodes_key
from ..shared.redis_client import connect, key_prefix

log = logging.getLogger(__name__)

# An ended call's hash stays this long, so a late event on it is told "ended", not "unknown".
ENDED_KEEP_MS = 60_000
# Due entries one sweep ends at most (the next sweep takes the rest).
SWEEP_BATCH = 200
# Redis connections one node's call store holds at most.
MAX_CONNECTIONS = 16

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Ends a live call: {id, reason, caller, callee, kind, answeredAt or '', endedAt}, or nil.
local function finish(call_prefix, due_key, busy_prefix, id, reason, keep_ms, now)
  local key = call_prefix .. id
  local c = redis.call('HMGET', key, 'state', 'caller', 'callee', 'kind', 'answeredAt')
  if c[1] ~= 'ringing' and c[1] ~= 'active' then return nil end
  redis.call('HSET', key, 'state', 'ended', 'reason', reason, 'endedAt', now)
  redis.call('PEXPIRE', key, keep_ms)
  redis.call('ZREM', due_key, id .. '|ring', id .. '|caller', id .. '|callee')
  for _, user in ipairs({c[2], c[3]}) do
    if redis.call('GET', busy_prefix .. user) == id then redis.call('DEL', busy_prefix .. user) end
  end
  return {id, reason, c[2], c[3], c[4], c[5] or '', tostring(now)}
end
"""

# KEYS: the call, due, the caller's busy marker, the callee's, the callee's route set.
# ARGV: id, caller, callee, kind, caller sid, caller node, ring ms, lease ms, live ttl ms, keep ms,
# the node liveness key prefix. The callee is offline when no live node holds a socket of theirs.
_START = _PRELUDE + """
local id = ARGV[1]
if redis.call('EXISTS', KEYS[3]) == 1 then return {'caller_busy'} end
local online = false
for _, node in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  if redis.call('EXISTS', ARGV[11] .. node) == 1 then online = true; break end
end
local now = now_ms()
local reason = ''
if not online then reason = 'offline' elseif redis.call('EXISTS', KEYS[4]) == 1 then reason = 'busy' end
redis.call('HSET', KEYS[1], 'caller', ARGV[2], 'callee', ARGV[3], 'kind', ARGV[4], 'callerSid', ARGV[5],
           'callerNode', ARGV[6], 'startedAt', now)
if reason ~= '' then
  redis.call('HSET', KEYS[1], 'state', 'ended', 'reason', reason, 'endedAt', now)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[10]))
  return {'ended', reason, tostring(now)}
end
local ttl = tonumber(ARGV[7]) + tonumber(ARGV[9])
redis.call('HSET', KEYS[1], 'state', 'ringing')
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[3], id, 'PX', ttl)
redis.call('SET', KEYS[4], id, 'PX', ttl)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[7]), id .. '|ring', now + tonumber(ARGV[8]), id .. '|caller')
return {'ringing', tostring(now)}
"""

# KEYS: the call, due. ARGV: id, user, sid, node, lease ms. Only the callee, only while ringing.
_ANSWER = _PRELUDE + """
local c = redis.call('HMGET', KEYS[1], 'state', 'caller', 'callee', 'callerSid', 'callerNode')
if not c[1] or c[3] ~= ARGV[2] then return {'unknown'} end
if c[1] ~= 'ringing' then return {'not_ringing', c[1]} end
local now = now_ms()
redis.call('HSET', KEYS[1], 'state', 'active', 'calleeSid', ARGV[3], 'calleeNode', ARGV[4], 'answeredAt', now)
redis.call('ZREM', KEYS[2], ARGV[1] .. '|ring')
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[1] .. '|callee')
return {'active', c[2], c[4], c[5]}
"""

# KEYS: due. ARGV: call prefix, busy prefix, keep ms, id, user, reject (1: `rejectCall`).
# A party ends a live call: the callee refusing one that rings is `rejected`; anything else `ended`.
_END = _PRELUDE + """
local id, user = ARGV[4], ARGV[5]
local c = redis.call('HMGET', ARGV[1] .. id, 'state', 'caller', 'callee')
if not c[1] or (c[2] ~= user and c[3] ~= user) then return {'unknown'} end
if c[1] ~= 'ringing' and c[1] ~= 'active' then return {'not_live', c[1]} end
if ARGV[6] == '1' and c[1] ~= 'ringing' then return {'not_ringing', c[1]} end
local reason = 'ended'
if c[1] == 'ringing' and user == c[3] then reason = 'rejected' end
local ended = finish(ARGV[1], KEYS[1], ARGV[2], id, reason, tonumber(ARGV[3]), now_ms())
return {'ended', ended}
"""

# KEYS: due. ARGV: call prefix, busy prefix, keep ms, batch. Ends what is due, each once:
# a ring past its deadline (`missed`), a lapsed lease (`lost`); drops entries of ended calls.
_SWEEP = _PRELUDE + """
local now = now_ms()
local ended = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))) do
  local bar = string.find(member, '|', 1, true)
  local id, role = string.sub(member, 1, bar - 1), string.sub(member, bar + 1)
  local state = redis.call('HGET', ARGV[1] .. id, 'state')
  local done = nil
  if role == 'ring' and state == 'ringing' then
    done = finish(ARGV[1], KEYS[1], ARGV[2], id, 'missed', tonumber(ARGV[3]), now)
  elseif role ~= 'ring' and (state == 'ringing' or state == 'active') then
    done = finish(ARGV[1], KEYS[1], ARGV[2], id, 'lost', tonumber(ARGV[3]), now)
  end
  if done then table.insert(ended, done) else redis.call('ZREM', KEYS[1], member) end
end
return ended
"""

# KEYS: due. ARGV: call prefix, busy prefix, lease ms, live ttl ms, then `<id>|<role>` members.
# Renews the leases of parties this node holds (and the call's TTLs); returns the members whose
# call is no longer live, for the node to forget, each with its state ('' when the call is gone
# from Redis altogether: a Redis restart or failover lost it).
_RENEW = _PRELUDE + """
local now = now_ms()
local gone = {}
for i = 5, #ARGV do
  local member = ARGV[i]
  local id = string.sub(member, 1, string.find(member, '|', 1, true) - 1)
  local key = ARGV[1] .. id
  local c = redis.call('HMGET', key, 'state', 'caller', 'callee')
  if c[1] == 'ringing' or c[1] == 'active' then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), member)
    local ttl = tonumber(ARGV[4])
    redis.call('PEXPIRE', key, ttl, 'GT')
    redis.call('PEXPIRE', ARGV[2] .. c[2], ttl, 'GT')
    redis.call('PEXPIRE', ARGV[2] .. c[3], ttl, 'GT')
  else
    table.insert(gone, member)
    table.insert(gone, c[1] or '')
  end
end
return gone
"""

# KEYS: due. ARGV: call prefix, `<id>|<role>`, the sid that left. The party's socket is gone (its
# node saw it disconnect): a socket of the same user may take its place (`_REBIND`) at once.
_AWAY = """
local bar = string.find(ARGV[2], '|', 1, true)
local id, role = string.sub(ARGV[2], 1, bar - 1), string.sub(ARGV[2], bar + 1)
local key = ARGV[1] .. id
if redis.call('HGET', key, role .. 'Sid') == ARGV[3] then redis.call('HSET', key, role .. 'Away', '1') end
return 0
"""

# KEYS: the user's busy marker, due. ARGV: call prefix, user, sid, node, lease ms, stale ms.
# A user's new socket comes back to their call: it becomes the party's socket when the old one is
# known to be gone (away) or has not been renewed for `stale ms` (its node died). Returns
# {id, role, other sid, other node}, {'fresh'} when the old socket may still be there, or nil.
_REBIND = _PRELUDE + """
local id = redis.call('GET', KEYS[1])
if not id then return nil end
local key = ARGV[1] .. id
local c = redis.call('HMGET', key, 'state', 'caller', 'callee')
local role = nil
if c[2] == ARGV[2] and (c[1] == 'ringing' or c[1] == 'active') then role = 'caller'
elseif c[3] == ARGV[2] and c[1] == 'active' then role = 'callee' end
if not role then return nil end
local now, lease = now_ms(), tonumber(ARGV[5])
local score = redis.call('ZSCORE', KEYS[2], id .. '|' .. role)
local away = redis.call('HGET', key, role .. 'Away') == '1'
if not score then return nil end
if not away and now + lease - tonumber(score) < tonumber(ARGV[6]) then return {'fresh'} end
redis.call('HSET', key, role .. 'Sid', ARGV[3], role .. 'Node', ARGV[4])
redis.call('HDEL', key, role .. 'Away')
redis.call('ZADD', KEYS[2], now + lease, id .. '|' .. role)
local other = role == 'caller' and 'callee' or 'caller'
local o = redis.call('HMGET', key, other .. 'Sid', other .. 'Node')
return {id, role, o[1] or '', o[2] or ''}
"""

FIELDS = ("state", "caller", "callee", "kind", "callerSid", "callerNode", "calleeSid", "calleeNode")


@dataclass(frozen=True)
class Call:
    """A call as the hash holds it (the fields an event checks)."""

    id: str
    state: str
    caller: str
    callee: str
    kind: str
    caller_sid: str | None
    caller_node: str | None
    callee_sid: str | None
    callee_node: str | None

    def party_socket(self, user_id: str) -> tuple[str | None, str | None]:
        """(sid, node) of this user's socket in the call."""
        return (self.caller_sid, self.caller_node) if user_id == self.caller else (self.callee_sid, self.callee_node)

    def other(self, user_id: str) -> str:
        return self.callee if user_id == self.caller else self.caller


@dataclass(frozen=True)
class EndedCall:
    """A call some script just ended (returned once, to one node): who tells the parties."""

    id: str
    reason: str
    caller: str
    callee: str
    kind: str
    answered_at_ms: int | None
    ended_at_ms: int

    @property
    def duration_seconds(self) -> int:
        return 0 if self.answered_at_ms is None else max(0, round((self.ended_at_ms - self.answered_at_ms) / 1000))

    @property
    def status(self) -> str:
        """What the call's message keeps: the reason, but a call its caller hung up before any
        answer is "missed" (that is what it was for the callee)."""
        return "missed" if self.reason == "ended" and self.answered_at_ms is None else self.reason


def _ended(values: list) -> EndedCall:
    call_id, reason, caller, callee, kind, answered, ended = [_text(value) for value in values]
    return EndedCall(call_id, reason, caller, callee, kind, int(answered) if answered else None, int(ended))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class CallStore:
    """The scripts above, against one Redis, under one key prefix. A Redis error becomes
    `service_unavailable` (the caller's ack says so; nothing half-done: each script is atomic)."""

    def __init__(self, url: str, prefix: str, *, ring_seconds: float, lost_after_seconds: float):
        # A bounded pool: every connecting socket asks whether its user has a call to rejoin, and
        # a connect storm (a node's users arriving at once) must queue for a few connections,
        # not open one each.
        self._redis = connect(url, max_connections=MAX_CONNECTIONS, socket_connect_timeout=2, socket_timeout=2)
        self._prefix = prefix = key_prefix(url, prefix)
        self.ring_ms = int(ring_seconds * 1000)
        self.lease_ms = int(lost_after_seconds * 1000)
        # A live call's keys outlive a lease by this much: renewed with the leases, lapsing (and
        # freeing both users) soon after every node holding the call is gone.
        self.live_ttl_ms = 3 * self.lease_ms
        self._due = calls_due_key(prefix)
        self._start = self._redis.register_script(_START)
        self._answer = self._redis.register_script(_ANSWER)
        self._end = self._redis.register_script(_END)
        self._sweep = self._redis.register_script(_SWEEP)
        self._renew = self._redis.register_script(_RENEW)
        self._away = self._redis.register_script(_AWAY)
        self._rebind = self._redis.register_script(_REBIND)

    @property
    def _call_prefix(self) -> str:
        return call_key(self._prefix, "")

    @property
    def _busy_prefix(self) -> str:
        return call_busy_key(self._prefix, "")

    async def _run(self, script, keys: list[str], args: list) -> list:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            log.warning("call store unreachable: %r", exc)
            raise ServiceUnavailable("Calls are unavailable for a moment, try again") from None

    async def start(self, call_id: str, caller: str, callee: str, kind: str, sid: str, node: str) -> tuple[str, ...]:
        """("ringing", startedAt), ("ended", "offline" | "busy", endedAt), or ("caller_busy",)."""
        keys = [call_key(self._prefix, call_id), self._due, call_busy_key(self._prefix, caller),
                call_busy_key(self._prefix, callee), user_nodes_key(self._prefix, callee)]
        args = [call_id, caller, callee, kind, sid, node, self.ring_ms, self.lease_ms, self.live_ttl_ms,
                ENDED_KEEP_MS, node_alive_key(self._prefix, "")]
        return tuple(_text(value) for value in await self._run(self._start, keys, args))

    async def answer(self, call_id: str, user_id: str, sid: str, node: str) -> tuple[str, ...]:
        """("active", caller, callerSid, callerNode), ("not_ringing", state) or ("unknown",)."""
        result = await self._run(self._answer, [call_key(self._prefix, call_id), self._due],
                                 [call_id, user_id, sid, node, self.lease_ms])
        return tuple(_text(value) for value in result)

    async def end(self, call_id: str, user_id: str, reject: bool) -> tuple[str, EndedCall | str | None]:
        """("ended", the call), ("not_live" | "not_ringing", state) or ("unknown", None)."""
        result = await self._run(self._end, [self._due], [self._call_prefix, self._busy_prefix, ENDED_KEEP_MS,
                                                          call_id, user_id, "1" if reject else "0"])
        outcome = _text(result[0])
        if outcome == "ended":
            return outcome, _ended(result[1])
        return outcome, _text(result[1]) if len(result) > 1 else None

    async def sweep(self) -> list[EndedCall]:
        """Ends the calls that are due (missed rings, lapsed leases); each is returned to one sweeper."""
        result = await self._run(self._sweep, [self._due],
                                 [self._call_prefix, self._busy_prefix, ENDED_KEEP_MS, SWEEP_BATCH])
        return [_ended(values) for values in result]

    async def renew(self, members: list[str]) -> list[tuple[str, str]]:
        """Renews the leases of `<id>|<role>` members; returns (member, state) of those whose call
        is over: state "ended", or "" when Redis no longer knows the call."""
        if not members:
            return []
        result = await self._run(self._renew, [self._due],
                                 [self._call_prefix, self._busy_prefix, self.lease_ms, self.live_ttl_ms, *members])
        values = [_text(value) for value in result]
        return list(zip(values[::2], values[1::2]))

    async def away(self, member: str, sid: str) -> None:
        """The party `<id>|<role>` lost its socket `sid` (disconnected on a live node)."""
        await self._run(self._away, [self._due], [self._call_prefix, member, sid])

    async def rebind(self, user_id: str, sid: str, node: str, stale_ms: int) -> tuple[str, ...] | None:
        """Makes `sid` the user's socket in their call if the old one is gone: (id, role, other
        sid, other node); ("fresh",) when the old one may still be there; None: no call to rejoin."""
        result = await self._run(self._rebind, [call_busy_key(self._prefix, user_id), self._due],
                                 [self._call_prefix, user_id, sid, node, self.lease_ms, stale_ms])
        return None if result is None else tuple(_text(value) for value in result)

    async def get(self, call_id: str) -> Call | None:
        try:
            values = await self._redis.hmget(call_key(self._prefix, call_id), FIELDS)
        except (RedisError, OSError) as exc:
            log.warning("call store unreachable: %r", exc)
            raise ServiceUnavailable("Calls are unavailable for a moment, try again") from None
        if values[0] is None:
            return None
        state, caller, callee, kind, caller_sid, caller_node, callee_sid, callee_node = [
            None if value is None else _text(value) for value in values]
        return Call(call_id, state, caller, callee, kind, caller_sid, caller_node, callee_sid, callee_node)

    async def calls_of(self, user_ids: list[str]) -> list[str | None]:
        """The call each user is in (its busy marker), or None: one MGET."""
        try:
            values = await self._redis.mget([call_busy_key(self._prefix, user_id) for user_id in user_ids])
        except (RedisError, OSError) as exc:
            log.warning("call store unreachable: %r", exc)
            raise ServiceUnavailable("Calls are unavailable for a moment, try again") from None
        return [None if value is None else _text(value) for value in values]

    async def busy_call(self, user_id: str) -> str | None:
        """The call this user is in, if any (tests and operators)."""
        value = await self._redis.get(call_busy_key(self._prefix, user_id))
        return None if value is None else _text(value)

    async def close(self) -> None:
        await self._redis.aclose()
