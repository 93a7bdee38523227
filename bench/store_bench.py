"""Postgres CPU per stored message: history's insert statement by batch size and plan mode.

Runs history's own 1:1 insert (`_insert_direct`, the statement and arguments a store call of
plain messages runs), on one connection, 2,000 messages a case, and reads the server backend's
CPU from /proc (so Postgres must run on this machine). By default in the
history bench's database (1,000,000 messages, run that first): planning costs more with real
statistics than on empty tables. Prints a table; writes bench/results/store.json.

    .venv/bin/python -m bench.store_bench [--messages 2000]
"""

import argparse
import asyncio
import json
import sys
import time

import asyncpg

from bench.measure import RESULTS_DIR, RUN_DIR, cpu_seconds
from bench.history_bench import DATABASE as HISTORY_DATABASE
from services.devtools.stores import ensure_database, find_stores, with_database
from services.history.migrations import apply_migrations
from services.history.store import _insert_direct
from services.shared.models import StoreMessage

USERS = ["store-bench-a", "store-bench-b"]


async def measure(url: str, plan_mode: str, batch: int, messages: int) -> dict:
    connection = await asyncpg.connect(url, server_settings={"synchronous_commit": "on", "plan_cache_mode": plan_mode})
    try:
        backend = await connection.fetchval("SELECT pg_backend_pid()")
        batches = [
            [(n, StoreMessage(senderId=USERS[n % 2], receiverId=USERS[(n + 1) % 2], text=f"message {number}-{n}"))
             for n in range(batch)]
            for number in range(messages // batch)
        ]
        cpu_before, started = cpu_seconds(backend), time.perf_counter()
        for messages_of_call in batches:
            await _insert_direct(connection, messages_of_call)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(backend) - cpu_before
    finally:
        await connection.close()
    return {"plan_cache_mode": plan_mode, "batch": batch, "messages": messages,
            "postgres_cpu_ms_per_message": round(cpu * 1000 / messages, 3),
            "wall_ms_per_message": round(elapsed * 1000 / messages, 3)}


async def run(url: str, messages: int) -> list[dict]:
    connection = await asyncpg.connect(url)
    try:
        await apply_migrations(connection)
        for user in USERS:
            await connection.execute(
                "INSERT INTO users (id, user_name) VALUES ($1, $1) ON CONFLICT (id) DO NOTHING", user)
    finally:
        await connection.close()
    return [await measure(url, mode, batch, messages)
            for mode in ("auto", "force_generic_plan") for batch in (1, 10, 50)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--database", default=HISTORY_DATABASE)
    args = parser.parse_args()
    stores = find_stores(RUN_DIR)
    try:
        url = ensure_database(with_database(stores.database_url, "postgres"), args.database)
        rows = asyncio.run(run(url, args.messages))
    finally:
        stores.stop()
    print(f"\n{'plan_cache_mode':<20} {'batch':>5} {'Postgres CPU ms/msg':>20} {'wall ms/msg':>12}")
    for row in rows:
        print(f"{row['plan_cache_mode']:<20} {row['batch']:>5} {row['postgres_cpu_ms_per_message']:>20} "
              f"{row['wall_ms_per_message']:>12}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "store.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
