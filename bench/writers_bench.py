"""Insert throughput with 1, 2 and 4 history processes writing at once (issue 19: no global lock).

Each writer process runs history's own store (`MessageStore`, a pool of its own) with TASKS
concurrent callers, each storing batches of BATCH 1:1 messages between random pairs of 200 users
for SECONDS, with synchronous commit on, as history does. The processes start together (a
barrier on their stdin), and each reports how many messages it stored and its batch latencies.
Prints a table; writes bench/results/writers.json.

    .venv/bin/python -m bench.writers_bench [--processes 1,2,4] [--seconds 8] [--tasks 4] [--batch 8]

`--code DIR` runs the writers on another tree's `services` (e.g. the previous release, extracted
with `git archive <commit> services | tar -x -C DIR`), in the same database, for a before/after.
"""

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

USERS = [f"writers-bench-{n}" for n in range(200)]
PROJECT_DIR = Path(__file__).resolve().parents[1]


async def write(url: str, seconds: float, tasks: int, batch: int, seed: int) -> dict:
    """One writer process: runs once the parent says go (a line on stdin)."""
    import asyncpg

    from services.history.store import MessageStore
    from services.shared.models import StoreMessage

    # As history's pool (history/app.py create_pool): synchronous commit, generic plans.
    pool = await asyncpg.create_pool(url, min_size=tasks, max_size=tasks, server_settings={
        "synchronous_commit": "on", "plan_cache_mode": "force_generic_plan"})
    store = MessageStore(pool)
    store.schema_ready = True
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    chance = random.Random(seed)
    latencies: list[float] = []
    stored = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal stored
        while time.perf_counter() < deadline:
            pairs = [chance.sample(USERS, 2) for _ in range(batch)]
            messages = [StoreMessage(senderId=a, receiverId=b, text="bench") for a, b in pairs]
            started = time.perf_counter()
            results = await store.create_messages(messages)
            latencies.append(time.perf_counter() - started)
            stored += sum(1 for result in results if not isinstance(result, Exception))

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(tasks)))
    elapsed = time.perf_counter() - started
    if hasattr(store, "close"):
        await store.close()
    await pool.close()
    return {"stored": stored, "elapsed": elapsed, "latencies": latencies}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def prepare(stores) -> str:
    from bench.measure import fresh_database
    from tests.support import migrate

    url = fresh_database(stores, "bench_writers")
    migrate(url)

    async def users() -> None:
        import asyncpg
        connection = await asyncpg.connect(url)
        try:
            await connection.executemany("INSERT INTO users (id, user_name) VALUES ($1, $1)", [(u,) for u in USERS])
        finally:
            await connection.close()

    asyncio.run(users())
    return url


def run_case(url: str, processes: int, args) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [args.code, str(PROJECT_DIR)])))
    workers = [
        subprocess.Popen([sys.executable, __file__, "--worker", "--url", url, "--seconds", str(args.seconds),
                          "--tasks", str(args.tasks), "--batch", str(args.batch), "--seed", str(n)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=PROJECT_DIR)
        for n in range(processes)
    ]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready", "a writer did not start"
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    reports = [json.loads(worker.communicate(timeout=args.seconds + 60)[0].splitlines()[-1]) for worker in workers]
    latencies = [latency for report in reports for latency in report["latencies"]]
    stored = sum(report["stored"] for report in reports)
    elapsed = max(report["elapsed"] for report in reports)
    return {"processes": processes, "callers": processes * args.tasks, "batch": args.batch,
            "messages_per_second": round(stored / elapsed), "batch_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
            "batch_p99_ms": round(percentile(latencies, 0.99) * 1000, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--tasks", type=int, default=4, help="concurrent store callers per process")
    parser.add_argument("--batch", type=int, default=8, help="messages per store call")
    parser.add_argument("--code", default="", help="run the writers on this tree's services/")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(write(args.url, args.seconds, args.tasks, args.batch, args.seed))))
        return 0

    from bench.measure import RESULTS_DIR, RUN_DIR
    from services.devtools.stores import find_stores

    stores = find_stores(RUN_DIR)
    try:
        url = prepare(stores)
        rows = [run_case(url, int(n), args) for n in args.processes.split(",")]
    finally:
        stores.stop()
    print(f"{'processes':>9} {'callers':>7} {'batch':>5} {'messages/s':>10} {'batch p50 ms':>12} {'batch p99 ms':>12}")
    for row in rows:
        print(f"{row['processes']:>9} {row['callers']:>7} {row['batch']:>5} {row['messages_per_second']:>10} "
              f"{row['batch_p50_ms']:>12} {row['batch_p99_ms']:>12}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "writers.json").write_text(json.dumps({"code": args.code or "this tree", "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
