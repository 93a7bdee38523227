"""History queries with 1,000,000 messages: p50/p99 of the four read paths, through HTTP.

Seeds a database of its own (`parley_bench`, reused when already seeded), starts the real history
service as a process, and times sequential requests from one client. Prints a table and writes
bench/results/history.json.

    .venv/bin/python -m bench.history_bench [--messages 1000000] [--requests 400]
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg

from bench.stack import BENCH_JWT, bench_stack
from services.devtools.stores import ensure_database, find_stores, with_database
from services.history.migrations import apply_migrations
from services.shared.auth import issue_token

PROJECT_DIR = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT_DIR / "bench" / "results"
DATABASE = "parley_bench"
ME = "bench-me"
PARTNERS = 500
OTHER_USERS = 5000
MY_SHARE = 0.05  # of all messages are to or from ME: 50,000 of 1,000,000
SEARCH_WORD = "zanzibar"

SEED = """
INSERT INTO users (id, user_name, name)
SELECT 'u' || n, 'user' || n, 'User ' || n FROM generate_series(1, {other_users}) AS n;
INSERT INTO users (id, user_name, name) VALUES ('{me}', 'benchme', 'Bench Me');

-- Everyone else talks among themselves.
INSERT INTO messages (sender_id, receiver_id, text, is_read, created_at)
SELECT 'u' || (1 + (n * 7919) % {other_users}), 'u' || (1 + (n * 104729) % {other_users}),
       'message number ' || n || CASE WHEN n % 97 = 0 THEN ' {word}' ELSE ' hello there' END,
       true, now() - interval '1 second' * ({others} - n)
FROM generate_series(1, {others}::bigint) AS n;

-- ME talks with PARTNERS partners, both ways, interleaved with the rest in time.
INSERT INTO messages (sender_id, receiver_id, text, is_read, created_at)
SELECT CASE WHEN n % 2 = 0 THEN '{me}' ELSE 'u' || (1 + n % {partners}) END,
       CASE WHEN n % 2 = 0 THEN 'u' || (1 + n % {partners}) ELSE '{me}' END,
       'my message ' || n || CASE WHEN n % 50 = 0 THEN ' {word}' ELSE ' see you soon' END,
       n < {mine} - 1000, now()
FROM generate_series(1, {mine}::bigint) AS n;

-- The summary rows the service keeps up to date on every insert, built once for the seed.
INSERT INTO conversations (owner_id, partner_id, last_message_id, unread_count)
SELECT owner, partner, max(id), count(*) FILTER (WHERE NOT is_read AND receiver_id = owner)
FROM (SELECT sender_id AS owner, receiver_id AS partner, id, is_read, receiver_id FROM messages
      UNION ALL
      SELECT receiver_id, sender_id, id, is_read, receiver_id FROM messages WHERE receiver_id <> sender_id) AS sides
GROUP BY owner, partner;
"""


async def seed(url: str, total: int) -> None:
    connection = await asyncpg.connect(url, command_timeout=3600)
    try:
        await apply_migrations(connection)
        count = await connection.fetchval("SELECT count(*) FROM messages")
        if count >= total:
            print(f"database {DATABASE} already holds {count:,} messages")
            return
        await connection.execute("TRUNCATE users, messages, conversations, message_deletions CASCADE")
        mine = int(total * MY_SHARE)
        started = time.perf_counter()
        script = SEED.format(
            others=total - mine, mine=mine, other_users=OTHER_USERS, me=ME, partners=PARTNERS, word=SEARCH_WORD
        )
        await connection.execute(script)
        # As autovacuum would have by now in production: statistics, the visibility map, and the
        # GIN indexes' pending lists merged (searching a long pending list is ten times slower).
        await connection.execute("VACUUM ANALYZE")
        print(f"seeded {total:,} messages in {time.perf_counter() - started:.0f} s")
    finally:
        await connection.close()


async def measure(base_url: str, token: str, requests: int) -> list[dict]:
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
            "sync (last ~1,000 events)": lambda n: f"/api/messages/sync?after={newest - 1000}&limit=100",
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
    args = parser.parse_args()

    stores = find_stores(PROJECT_DIR / ".run" / "bench")
    try:
        url = ensure_database(with_database(stores.database_url, "postgres"), DATABASE)
        asyncio.run(seed(url, args.messages))
        stack = bench_stack({"DATABASE_URL": url, "REDIS_URL": stores.redis_url, "LOG_LEVEL": "WARNING"},
                            PROJECT_DIR / ".run" / "bench" / "logs", ["history"])
        stack.start()
        try:
            rows = asyncio.run(measure(stack["history"].url, issue_token(ME, BENCH_JWT), args.requests))
        finally:
            stack.stop()
    finally:
        stores.stop()
    print_table(rows)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "history.json").write_text(json.dumps({"messages": args.messages, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
