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

Every key a script touches is given to it in KEYS, as Redis asks of scripts (a Redis Cluster
routes a script by its KEYS, and tolerates undeclared keys only in the same slot; proxies and
future versions do not). Where a key's name is known only from data (the parties' busy markers
from the call's hash, the calls the sweeper finds due, the nodes in the callee's route set),
Python reads that data first, then runs the script with the keys; the script checks what was read
again and answers `retry` if it changed, and Python runs both steps again (`TRIES` times at
most; parties never change, so only a route set gaining a node meanwhile makes a start retry).
The atomicity is unchanged: every decision and write is in the one script. Round trips, before
-> now: start 1 -> 2 (SMEMBERS of the route set); end 1 -> 2 (HMGET of the parties); sweep with
nothing due 1 -> 1 (`_DUE`), with calls due 1 -> 3 (`_DUE`, one pipeline of HMGETs, the sweep);
renew 1 -> 2 (one pipeline of HMGETs); answer, away, rebind 1 (a rejoining socket's call id is
the one its MGET, `calls_of`, read).
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
# Runs of a script whose inputs, read just before, changed meanwhile (see the module docstring).
TRIES = 3

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Ends a live call: {id, reason, caller, callee, kind, answeredAt or '', endedAt}, or nil.
-- The keys: the call, due, the caller's busy marker, the callee's (checked by the caller).
local function finish(call_key, due_key, caller_busy_key, callee_busy_key, id, reason, keep_ms, now)
  local c = redis.call('HMGET', call_key, 'state', 'caller', 'callee', 'kind', 'answeredAt')
  if c[1] ~= 'ringing' and c[1] ~= 'active' then return nil end
  redis.call('HSET', call_key, 'state', 'ended', 'reason', reason, 'endedAt', now)
  redis.call('PEXPIRE', call_key, keep_ms)
  redis.call('ZREM', due_key, id .. '|ring', id .. '|caller', id .. '|callee')
  for _, busy_key in ipairs({caller_busy_key, callee_busy_key}) do
    if redis.call('GET', busy_key) == id then redis.call('DEL', busy_key) end
  end
  return {id, reason, c[2], c[3], c[4], c[5] or '', tostring(now)}
end
"""

# KEYS: the call, due, the caller's busy marker, the callee's, the callee's route set, then the
# liveness keys of the nodes read in that set. ARGV: id, caller, callee, kind, caller sid, caller
# node, ring ms, lease ms, live ttl ms, keep ms, then those nodes (ARGV[i + 5] is KEYS[i]'s). The
# callee is offline when no live node holds a socket of theirs; {'retry'}: the set gained a node.
_START = _PRELUDE + """
local id = ARGV[1]
if redis.call('EXISTS', KEYS[3]) == 1 then return {'caller_busy'} end
local alive_key = {}
for i = 6, #KEYS do alive_key[ARGV[i + 5]] = KEYS[i] end
local online = false
for _, node in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  if alive_key[node] == nil then return {'retry'} end
  if redis.call('EXISTS', alive_key[node]) == 1 then online = true; break end
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

# KEYS: the call, due, the caller's busy marker, the callee's. ARGV: id, user, reject (1:
# `rejectCall`), keep ms, the caller and callee read before ({'retry'} if they are not the call's).
# A party ends a live call: the callee refusing one that rings is `rejected`; anything else `ended`.
_END = _PRELUDE + """
local id, user = ARGV[1], ARGV[2]
local c = redis.call('HMGET', KEYS[1], 'state', 'caller', 'callee')
if not c[1] or (c[2] ~= user and c[3] ~= user) then return {'unknown'} end
if c[2] ~= ARGV[5] or c[3] ~= ARGV[6] then return {'retry'} end
if c[1] ~= 'ringing' and c[1] ~= 'active' then return {'not_live', c[1]} end
if ARGV[3] == '1' and c[1] ~= 'ringing' then return {'not_ringing', c[1]} end
local reason = 'ended'
if c[1] == 'ringing' and user == c[3] then reason = 'rejected' end
local ended = finish(KEYS[1], KEYS[2], KEYS[3], KEYS[4], id, reason, tonumber(ARGV[4]), now_ms())
return {'ended', ended}
"""

