"""The change feed without a global write lock (issue 19, migration 0012).

Writers claim their positions (a shared advisory lock each) instead of queueing for one
exclusive lock, and feed readers stop at the settled head. Proven here on the run's Postgres: a
reader waits out a claim below the head, then reads both positions in order; a claim held past
the reader's patience leaves the read below the claim; and many writers on
several pools (as several history processes), with readers following their cursors all along:
no reader ever skips a position that committed after a larger one (with the wait taken out of
parley_feed_settled, that test failed 4 runs in 4). test_history's
`test_writers_run_in_parallel_and_sync_waits_for_a_smaller_id_still_committing` shows two
writers open at once through the API.
"""

import asyncio
import random
import uuid

import asyncpg
import pytest

from services.history.models import UserProfile
from services.history.store import _INSERT_MESSAGES, CLAIM_FEED_POSITIONS, MessageStore
from services.shared.models import StoreMessage
from tests.support import eventually

WRITER_PROCESSES = 4
WRITERS_PER_PROCESS = 4
BATCHES_PER_WRITER = 25
READERS = 3
SLOW_WRITERS = 8
READER_NAME = "parley-test-feed-reader"


@pytest.fixture
async def stores_of_processes(stores):
    """A MessageStore per simulated history process, each with a pool of its own."""
    opened: list[tuple[asyncpg.Pool, MessageStore]] = []
    for _ in range(WRITER_PROCESSES):
        pool = await asyncpg.create_pool(stores.database_url, min_size=1, max_size=WRITERS_PER_PROCESS + 2)
        store = MessageStore(pool)
        store.schema_ready = True
        opened.append((pool, store))
    yield [store for _, store in opened]
    for pool, store in opened:
        await store.close()
        await pool.close()


async def new_users(store: MessageStore, count: int) -> list[str]:
    ids = [uuid.uuid4().hex[:24] for _ in range(count)]
    for user_id in ids:
        await store.upsert_user(UserProfile(_id=user_id, userName=f"claims-{user_id[:8]}"))
    return ids


def message(sender: str, receiver: str, text: str) -> StoreMessage:
    return StoreMessage(senderId=sender, receiverId=receiver, text=text, clientId=uuid.uuid4().hex)


async def test_a_reader_waits_out_a_claim_below_the_head_then_reads_both_in_order(stores, stores_of_processes):
    writer = stores_of_processes[0]
    ada, bob = await new_users(writer, 2)
    [before] = await writer.create_messages([message(ada, bob, "before")])
    # The reader's pool names itself, so the test can see its settle query wait in Postgres.
    reader_pool = await asyncpg.create_pool(stores.database_url, min_size=1, max_size=2,
                                            server_settings={"application_name": READER_NAME})
    reader = MessageStore(reader_pool)
    reader.schema_ready = True
    slow = await asyncpg.connect(stores.database_url)
    # Not in a transaction: Postgres shows a transaction one snapshot of pg_stat_activity.
    observer = await asyncpg.connect(stores.database_url)
    try:
        transaction = slow.transaction()
        await transaction.start()
        await slow.execute(CLAIM_FEED_POSITIONS)
        # The slow writer draws the smaller id, and a fast one commits a larger id first.
        smaller = await slow.fetchval("SELECT nextval('change_seq')")
        [fast] = await writer.create_messages([message(ada, bob, "fast")])
        assert int(fast.message["_id"]) > smaller
        reading = asyncio.create_task(reader.feed(bob, int(before.message["_id"]), 50))

        async def reader_waits_for_the_claim() -> None:
            assert await observer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'"
                " AND query LIKE '%parley_feed_settled%' AND wait_event = 'PgSleep'", READER_NAME) == 1
            assert not reading.done()

        await eventually(reader_waits_for_the_claim)
        # Only now does the smaller id commit, as a message to bob.
        await slow.execute(
            "INSERT INTO messages (id, sender_id, receiver_id, text) VALUES ($1, $2, $3, 'slow')", smaller, ada, bob)
        await transaction.commit()
        changes, has_more, _ = await asyncio.wait_for(reading, 10)
    finally:
        await slow.close()
        await observer.close()
        await reader.close()
        await reader_pool.close()
    assert [position for position, kind, _ in changes if kind == "message"] == [smaller, int(fast.message["_id"])]
    assert not has_more


