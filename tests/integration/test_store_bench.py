"""`make bench`'s store bench runs history's own insert: a change to that path cannot leave it broken.

It once called the insert statement with its own argument list, and failed in `make bench` when
the statement took more (calls, issue 17); it now goes through the store's 1:1 insert.
"""

import asyncio

import asyncpg

from bench import store_bench

MESSAGES = 50  # a case: batches of 1, 10 and 50, in two plan modes


def test_the_store_bench_stores_every_message_it_counts(own_database):
    async def bench_then_count():
        rows = await store_bench.run(own_database.url, MESSAGES)
        connection = await asyncpg.connect(own_database.url)
        try:
            stored = await connection.fetchval(
                "SELECT count(*) FROM messages WHERE sender_id = ANY($1::text[]) AND receiver_id = ANY($1::text[])",
                store_bench.USERS)
        finally:
            await connection.close()
        return rows, stored

    rows, stored = asyncio.run(bench_then_count())
    assert [(row["plan_cache_mode"], row["batch"]) for row in rows] == [
        (mode, batch) for mode in ("auto", "force_generic_plan") for batch in (1, 10, 50)]
    assert stored == len(rows) * MESSAGES
    assert all(row["messages"] == MESSAGES and row["wall_ms_per_message"] > 0 for row in rows)