# KEYS: due. ARGV: batch. The sweep's first step: the entries due now (Redis's clock).
_DUE = _PRELUDE + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
"""

# KEYS: due, then for each call with a due entry (`_DUE`): the call, its caller's busy marker, its
# callee's. ARGV: keep ms, then for each call: id, caller, callee (as read before). Ends what is
# due, each once: a ring past its deadline (`missed`), a lapsed lease (`lost`); drops the entries
# of calls no longer live. Returns {the calls ended, how many live calls' parties were not those
# read (left for a retry)}.
_SWEEP = _PRELUDE + """
local now, keep = now_ms(), tonumber(ARGV[1])
local ended, retry = {}, 0
for i = 1, (#KEYS - 1) / 3 do
  local id, caller, callee = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local c = redis.call('HMGET', KEYS[3 * i - 1], 'state', 'caller', 'callee')
  local live = c[1] == 'ringing' or c[1] == 'active'
  if live and (c[2] ~= caller or c[3] ~= callee) then
    retry = retry + 1
  else
    for _, role in ipairs({'ring', 'caller', 'callee'}) do
      local member = id .. '|' .. role
      local score = redis.call('ZSCORE', KEYS[1], member)
      if score and tonumber(score) <= now then
        local reason = nil
        if role == 'ring' and c[1] == 'ringing' then reason = 'missed'
        elseif role ~= 'ring' and live then reason = 'lost' end
        if reason then
          table.insert(ended, finish(KEYS[3 * i - 1], KEYS[1], KEYS[3 * i], KEYS[3 * i + 1], id, reason, keep, now))
          break
        end
        redis.call('ZREM', KEYS[1], member)
      end
    end
  end
end
return {ended, retry}
"""

# KEYS: due, then for each call: the call, its caller's busy marker, its callee's. ARGV: lease ms,
# live ttl ms, then for each call: caller, callee (as read before), n, and its n `<id>|<role>`
# members. Renews the leases of parties this node holds (and the call's TTLs). Returns {the
# members whose call is no longer live, each followed by its state ('' when the call is gone from
# Redis altogether: a Redis restart or failover lost it), the members to retry (parties changed)}.
_RENEW = _PRELUDE + """
local now, lease, ttl = now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2])
local gone, retry = {}, {}
local arg = 3
for k = 2, #KEYS, 3 do
  local caller, callee, count = ARGV[arg], ARGV[arg + 1], tonumber(ARGV[arg + 2])
  local c = redis.call('HMGET', KEYS[k], 'state', 'caller', 'callee')
  local live = c[1] == 'ringing' or c[1] == 'active'
  local same = c[2] == caller and c[3] == callee
  for m = arg + 3, arg + 2 + count do
    if not live then
      table.insert(gone, ARGV[m])
      table.insert(gone, c[1] or '')
    elseif not same then
      table.insert(retry, ARGV[m])
    else
      redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[m])
    end
  end
  if live and same then
    redis.call('PEXPIRE', KEYS[k], ttl, 'GT')
    redis.call('PEXPIRE', KEYS[k + 1], ttl, 'GT')
    redis.call('PEXPIRE', KEYS[k + 2], ttl, 'GT')
  end
  arg = arg + 3 + count