async def test_a_claim_held_past_the_readers_patience_leaves_the_read_below_it(stores, stores_of_processes):
    writer = stores_of_processes[0]
    ada, bob = await new_users(writer, 2)
    stuck = await asyncpg.connect(stores.database_url)
    probe = await asyncpg.connect(stores.database_url)
    try:
        transaction = stuck.transaction()
        await transaction.start()
        await stuck.execute(CLAIM_FEED_POSITIONS)
        claimed = await stuck.fetchval("SELECT nextval('change_seq')")
        [later] = await writer.create_messages([message(ada, bob, "after the stuck one")])
        settled = await probe.fetchval("SELECT parley_feed_settled(make_interval(secs => 0.05))")
        assert settled == claimed - 1, "the settled head stops right below the claim"
        await transaction.rollback()  # a rolled-back claim is a gap, which settles too
        settled = await probe.fetchval("SELECT parley_feed_settled(make_interval(secs => 0.05))")
        assert settled >= int(later.message["_id"])
    finally:
        await stuck.close()
        await probe.close()


async def test_many_parallel_writers_and_readers_following_cursors_never_skip_a_message(stores, stores_of_processes):
    """16 writers on 4 pools send batches to the same few receivers at once, and slow writers hold
    each of their inserts open a few milliseconds before committing (as a stalled commit does),
    while readers follow each receiver's feed by cursor (as `sync?after=` does). Every message a
    writer committed is read by every reader, in position order, once: a reader that had moved its
    cursor past a position still committing would never see it."""
    setup = stores_of_processes[0]
    receivers = await new_users(setup, 3)
    senders = await new_users(setup, WRITER_PROCESSES * WRITERS_PER_PROCESS)
    committed: dict[str, set[int]] = {receiver: set() for receiver in receivers}
    [start] = await setup.create_messages([message(senders[0], receivers[0], "start")])
    origin = int(start.message["_id"])
    writing_done = asyncio.Event()

    async def write(store: MessageStore, sender: str, seed: int) -> None:
        chance = random.Random(seed)
        for n in range(BATCHES_PER_WRITER):
            batch = [message(sender, chance.choice(receivers), f"{sender[:6]}-{n}-{k}")
                     for k in range(chance.randint(1, 4))]
            for stored, sent in zip(await store.create_messages(batch), batch, strict=True):
                committed[sent.receiver_id].add(int(stored.message["_id"]))
            await asyncio.sleep(0)  # a yield (no wait): the readers interleave with the writers

    async def write_slowly(seed: int) -> None:
        """Inserts with history's own statement, holding the transaction open 2-30 ms after it."""
        chance = random.Random(seed)
        connection = await asyncpg.connect(stores.database_url)
        try:
            sender = senders[seed % len(senders)]
            for n in range(BATCHES_PER_WRITER):
                receiver = chance.choice(receivers)
                async with connection.transaction():
                    [row] = await connection.fetch(_INSERT_MESSAGES, [sender], [receiver], [f"slow {seed}-{n}"],
                                                   [None], [None], [None], [None], [None])
                    # The workload, not a wait for a condition: a commit that stalls.
                    await connection.execute("SELECT pg_sleep($1)", chance.uniform(0.002, 0.03))
                committed[receiver].add(row["id"])
        finally:
            await connection.close()

    async def follow(store: MessageStore, receiver: str) -> list[int]:
        """Reads the receiver's feed by cursor until writing is done and a read comes back empty."""
        cursor, seen = origin, []
        while True:
            finished = writing_done.is_set()
            changes, has_more, _ = await store.feed(receiver, cursor, 500)
            positions = [position for position, kind, _ in changes if kind == "message"]
            assert positions == sorted(positions)
            seen += positions
            if changes:
                cursor = changes[-1][0]
            if finished and not changes and not has_more:
                return seen

    writers = [write(store, senders[p * WRITERS_PER_PROCESS + w], p * 100 + w)
               for p, store in enumerate(stores_of_processes) for w in range(WRITERS_PER_PROCESS)]
    writers += [write_slowly(1000 + n) for n in range(SLOW_WRITERS)]
    readers = [asyncio.create_task(follow(stores_of_processes[r % WRITER_PROCESSES], receiver))
               for r in range(READERS) for receiver in receivers]

    async def all_writers() -> None:
        await asyncio.gather(*writers)
        writing_done.set()

    await asyncio.wait_for(asyncio.gather(all_writers(), *readers), 120)
    for task, receiver in zip(readers, [receiver for _ in range(READERS) for receiver in receivers], strict=True):
        seen = task.result()
        assert len(seen) == len(set(seen)), "a message was read twice"
        missing = committed[receiver] - set(seen)
        assert not missing, f"a reader following the feed skipped {len(missing)} committed messages"
    assert sum(len(ids) for ids in committed.values()) >= WRITER_PROCESSES * WRITERS_PER_PROCESS * BATCHES_PER_WRITER
