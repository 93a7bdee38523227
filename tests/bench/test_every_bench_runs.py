"""Every bench of `make bench` runs to the end, at a tiny scale, and writes its results.

Two benches had broken without anyone seeing it until `make bench` ran: the store bench called
the insert statement with an argument list the statement had outgrown, and the group bench
waited for a quiet that the call sweeper's scripts never left. So each is run here for real (its
own stack, generators and private Redis), with arguments that make it short. Results, logs and
databases go where `PARLEY_BENCH_HOME` and `PARLEY_BENCH_DATABASES` say: a user's own results
and seeded databases are never touched. What a bench measures is not checked here (the
benches' figures are the machine's): that it finishes, says so, and leaves its results.
"""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from bench.__main__ import BENCHMARKS
from services.devtools.stores import drop_database, with_database

PROJECT_DIR = Path(__file__).resolve().parents[2]

# module -> (the arguments that make it short, the results file it writes)
SHORT_RUNS = {
    "bench.history_bench": (["--messages", "3000", "--requests", "20"], "history.json"),
    "bench.store_bench": (["--messages", "50"], "store.json"),
    "bench.writers_bench": (["--processes", "1,2", "--seconds", "1"], "writers.json"),
    "bench.presence_bench": (["--sockets", "200"], "presence-200.json"),
    "bench.recovery_bench": (["--sockets", "100", "--rate", "50", "--lead", "0.5", "--after", "2",
                              "--generators", "1"], "recovery-100.json"),
    "bench.idle_bench": (["--sockets", "100", "--window", "1", "--settle", "0.5"], "idle.json"),
    "bench.delivery_bench": (["--rates", "100", "--seconds", "1", "--no-scaling"], "delivery.json"),
    "bench.group_bench": (["--sizes", "10", "--nodes", "2", "--seconds", "1"], "groups.json"),
    "bench.media_bench": (["--uploads", "1"], "media.json"),
    "bench.reaction_bench": (["--rate", "50", "--seconds", "1", "--pairs", "5"], "reactions.json"),
    "bench.call_bench": (["--pairs", "2", "--seconds", "1"], "calls.json"),
    "bench.notify_bench": (["--backlog", "20", "--rate", "10", "--seconds", "1"], "notifications.json"),
    "bench.cluster_bench": (["--rate", "100", "--seconds", "1"], "cluster.json"),
    "bench.delivery_bench --client node": (["--rates", "100", "--seconds", "1", "--no-scaling"], "delivery-node.json"),
}
BENCH_TIMEOUT_SECONDS = 240


def bench_name(entry: str) -> str:
    """`make bench`'s entry without the arguments it gives: the module, and `--client node`."""
    words = entry.split()
    return " ".join(words[:1] + (["--client", "node"] if "node" in words else []))


def test_every_bench_of_make_bench_has_a_short_run_here():
    assert sorted(bench_name(entry) for entry in BENCHMARKS) == sorted(SHORT_RUNS)


@pytest.fixture(scope="module")
def bench_env(stores, tmp_path_factory):
    prefix = f"{stores.redis_prefix.replace('-', '_')}_bench_"
    env = dict(os.environ, PARLEY_BENCH_HOME=str(tmp_path_factory.mktemp("bench")), PARLEY_BENCH_DATABASES=prefix,
               DATABASE_URL=stores.database_url, REDIS_URL=stores.redis_url)
    yield env
    admin_url = with_database(stores.database_url, "postgres")
    for name in asyncio.run(databases_named(admin_url, prefix)):
        drop_database(admin_url, name)


async def databases_named(admin_url: str, prefix: str) -> list[str]:
    connection = await asyncpg.connect(admin_url)
    try:
        return [row["datname"] for row in await connection.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix)]
    finally:
        await connection.close()


@pytest.mark.timeout(BENCH_TIMEOUT_SECONDS + 30)
@pytest.mark.parametrize("name", sorted(SHORT_RUNS))
def test_the_bench_runs_to_the_end_and_writes_its_results(name, bench_env):
    arguments, results_file = SHORT_RUNS[name]
    command = [sys.executable, "-m", *name.split(), *arguments]
    finished = subprocess.run(command, cwd=PROJECT_DIR, env=bench_env, capture_output=True, text=True,
                              timeout=BENCH_TIMEOUT_SECONDS)
    assert finished.returncode == 0, f"{' '.join(command)} failed:\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}"
    results = Path(bench_env["PARLEY_BENCH_HOME"]) / "results" / results_file
    assert json.loads(results.read_text()), f"{results} is empty"
