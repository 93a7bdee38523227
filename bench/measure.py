"""What the benches that drive the whole system share: the stack they start, the users they
create, the generator processes they drive, and how they count CPU and each node's work.

A generator (bench/load_generator.py, bench/group_generator.py) is a process of its own that
holds sockets; the bench speaks to it one line at a time on its stdin/stdout (`Generators`), so
that CPU is sampled only while messages flow: connecting and disconnecting are not charged to them.
"""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from bench.stack import ADMIN_TOKEN, bench_stack
from services.devtools.stack import Stack
from services.devtools.stores import PrivateRedis, Stores, drop_database, ensure_database, with_database

PROJECT_DIR = Path(__file__).resolve().parents[1]
# Where results and run files (logs, private Redis servers, plans) go, and the prefix of the
# benches' database names. The test that runs every bench (tests/bench) sets both, so it never
# touches a user's results, logs or seeded databases.
BENCH_HOME = os.environ.get("PARLEY_BENCH_HOME")
RESULTS_DIR = Path(BENCH_HOME) / "results" if BENCH_HOME else PROJECT_DIR / "bench" / "results"
RUN_DIR = Path(BENCH_HOME) / "run" if BENCH_HOME else PROJECT_DIR / ".run" / "bench"
DATABASE_PREFIX = os.environ.get("PARLEY_BENCH_DATABASES", "parley_")
TICKS = os.sysconf("SC_CLK_TCK")
# A generator that has not answered in this long is stuck (a 1,000-member group connects in ~10 s).
GENERATOR_TIMEOUT_SECONDS = 120

PUBSUB_RECEIVED = "parley_gateway_pubsub_messages_received_total"


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def percentile(values: list[float], share: float) -> float:
    return round(values[min(len(values) - 1, int(len(values) * share))], 1) if values else float("nan")


def bench_database(name: str) -> str:
    """A bench's database name: `parley_<name>`, unless the run says another prefix."""
    return DATABASE_PREFIX + name


def fresh_database(stores: Stores, name: str) -> str:
    """A new, empty database each run (`bench_database(name)`): tables grown (and, where
    autovacuum is off, as on the development machine, bloated) by earlier runs would make runs
    incomparable."""
    admin_url = with_database(stores.database_url, "postgres")
    drop_database(admin_url, bench_database(name))
    return ensure_database(admin_url, bench_database(name))


def start_stack(database_url: str, redis: PrivateRedis, nodes: int, prefix: str) -> Stack:
    """History, presence and `nodes` gateways (`gateway-0`...), with send limits out of the way."""
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis.url, "REDIS_PREFIX": prefix, "LOG_LEVEL": "WARNING",
           "SEND_RATE_PER_SECOND": "1000", "SEND_BURST": "1000"}
    stack = bench_stack(env, RUN_DIR / "logs", ["history", "presence", *(f"gateway-{node}" for node in range(nodes))])
    stack.start()
    return stack


def gateways_of(stack: Stack) -> list:
    return [process for name, process in stack.processes.items() if name.startswith("gateway")]


async def create_users(history_internal_url: str, user_ids: list[str]) -> None:
    """Through history's internal API, with the admin token (as the auth service would)."""
    async with aiohttp.ClientSession(headers={"X-Internal-Token": ADMIN_TOKEN}) as http:
        limit = asyncio.Semaphore(50)

        async def put(user_id: str) -> None:
            async with limit, http.put(f"{history_internal_url}/internal/users/{user_id}",
                                       json={"userName": user_id}) as answer:
                assert answer.status == 200, await answer.text()

        await asyncio.gather(*(put(user_id) for user_id in user_ids))


async def gateway_counters(internal_urls: list[str], names: tuple[str, ...]) -> list[dict[str, float]]:
    """Each node's value of each named metric (from its internal /metrics), node by node."""
    counters = []
    async with aiohttp.ClientSession() as http:
        for url in internal_urls:
            async with http.get(url + "/metrics") as answer:
                text = await answer.text()
            counters.append({line.split()[0]: float(line.split()[-1]) for line in text.splitlines()
                             if line.split() and line.split()[0] in names})
    return counters


async def histogram_totals(url: str, name: str, label: str = "") -> tuple[float, float]:
    """(sum, count) of a histogram in a process' /metrics (`url`: its internal listener), over
    the series whose labels contain `label` (e.g. 'route="/internal/messages/batch"')."""
    total = count = 0.0
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/metrics") as answer:
            text = await answer.text()
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        metric = series.split("{", 1)[0]
        if label not in series:
            continue
        if metric == f"{name}_sum":
            total += float(value)
        elif metric == f"{name}_count":
            count += float(value)
    return total, count


class CpuMeter:
    """CPU seconds used by every process of the system: the stack's, Redis, and every Postgres
    process (backends come and go, so they are looked up at each sample; one that exits between
    two samples takes its CPU of that interval with it, a small undercount, never a negative)."""

    def __init__(self, stack: Stack, redis: PrivateRedis):
        self.pids = {name: process.process.pid for name, process in stack.processes.items()}
        self.pids["redis"] = redis.process.pid

    def sample(self) -> dict[str, float | dict[int, float]]:
        used: dict = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        used["postgres"] = {pid: cpu_seconds(pid) for pid in postgres_pids()}
        return used

    @staticmethod
    def used(before: dict, after: dict) -> dict[str, float]:
        """Seconds each process used between two samples (Postgres: all its processes together)."""
        used = {name: after[name] - before[name] for name in after if name != "postgres"}
        used["postgres"] = sum(seconds - before["postgres"].get(pid, 0.0) for pid, seconds in after["postgres"].items())
        return used


class Generators:
    """Generator processes (`python -m <module> <args>`), driven line by line: each answers a
    word on stdout when it reaches a step, and waits for a line on stdin before the next."""

    def __init__(self, module: str | list[str], arguments: list[list[str]], out_files: list[Path]):
        """`module`: a Python module (`python -m`), or a whole command (the Node generator)."""
        self.out_files = out_files
        command = [sys.executable, "-m", module] if isinstance(module, str) else module
        self.processes = [
            subprocess.Popen([*command, *args, "--out", str(out)], cwd=PROJECT_DIR,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for args, out in zip(arguments, out_files)
        ]

    def expect(self, word: str) -> None:
        """Every generator has said `word` (it reached that step)."""
        for process in self.processes:
            line = process.stdout.readline().strip()
            if line != word:
                self.kill()
                raise RuntimeError(f"a generator said {line!r} where {word!r} was expected (exit {process.poll()})")

    def tell(self, line: str) -> None:
        for process in self.processes:
            process.stdin.write(line + "\n")
            process.stdin.flush()

    def finish(self) -> list[dict]:
        """Lets them close their sockets and exit; what each wrote."""
        self.tell("exit")
        for process in self.processes:
            if process.wait(timeout=GENERATOR_TIMEOUT_SECONDS) != 0:
                raise RuntimeError("a load generator failed")
        return [json.loads(out.read_text()) for out in self.out_files]

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
