"""Migration 0013 (messages partitioned by id) on a big database while messages keep coming.

Runs on a database of the previous schema with its messages (the history bench's, seeded by the
previous release: `python -m bench.history_bench --private-postgres DIR` on it), applies the
pending migrations while a writer inserts one message a transaction, and prints how long each
step of 0013 took and how long the writer's inserts took during each (the stall a step's locks
cause), with how many it committed meanwhile.

    .venv/bin/python -m bench.partition_bench --private-postgres DIR [--database parley_bench]
"""

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncpg

from services.devtools.stores import PrivatePostgres, with_database
from services.history.migrations import apply_migrations

VERSION = "0013_partition_messages"
_STEPS = "SELECT version, applied_at FROM schema_migrations WHERE version LIKE '0013%' ORDER BY applied_at"
_INSERT = "INSERT INTO messages (sender_id, receiver_id, text) VALUES ($1, $1, 'during the migration')"


async def write(url: str, sender: str, stop: asyncio.Event, timings: list[tuple[float, float]]) -> None:
    """One message a transaction until `stop`: (when it began, how long it took) each."""
    connection = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            began = time.time()
            await connection.execute(_INSERT, sender)
            timings.append((began, time.time() - began))
    finally:
        await connection.close()


async def run(url: str) -> list[dict]:
    connection = await asyncpg.connect(url, command_timeout=7200)
    try:
        if await connection.fetchval("SELECT true FROM schema_migrations WHERE version = $1", VERSION):
            raise SystemExit(f"{VERSION} is already applied to this database")
        messages = await connection.fetchval("SELECT count(*) FROM messages")
        sender = await connection.fetchval("SELECT id FROM users LIMIT 1")
        stop, timings = asyncio.Event(), []
        writer = asyncio.create_task(write(url, sender, stop, timings))
        while len(timings) < 100:  # the writer under way first
            await asyncio.sleep(0.05)
        started = time.time()
        await apply_migrations(connection)
        finished = time.time()
        stop.set()
        await writer
        steps = [(row["version"], row["applied_at"].timestamp()) for row in await connection.fetch(_STEPS)]
    finally:
        await connection.close()
    # A step's row is written at its transaction's start (now()); the next one's start ends it.
    bounds = [(name, begin, end) for (name, begin), (_, end) in zip(steps, [*steps[1:], ("end", finished)])]
    rows = [{"step": "all of 0013", "seconds": finished - started, **_writes(timings, started, finished)}]
    for name, begin, end in bounds:
        rows.append({"step": name.replace(VERSION, "").strip() or "step 4 (last)", "seconds": end - begin,
                     **_writes(timings, begin, end)})
    print(f"\n{messages:,} messages migrated")
    return rows


def _writes(timings: list[tuple[float, float]], begin: float, end: float) -> dict:
    during = sorted(took for began, took in timings if begin <= began < end or began < begin < began + took)
    return {"inserts": len(during), "insert_p50_ms": statistics.median(during) * 1000 if during else None,
            "insert_max_ms": during[-1] * 1000 if during else None}


def print_table(rows: list[dict]) -> None:
    print(f"\n{'step':<16} {'seconds':>9} {'inserts':>8} {'p50 ms':>8} {'max ms':>9}")
    for row in rows:
        p50 = f"{row['insert_p50_ms']:.2f}" if row["insert_p50_ms"] is not None else "-"
        worst = f"{row['insert_max_ms']:.1f}" if row["insert_max_ms"] is not None else "-"
        print(f"{row['step']:<16} {row['seconds']:>9.2f} {row['inserts']:>8} {p50:>8} {worst:>9}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--private-postgres", type=Path, required=True, metavar="DIR",
                        help="the bench's own Postgres (bench.history_bench --private-postgres DIR)")
    parser.add_argument("--database", default="parley_bench")
    args = parser.parse_args()
    server = PrivatePostgres(args.private_postgres.resolve())
    server.start()
    try:
        rows = asyncio.run(run(with_database(server.admin_url, args.database)))
    finally:
        server.stop()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