end
return {gone, retry}
"""

# KEYS: the call. ARGV: role, the sid that left. The party's socket is gone (its node saw it
# disconnect): a socket of the same user may take its place (`_REBIND`) at once.
_AWAY = """
if redis.call('HGET', KEYS[1], ARGV[1] .. 'Sid') == ARGV[2] then redis.call('HSET', KEYS[1], ARGV[1] .. 'Away', '1') end
return 0
"""

# KEYS: the user's busy marker, due, the call it names. ARGV: that call's id, user, sid, node,
# lease ms, stale ms. A user's new socket comes back to their call: it becomes the party's socket
# when the old one is known to be gone (away) or has not been renewed for `stale ms` (its node
# died). Returns {id, role, other sid, other node}, {'fresh'} when the old socket may still be
# there, {'retry', id} when the marker names another call, or nil.
_REBIND = _PRELUDE + """
local id = redis.call('GET', KEYS[1])
if not id then return nil end
if id ~= ARGV[1] then return {'retry', id} end
local c = redis.call('HMGET', KEYS[3], 'state', 'caller', 'callee')
local role = nil
if c[2] == ARGV[2] and (c[1] == 'ringing' or c[1] == 'active') then role = 'caller'
elseif c[3] == ARGV[2] and c[1] == 'active' then role = 'callee' end
if not role then return nil end
local now, lease = now_ms(), tonumber(ARGV[5])
local score = redis.call('ZSCORE', KEYS[2], id .. '|' .. role)
local away = redis.call('HGET', KEYS[3], role .. 'Away') == '1'
if not score then return nil end
if not away and now + lease - tonumber(score) < tonumber(ARGV[6]) then return {'fresh'} end
redis.call('HSET', KEYS[3], role .. 'Sid', ARGV[3], role .. 'Node', ARGV[4])
redis.call('HDEL', KEYS[3], role .. 'Away')
redis.call('ZADD', KEYS[2], now + lease, id .. '|' .. role)
local other = role == 'caller' and 'callee' or 'caller'
local o = redis.call('HMGET', KEYS[3], other .. 'Sid', other .. 'Node')
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
        self.due_key = calls_due_key(prefix)
        self._start = self._redis.register_script(_START)
        self._answer = self._redis.register_script(_ANSWER)
        self._end = self._redis.register_script(_END)
        self._due_now = self._redis.register_script(_DUE)
        self._sweep = self._redis.register_script(_SWEEP)
        self._renew = self._redis.register_script(_RENEW)
        self._away = self._redis.register_script(_AWAY)
        self._rebind = self._redis.register_script(_REBIND)

    def _busy(self, user_id: str) -> str:
        return call_busy_key(self._prefix, user_id)

    def _call(self, call_id: str) -> str:
        return call_key(self._prefix, call_id)

    async def _run(self, script, keys: list[str], args: list) -> list:
        return await self._io(script(keys=keys, args=args))

    @staticmethod
    async def _io(command):
        try:
            return await command
        except (RedisError, OSError) as exc:
            log.warning("call store unreachable: %r", exc)
            raise ServiceUnavailable("Calls are unavailable for a moment, try again") from None

    @staticmethod
    def _changing() -> ServiceUnavailable:
        """What was read changed under every try (never seen: parties never change, a route set
        rarely): the event is answered as with Redis away, and the client tries again."""
        log.warning("call store: what a script was given kept changing, %d tries", TRIES)
        return ServiceUnavailable("Calls are unavailable for a moment, try again")

    async def _parties(self, call_ids: list[str]) -> list[tuple[str, str]]:
        """(caller, callee) of each call, ('', '') for a call Redis does not hold: one pipeline."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for call_id in call_ids:
                pipe.hmget(self._call(call_id), "caller", "callee")
            rows = await self._io(pipe.execute())
        return [(_text(caller) if caller is not None else "", _text(callee) if callee is not None else "")
                for caller, callee in rows]

    async def start(self, call_id: str, caller: str, callee: str, kind: str, sid: str, node: str) -> tuple[str, ...]:
        """("ringing", startedAt), ("ended", "offline" | "busy", endedAt), or ("caller_busy",)."""
        route_key = user_nodes_key(self._prefix, callee)
        args = [call_id, caller, callee, kind, sid, node, self.ring_ms, self.lease_ms, self.live_ttl_ms,
                ENDED_KEEP_MS]
        for _ in range(TRIES):
            nodes = sorted(_text(node) for node in await self._io(self._redis.smembers(route_key)))
            keys = [self._call(call_id), self.due_key, self._busy(caller), self._busy(callee), route_key,
                    *(node_alive_key(self._prefix, node) for node in nodes)]
            result = tuple(_text(value) for value in await self._run(self._start, keys, args + nodes))
            if result != ("retry",):
                return result
        raise self._changing()

    async def answer(self, call_id: str, user_id: str, sid: str, node: str) -> tuple[str, ...]:
        """("active", caller, callerSid, callerNode), ("not_ringing", state) or ("unknown",)."""
        result = await self._run(self._answer, [self._call(call_id), self.due_key],
                                 [call_id, user_id, sid, node, self.lease_ms])
        return tuple(_text(value) for value in result)

    async def end(self, call_id: str, user_id: str, reject: bool) -> tuple[str, EndedCall | str | None]:
        """("ended", the call), ("not_live" | "not_ringing", state) or ("unknown", None)."""
        for _ in range(TRIES):
            [(caller, callee)] = await self._parties([call_id])
            if not caller:
                return "unknown", None
            keys = [self._call(call_id), self.due_key, self._busy(caller), self._busy(callee)]
            result = await self._run(self._end, keys,
                                     [call_id, user_id, "1" if reject else "0", ENDED_KEEP_MS, caller, callee])
            outcome = _text(result[0])
            if outcome == "ended":
                return outcome, _ended(result[1])
            if outcome != "retry":
                return outcome, _text(result[1]) if len(result) > 1 else None
        raise self._changing()

    async def sweep(self) -> list[EndedCall]:
        """Ends the calls that are due (missed rings, lapsed leases); each is returned to one sweeper."""
        ended: list[EndedCall] = []
        for _ in range(TRIES):
            due = await self._run(self._due_now, [self.due_key], [SWEEP_BATCH])
            if not due:
                break
            call_ids = list(dict.fromkeys(_text(member).split("|", 1)[0] for member in due))
            keys, args = [self.due_key], [ENDED_KEEP_MS]
            for call_id, (caller, callee) in zip(call_ids, await self._parties(call_ids)):
                keys += [self._call(call_id), self._busy(caller), self._busy(callee)]
                args += [call_id, caller, callee]
            found, retry = await self._run(self._sweep, keys, args)
            ended += [_ended(values) for values in found]
            if not retry:
                break
        return ended

    async def renew(self, members: list[str]) -> list[tuple[str, str]]:
        """Renews the leases of `<id>|<role>` members; returns (member, state) of those whose call
        is over: state "ended", or "" when Redis no longer knows the call."""
        over: list[tuple[str, str]] = []
        for _ in range(TRIES):
            if not members:
                break
            members_of: dict[str, list[str]] = {}
            for member in members:
                members_of.setdefault(member.split("|", 1)[0], []).append(member)
            keys, args = [self.due_key], [self.lease_ms, self.live_ttl_ms]
            for (call_id, of_call), (caller, callee) in zip(members_of.items(), await self._parties(list(members_of))):
                keys += [self._call(call_id), self._busy(caller), self._busy(callee)]
                args += [caller, callee, len(of_call), *of_call]
            gone, retry = await self._run(self._renew, keys, args)
            values = [_text(value) for value in gone]
            over += zip(values[::2], values[1::2])
            members = [_text(member) for member in retry]  # renewed next round, if not now
        return over

    async def away(self, member: str, sid: str) -> None:
        """The party `<id>|<role>` lost its socket `sid` (disconnected on a live node)."""
        call_id, role = member.split("|", 1)
        await self._run(self._away, [self._call(call_id)], [role, sid])

    async def rebind(self, user_id: str, sid: str, node: str, stale_ms: int,
                     call_id: str | None = None) -> tuple[str, ...] | None:
        """Makes `sid` the user's socket in their call if the old one is gone: (id, role, other
        sid, other node); ("fresh",) when the old one may still be there; None: no call to rejoin.
        `call_id`: the call the user's busy marker named when read (else it is read first)."""
        if call_id is None and (call_id := await self.busy_call(user_id)) is None:
            return None
        for _ in range(TRIES):
            result = await self._run(self._rebind, [self._busy(user_id), self.due_key, self._call(call_id)],
                                     [call_id, user_id, sid, node, self.lease_ms, stale_ms])
            if result is None:
                return None
            found = tuple(_text(value) for value in result)
            if found[0] != "retry":
                return found
            call_id = found[1]
        raise self._changing()

    async def get(self, call_id: str) -> Call | None:
        values = await self._io(self._redis.hmget(self._call(call_id), FIELDS))
        if values[0] is None:
            return None
        state, caller, callee, kind, caller_sid, caller_node, callee_sid, callee_node = [
            None if value is None else _text(value) for value in values]
        return Call(call_id, state, caller, callee, kind, caller_sid, caller_node, callee_sid, callee_node)

    async def calls_of(self, user_ids: list[str]) -> list[str | None]:
        """The call each user is in (its busy marker), or None: one MGET."""
        values = await self._io(self._redis.mget([self._busy(user_id) for user_id in user_ids]))
        return [None if value is None else _text(value) for value in values]

    async def busy_call(self, user_id: str) -> str | None:
        """The call this user is in, if any (tests and operators)."""
        value = await self._io(self._redis.get(self._busy(user_id)))
        return None if value is None else _text(value)

    async def close(self) -> None:
        await self._redis.aclose()
