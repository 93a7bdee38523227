"""History queries with 1,000,000 messages (or 10,000,000): p50/p99 of the read paths, through HTTP.

Seeds a database of its own (`parley_bench`, reused when already seeded), starts the real history
service as a process, and times sequential requests from one client. Prints a table and writes
bench/results/history.json.

One user (ME) has MINE messages with 500 partners whatever the size: a bigger database is
everyone else's messages around the same user, so what grows is the database, not the answers.
ME's messages are spread evenly over the whole id range (every (total / MINE)-th message), so
an older page of a conversation reaches far back, across id partitions where there are some.
The seed is one INSERT ... SELECT over generate_series with the secondary indexes dropped and
rebuilt afterwards (10,000,000 messages in a few minutes on 2 cores).

    .venv/bin/python -m bench.history_bench [--messages 1000000] [--requests 400]
    .venv/bin/python -m bench.history_bench --messages 10000000 --private-postgres .run/bench/pg10m \
        [--partition-ids 1000000]
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg

from bench.measure import RESULTS_DIR, RUN_DIR, bench_database
from bench.stack import BENCH_JWT, bench_stack
from services.devtools.stores import PrivatePostgres, ensure_database, find_stores, with_database
from services.history.migrations import apply_migrations
from services.shared.auth import issue_token

PROJECT_DIR = Path(__file__).resolve().parents[1]
DATABASE = bench_database("bench")
ME = "bench-me"
PARTNERS = 500
OTHER_USERS = 5000
MINE = 50_000  # messages to or from ME, whatever the database's size
SEARCH_WORD = "zanzibar"

SEED = """
INSERT INTO users (id, user_name, name)
SELECT 'u' || n, 'user' || n, 'User ' || n FROM generate_series(1, {other_users}) AS n;
INSERT INTO users (id, user_name, name) VALUES ('{me}', 'benchme', 'Bench Me');

-- Everyone else talks among themselves; every {stride}th message is ME's (k-th of them) with
-- one of PARTNERS partners, both ways. The last 1,000 ME received are unread.
INSERT INTO messages (sender_id, receiver_id, text, is_read, created_at)
SELECT CASE WHEN mine AND k % 2 = 0 THEN '{me}' WHEN mine THEN 'u' || (1 + k % {partners})
            ELSE 'u' || (1 + (n * 7919) % {other_users}) END,
       CASE WHEN mine AND k % 2 = 0 THEN 'u' || (1 + k % {partners}) WHEN mine THEN '{me}'
            ELSE 'u' || (1 + (n * 104729) % {other_users}) END,
       CASE WHEN mine THEN 'my message ' || k || CASE WHEN k % 50 = 0 THEN ' {word}' ELSE ' see you soon' END
            ELSE 'message number ' || n || CASE WHEN n % 97 = 0 THEN ' {word}' ELSE ' hello there' END END,
       NOT mine OR k < {mine} - 2000, now() - interval '1 second' * ({total} - n)
FROM generate_series(1, {total}::bigint) AS n,
     LATERAL (SELECT n % {stride} = 0 AS mine, n / {stride} AS k) AS who;

-- The summary rows the service keeps up to date on every insert, built once for the seed.
INSERT INTO conversations (owner_id, partner_id, last_message_id, unread_count)
SELECT owner, partner, max(id), count(*) FILTER (WHERE NOT is_read AND receiver_id = owner)
FROM (SELECT sender_id AS owner, receiver_id AS partner, id, is_read, receiver_id FROM messages
      UNION ALL
      SELECT receiver_id, sender_id, id, is_read, receiver_id FROM messages WHERE receiver_id <> sender_id) AS sides
