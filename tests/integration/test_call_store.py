"""The call scripts (services/gateway/call_store.py) against the run's real Redis, with many
callers at once: every gateway sweeps, so a due call must end exactly once whoever sweeps, and
an answer racing the ring's deadline either answers or misses, never both."""

import asyncio
import uuid

import pytest
import redis.asyncio as redis

from services.gateway import call_store
from services.gateway.call_store import CallStore
from services.shared.keys import call_busy_key, call_key, node_alive_key, user_nodes_key
from tests.support import eventually

SWEEPERS = 8


@pytest.fixture
async def prefix(stores):
    """A key prefix of the test's own, with one live node holding every callee's sockets."""
    name = f"{stores.redis_prefix}-calls-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(stores.redis_url)
    await client.set(node_alive_key(name, "node-1"), 1, ex=60)
    yield name
    async for key in client.scan_iter(f"{name}:*"):
        await client.delete(key)
    await client.aclose()


async def online(stores, prefix: str, *users: str) -> None:
    client = redis.Redis.from_url(stores.redis_url)
    for user in users:
        await client.sadd(user_nodes_key(prefix, user), "node-1")
    await client.aclose()


def store(stores, prefix: str, ring: float = 0.3, lost_after: float = 60) -> CallStore:
    return CallStore(stores.redis_url, prefix, ring_seconds=ring, lost_after_seconds=lost_after)


async def test_many_sweepers_end_each_missed_call_exactly_once_and_free_everyone(stores, prefix):
    stores_ = [store(stores, prefix) for _ in range(SWEEPERS)]
    calls = {}
    for n in range(40):
        caller, callee = f"a{n}", f"b{n}"
        await online(stores, prefix, callee)
        call_id = uuid.uuid4().hex
        assert (await stores_[0].start(call_id, caller, callee, "audio", f"sid-{n}", "node-1"))[0] == "ringing"
        calls[call_id] = (caller, callee)

    ended = []

    async def all_rang_out():  # every sweeper at once, again and again, until all rang out
        rounds = await asyncio.gather(*(each.sweep() for each in stores_))
        ended.extend(call for found in rounds for call in found)
        assert len(ended) >= len(calls)

    await eventually(all_rang_out, timeout=10, interval=0.05)
    assert sorted(call.id for call in ended) == sorted(calls), "each call ended once, by one sweeper"
    assert {call.reason for call in ended} == {"missed"}
    for caller, callee in calls.values():
        assert await stores_[0].busy_call(caller) is None and await stores_[0].busy_call(callee) is None
    assert all(not found for found in await asyncio.gather(*(each.sweep() for each in stores_)))
    for each in stores_:
        await each.close()


async def test_an_answer_racing_the_deadline_either_answers_or_misses(stores, prefix):
    sweepers = [store(stores, prefix, ring=0.05) for _ in range(SWEEPERS)]
    outcomes = []
    for n in range(20):
        await online(stores, prefix, f"d{n}")
        call_id = uuid.uuid4().hex
        await sweepers[0].start(call_id, f"c{n}", f"d{n}", "video", "sid-c", "node-1")
        await asyncio.sleep(0.05)  # at the deadline: the answer and the sweeps race
        answer, *swept = await asyncio.gather(sweepers[0].answer(call_id, f"d{n}", "sid-d", "node-1"),
                                              *(each.sweep() for each in sweepers[1:]))
        missed = [call for found in swept for call in found if call.id == call_id]
        assert (answer[0] == "active") != bool(missed), (answer, missed)
        assert len(missed) <= 1
        outcomes.append(answer[0])
        if answer[0] == "active":
            outcome, call = await sweepers[0].end(call_id, f"c{n}", reject=False)
            assert outcome == "ended" and call.reason == "ended" and call.answered_at_ms is not None
    for each in sweepers:
        await each.close()


async def test_a_lapsed_lease_is_lost_once_and_a_renewed_one_is_not(stores, prefix):
    """The lease of the caller is renewed by its node; the callee's node stops renewing (it died):
    the call ends `lost`, once, after the lease."""
    calls = store(stores, prefix, ring=60, lost_after=0.3)
    await online(stores, prefix, "g")
    call_id = uuid.uuid4().hex
    await calls.start(call_id, "f", "g", "video", "sid-f", "node-1")
    assert (await calls.answer(call_id, "g", "sid-g", "node-2"))[0] == "active"
    ended = []
    for _ in range(100):
        assert await calls.renew([f"{call_id}|caller"]) == []
        ended += await calls.sweep()
        if ended:
            break
        await asyncio.sleep(0.02)
    assert [(call.id, call.reason) for call in ended] == [(call_id, "lost")]
    assert await calls.renew([f"{call_id}|caller"]) == [(f"{call_id}|caller", "ended")]  # the node forgets it
    assert await calls.renew([f"{'0' * 32}|callee"]) == [(f"{'0' * 32}|callee", "")]  # unknown to Redis
    assert await calls.busy_call("f") is None and await calls.busy_call("g") is None
    await calls.close()


async def test_every_key_of_a_live_call_lapses_by_itself_if_no_node_is_left(stores, prefix):
    """With every gateway gone nobody renews or sweeps: the call's keys and both busy markers
    still lapse, within the ring plus three leases, so nobody stays busy."""
    calls = store(stores, prefix, ring=30, lost_after=10)
    await online(stores, prefix, "j")
    call_id = uuid.uuid4().hex
    await calls.start(call_id, "i", "j", "audio", "sid-i", "node-1")
    client = redis.Redis.from_url(stores.redis_url)
    keys = [call_key(prefix, call_id), call_busy_key(prefix, "i"), call_busy_key(prefix, "j")]
    try:
        for key in keys:
            assert 0 < await client.pttl(key) <= 30_000 + 3 * 10_000, key
        assert (await calls.answer(call_id, "j", "sid-j", "node-1"))[0] == "active"
        await calls.renew([f"{call_id}|caller", f"{call_id}|callee"])
        for key in keys:
            assert 0 < await client.pttl(key) <= 30_000 + 3 * 10_000, key
    finally:
        await client.aclose()
        await calls.close()


