"""History's notification relay (issue 18) against the run's real Postgres and Redis: replicas
share one cursor without appending a job twice, a crashed pass appends nothing twice, and a
Redis that lost its data gets again every job no notifier acknowledged."""

import asyncio
import uuid

import asyncpg
import pytest
import redis.asyncio

from services.history.push_relay import PushRelay
from services.shared.keys import PUSH_CONSUMER_GROUP, push_epoch_key, push_stream_key

# 120 messages take three passes of milliseconds each; a pass waits at most 2 s for a claim.
RELAY_ALL_WITHIN_SECONDS = 30


@pytest.fixture
async def world(stores, migrated_database):
    """A pool on a database of the test's own (the shared one's relays would relay these
    messages too), a Redis client, a stream of the test's own, and two subscribed recipients."""
    prefix = f"{stores.redis_prefix}-relay-{uuid.uuid4().hex[:6]}"
    pool = await asyncpg.create_pool(migrated_database, min_size=1, max_size=6)
    client = redis.asyncio.Redis.from_url(stores.redis_url)
    tag = uuid.uuid4().hex[:8]
    sender, alice, bob = f"s{tag}", f"a{tag}", f"b{tag}"
    async with pool.acquire() as connection:
        for user in (sender, alice, bob):
            await connection.execute("INSERT INTO users (id, user_name) VALUES ($1, $1)", user)
        for user in (alice, bob):
            await connection.execute("INSERT INTO push_subscriptions (endpoint, user_id, p256dh, auth)"
                                     " VALUES ($1, $2, $3, $4)", f"http://127.0.0.1:1/push/{user}", user,
                                     "B" * 87, "a" * 22)
    relays: list[PushRelay] = []

    def relay() -> PushRelay:
        made = PushRelay(pool, stores.redis_url, prefix, max_jobs=10_000, batch=50, poll_seconds=60)
        relays.append(made)
        return made

    async def send(count: int, to: str) -> list[int]:
        async with pool.acquire() as connection:
            rows = await connection.fetch(
                "INSERT INTO messages (sender_id, receiver_id, text) SELECT $1, $2, 'm' || n"
                " FROM generate_series(1, $3) AS n RETURNING id", sender, to, count)
        return sorted(row["id"] for row in rows)

    async def add_cursor() -> None:
        async with pool.acquire() as connection:
            await relays[0].add_cursor(connection)

    yield {"pool": pool, "redis": client, "prefix": prefix, "stream": push_stream_key(prefix), "relay": relay,
           "send": send, "alice": alice, "bob": bob, "add_cursor": add_cursor}
    for made in relays:
        await made.close()
    await client.delete(push_stream_key(prefix), push_epoch_key(prefix))
    async with pool.acquire() as connection:
        await connection.execute("DELETE FROM push_relay WHERE stream = $1", prefix)
    await pool.close()
    await client.aclose()


async def stream_message_ids(world) -> list[int]:
    entries = await world["redis"].xrange(world["stream"])
    return [int(fields[b"m"]) for _, fields in entries]


async def claims_in_flight(pool: asyncpg.Pool) -> list[dict]:
    """Who holds advisory locks in this database now (the change feed's claims among them,
    migration 0012): what a relay that stops below the head is waiting on."""
    rows = await pool.fetch(
        "SELECT l.pid, l.mode, l.granted, a.application_name, a.state, a.xact_start, left(a.query, 160) AS query"
        " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory'"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    return [dict(row) for row in rows]


async def test_two_replicas_relay_every_message_once(world):
    first, second = world["relay"](), world["relay"]()
    await world["add_cursor"]()
    sent = await world["send"](120, world["alice"])
    deadline = asyncio.get_running_loop().time() + RELAY_ALL_WITHIN_SECONDS
    passes = []
    while True:  # both at once, until neither finds anything new
        taken = await asyncio.gather(first.relay_once(), second.relay_once())
        passes.append(taken)
        if taken == [0, 0] and len(await stream_message_ids(world)) >= len(sent):
            break
        # Two full runs looped here for minutes: say what the relays saw.
        if asyncio.get_running_loop().time() > deadline:
            async with world["pool"].acquire() as connection:
                cursor = await connection.fetchrow("SELECT * FROM push_relay WHERE stream = $1", world["prefix"])
                head = await connection.fetchval("SELECT parley_feed_settled(make_interval(secs => 0))")
                sequence = await connection.fetchrow("SELECT last_value, is_called FROM change_seq")
            in_stream = await stream_message_ids(world)
            pytest.fail(f"{len(in_stream)} of {len(sent)} relayed; passes {passes[:6]}...{passes[-3:]}; "
                        f"cursor {dict(cursor)}; settled head {head}, change_seq {dict(sequence)}; "
                        f"sent {sent[0]}..{sent[-1]}, missing {sorted(set(sent) - set(in_stream))[:5]}; "
                        f"stream holds {in_stream[:3]}..{in_stream[-3:]}; "
                        f"advisory locks: {await claims_in_flight(world['pool'])}")
    assert await stream_message_ids(world) == sent  # in order, each once
    assert first.jobs_appended + second.jobs_appended == len(sent)


async def test_a_pass_repeated_after_a_crash_appends_nothing_twice(world):
    relay = world["relay"]()
    await world["add_cursor"]()
    sent = await world["send"](10, world["bob"])
    assert await relay.relay_once() == 10
    async with world["pool"].acquire() as connection:  # as if the pass had died before its commit
        await connection.execute("UPDATE push_relay SET relayed_through = $2 WHERE stream = $1",
                                 world["prefix"], sent[0] - 1)
    assert await relay.relay_once() == 10
    assert await stream_message_ids(world) == sent


async def test_after_redis_lost_its_data_the_unacknowledged_jobs_come_again(world):
    relay = world["relay"]()
    await world["add_cursor"]()
    sent = await world["send"](6, world["alice"])
    await relay.relay_once()
    # A notifier took the first four and acknowledged three.
    client, stream = world["redis"], world["stream"]
    taken = await client.xreadgroup(PUSH_CONSUMER_GROUP, "n1", {stream: ">"}, count=4)
    entry_ids = [entry_id for entry_id, _ in taken[0][1]]
    await client.xack(stream, PUSH_CONSUMER_GROUP, *entry_ids[:3])
    await relay.relay_once()  # records done_below: the fourth message
    await client.delete(stream, push_epoch_key(world["prefix"]))  # Redis restarted empty
    await relay.relay_once()
    assert await stream_message_ids(world) == sent[3:]