GROUP BY owner, partner;
"""

# The secondary indexes of messages (of the partitioned parent, when it is one), other than
# those behind a constraint: dropped before the seed and built after it, each in one pass.
_SECONDARY_INDEXES = """
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i WHERE i.indrelid = 'messages'::regclass
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
"""


async def seed(url: str, total: int, partition_ids: int) -> None:
    connection = await asyncpg.connect(url, command_timeout=3600)
    try:
        await apply_migrations(connection)
        count = await connection.fetchval("SELECT count(*) FROM messages")
        if count >= total:
            print(f"database {DATABASE} already holds {count:,} messages")
            return
        await connection.execute("TRUNCATE users, messages, conversations, message_deletions CASCADE")
        if await connection.fetchval("SELECT to_regclass('message_client_ids') IS NOT NULL"):  # 0013 on
            await connection.execute("TRUNCATE message_client_ids")
        started = time.perf_counter()
        if await connection.fetchval("SELECT relkind = 'p' FROM pg_class WHERE oid = 'messages'::regclass"):
            # Migration 0013 on: the messages go to partitions of `partition_ids` ids after those
            # the migration made (a database partitioned for a while), as history would create them.
            from services.history.partitions import ensure_partitions, last_upper_bound

            head = await last_upper_bound(connection) - 1
            await connection.execute("SELECT setval('change_seq', $1)", head)
            await ensure_partitions(connection, head + total + partition_ids, partition_ids)
        indexes = await connection.fetch(_SECONDARY_INDEXES)
        for index in indexes:
            await connection.execute(f"DROP INDEX {index['name']}")
        await connection.execute("SET maintenance_work_mem = '1GB'")
        mine = min(MINE, max(1, total // 2))  # a small database (--messages under 100,000): half ME's
        script = SEED.format(total=total, mine=mine, stride=total // mine, other_users=OTHER_USERS, me=ME,
                             partners=PARTNERS, word=SEARCH_WORD)
        await connection.execute(script)
        loaded = time.perf_counter()
        for index in indexes:
            # A partitioned table's reads "ON ONLY" (the parent alone): built here on every partition.
            await connection.execute(index["definition"].replace(" ON ONLY ", " ON ", 1))
        # As autovacuum would have by now in production: statistics, the visibility map, and the
        # GIN indexes' pending lists merged (searching a long pending list is ten times slower).
        await connection.execute("VACUUM ANALYZE")
        print(f"seeded {total:,} messages in {time.perf_counter() - started:.0f} s"
              f" (rows {loaded - started:.0f} s, {len(indexes)} indexes and vacuum {time.perf_counter() - loaded:.0f} s)")
    finally:
        await connection.close()


async def describe(url: str) -> dict:
    """The database measured: its messages' size on disk and partitions, and ME's sync cursor."""
    connection = await asyncpg.connect(url)
    try:
        return dict(await connection.fetchrow(
            """
            SELECT (SELECT count(*) FROM pg_inherits WHERE inhparent = 'messages'::regclass) AS partitions,
                   (SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                    WHERE i.inhparent = 'messages'::regclass AND c.reltuples > 0) AS partitions_used,
                   pg_size_pretty((SELECT sum(pg_total_relation_size(oid)) FROM pg_class
                                   WHERE oid = 'messages'::regclass
                                      OR oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'messages'::regclass)))
                       AS messages_size,
                   -- ME's 1,000th newest message: sync reads about 1,000 of ME's events after it.
                   (SELECT id FROM messages WHERE receiver_id = $1 ORDER BY id DESC OFFSET 499 LIMIT 1) AS sync_after
            """, ME))
    finally:
        await connection.close()


async def measure(base_url: str, token: str, requests: int, sync_after: int) -> list[dict]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base_url=base_url, headers=headers) as http:
        async with http.get("/api/messages/conversations?limit=500") as answer:
            conversations = await answer.json()
        partners = [conversation["_id"]["_id"] for conversation in conversations]
        newest = max(int(conversation["lastMessage"]["_id"]) for conversation in conversations)
        cases = {
            "conversation list (100 of 500)": lambda n: "/api/messages/conversations?limit=100",
            "history page (50)": lambda n: f"/api/messages/{partners[n % len(partners)]}?limit=50",
            "history page, older (before)": lambda n: f"/api/messages/{partners[n % len(partners)]}?limit=50&before={newest - 20000}",
            "sync (last ~1,000 events)": lambda n: f"/api/messages/sync?after={sync_after}&limit=100",
            f"search '{SEARCH_WORD}' (20)": lambda n: f"/api/messages/search?q={SEARCH_WORD}&limit=20",
        }
        rows = []
        for name, path_of in cases.items():
            for n in range(20):  # warm the caches and the prepared statements
                async with http.get(path_of(n)) as answer:
                    assert answer.status == 200, await answer.text()
                    await answer.read()
            timings = []
            for n in range(requests):
                started = time.perf_counter()
                async with http.get(path_of(n)) as answer:
                    await answer.read()
                timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            rows.append({
                "query": name,
                "requests": requests,
                "p50_ms": round(statistics.median(timings), 2),
                "p99_ms": round(timings[int(len(timings) * 0.99) - 1], 2),
                "max_ms": round(timings[-1], 2),
            })
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'query':<34} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for row in rows:
        print(f"{row['query']:<34} {row['requests']:>8} {row['p50_ms']:>8} {row['p99_ms']:>8} {row['max_ms']:>8}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--partition-ids", type=int, default=100_000_000,
                        help="ids a partition of messages holds, from migration 0013 on (MESSAGE_PARTITION_IDS)")
    parser.add_argument("--private-postgres", type=Path, default=None, metavar="DIR",
                        help="a Postgres of the bench's own (fsync off) with its data in DIR, kept for the next run")
    args = parser.parse_args()

    private = None
    if args.private_postgres is not None:
        private = PrivatePostgres(args.private_postgres.resolve())
        private.start()
        os.environ["DATABASE_URL"] = private.admin_url
    stores = find_stores(RUN_DIR)
    try:
        url = ensure_database(with_database(stores.database_url, "postgres"), DATABASE)
        asyncio.run(seed(url, args.messages, args.partition_ids))
        database = asyncio.run(describe(url))
        stack = bench_stack({"DATABASE_URL": url, "REDIS_URL": stores.redis_url, "LOG_LEVEL": "WARNING",
                             "MESSAGE_PARTITION_IDS": str(args.partition_ids)},
                            RUN_DIR / "logs", ["history"])
        stack.start()
        try:
            rows = asyncio.run(measure(stack["history"].url, issue_token(ME, BENCH_JWT), args.requests,
                                       database["sync_after"]))
        finally:
            stack.stop()
    finally:
        stores.stop()
        if private is not None:
            private.stop()
    print(f"\n{args.messages:,} messages, {database['messages_size']} on disk,"
          f" {database['partitions']} partitions of messages ({database['partitions_used']} holding some)")
    print_table(rows)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "history.json").write_text(
        json.dumps({"messages": args.messages, **database, "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