# Prepended to every call script by `declared_only`: `redis.call` on a key not in KEYS raises, so
# a script that builds a key name (from ARGV, or from what it read) fails here. Redis itself does
# not check; a Redis Cluster only notices when that key is in another slot.
KEYS_GUARD = """
local declared = {}
for _, key in ipairs(KEYS) do declared[key] = true end
local real_redis = redis
local redis = setmetatable({call = function(command, ...)
  local key = ...
  if command ~= 'TIME' and not declared[key] then error('undeclared key ' .. tostring(key)) end
  return real_redis.call(command, ...)
end}, {__index = real_redis})
"""


@pytest.fixture
def declared_only(monkeypatch):
    """The call scripts, each guarded by KEYS_GUARD (for the CallStores made after this)."""
    names = [name for name, value in vars(call_store).items()
             if name.startswith("_") and name != "_PRELUDE" and isinstance(value, str) and "redis.call" in value]
    assert {"_START", "_ANSWER", "_END", "_DUE", "_SWEEP", "_RENEW", "_AWAY", "_REBIND"} <= set(names)
    for name in names:
        monkeypatch.setattr(call_store, name, KEYS_GUARD + getattr(call_store, name))


async def test_every_key_a_call_script_touches_is_declared(stores, prefix, declared_only):
    """A call's whole life, every script, under the guard: ringing and refused starts, an answer,
    renewals, a socket leaving and coming back, an end, a ring and a lease swept."""
    calls = store(stores, prefix, ring=0.05, lost_after=0.3)
    await online(stores, prefix, "l", "n")
    client = redis.Redis.from_url(stores.redis_url)
    await client.sadd(user_nodes_key(prefix, "l"), "node-dead")  # read, and its liveness key declared
    await client.aclose()
    try:
        answered, missed, lost = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
        assert (await calls.start(answered, "k", "l", "audio", "sid-k", "node-1"))[0] == "ringing"
        assert (await calls.start(uuid.uuid4().hex, "m", "l", "audio", "sid-m", "node-1"))[:2] == ("ended", "busy")
        assert (await calls.start(uuid.uuid4().hex, "m", "nobody", "audio", "sid-m", "node-1"))[:2] == (
            "ended", "offline")
        assert (await calls.answer(answered, "l", "sid-l", "node-1"))[0] == "active"
        assert await calls.renew([f"{answered}|caller", f"{answered}|callee"]) == []
        await calls.away(f"{answered}|caller", "sid-k")
        assert (await calls.rebind("k", "sid-k2", "node-1", stale_ms=0))[:2] == (answered, "caller")
        outcome, ended = await calls.end(answered, "l", reject=False)
        assert (outcome, ended.reason) == ("ended", "ended")
        assert await calls.renew([f"{answered}|caller"]) == [(f"{answered}|caller", "ended")]
        assert await calls.end(answered, "k", reject=False) == ("not_live", "ended")
        assert await calls.end(uuid.uuid4().hex, "k", reject=False) == ("unknown", None)

        assert (await calls.start(missed, "k", "l", "video", "sid-k", "node-1"))[0] == "ringing"
        assert (await calls.start(lost, "m", "n", "video", "sid-m", "node-1"))[0] == "ringing"
        assert (await calls.answer(lost, "n", "sid-n", "node-2"))[0] == "active"
        swept = []

        async def both_swept():
            swept.extend(await calls.sweep())
            assert sorted((call.id, call.reason) for call in swept) == sorted([(missed, "missed"), (lost, "lost")])

        await eventually(both_swept, timeout=10, interval=0.05)
        assert await calls.calls_of(["k", "l", "m", "n"]) == [None] * 4
    finally:
        await calls.close()


async def test_a_script_given_stale_reads_answers_retry_and_changes_nothing(stores, prefix):
    """What Python read before a script (a route set's nodes, a call's parties, a busy marker) is
    checked again inside it: changed, the script writes nothing and says `retry`."""
    calls = store(stores, prefix)
    await online(stores, prefix, "p")
    call_id = uuid.uuid4().hex
    busy = [call_busy_key(prefix, user) for user in ("o", "p")]
    stale_start = [call_key(prefix, call_id), calls.due_key, *busy, user_nodes_key(prefix, "p")]
    args = [call_id, "o", "p", "audio", "sid-o", "node-1", 1000, 1000, 1000, 1000]
    assert await calls._run(calls._start, stale_start, args) == [b"retry"]  # node-1 not passed
    assert await calls.get(call_id) is None and await calls.calls_of(["o", "p"]) == [None, None]

    assert (await calls.start(call_id, "o", "p", "audio", "sid-o", "node-1"))[0] == "ringing"
    wrong_parties = [call_key(prefix, call_id), calls.due_key, busy[0], call_busy_key(prefix, "q")]
    assert await calls._run(calls._end, wrong_parties, [call_id, "o", "0", 1000, "o", "q"]) == [b"retry"]
    assert (await calls.get(call_id)).state == "ringing"

    other = uuid.uuid4().hex
    assert await calls._run(calls._rebind, [busy[0], calls.due_key, call_key(prefix, other)],
                            [other, "o", "sid-o2", "node-1", 1000, 0]) == [b"retry", call_id.encode()]
    assert (await calls.get(call_id)).caller_sid == "sid-o"
    await calls.close()
