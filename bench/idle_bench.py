"""Idle sockets: N websockets held open over four gateway nodes, doing nothing but answer pings.

For each N of `--sockets` (1,000, 10,000 and 100,000 by default) a fresh stack (history,
presence, 4 gateways on a private Redis and the bench database), then generator processes
(`bench.idle_generator`, at most SOCKETS_PER_PROCESS sockets each) open N sockets and answer
engine.io's pings. Reported per N:

- the time until every socket is connected;
- gateway memory per socket: the gateways' RSS after the idle window less their RSS before the
  first connect, over N;
- idle CPU, % of a core per gateway, from /proc/PID/stat over a window of at least one full
  ping interval (settings.ping_interval_seconds, 25 s) once the storm has settled;
- the per-socket cost of keeping sockets alive (engine.io pings, the heartbeats to presence and
  the node refreshes): CPU-µs per socket per second of the gateways, and of presence and Redis
  together; Redis commands per socket per second; pings heard per socket in the window.

Flat per-socket figures across N say the keep-alive costs scale with sockets and no worse; a
per-node cost shows as a per-socket figure that falls as N grows.

Last, issue 21's targets: 100,000 sockets over 4 gateways, at most 20 KiB of gateway memory a
socket, idle CPU under 5 % of a core a gateway, keep-alive costs per socket flat or falling.

File limits are raised in this process and its children (RLIMIT_NOFILE, soft and hard; root
needed past the hard limit), not in the system. The generators connect from 127.0.0.1 to four
gateway ports: the ephemeral range (32768-60999) holds 28,000 sockets per gateway.

    .venv/bin/python -m bench.idle_bench [--sockets 1000,10000,100000] [--window 25]

Prints a table; writes bench/results/idle.json.
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import redis

from bench.history_bench import DATABASE
from bench.measure import RESULTS_DIR, RUN_DIR
from bench.presence_bench import rss_kib
from bench.stack import BENCH_JWT, bench_stack
from services.devtools.stores import PrivateRedis, ensure_database, find_stores, with_database

PROJECT_DIR = Path(__file__).resolve().parents[1]
SOCKETS_PER_PROCESS = 19_000  # within a file limit of 20,000
FDS_BESIDES_SOCKETS = 500  # a gateway's listeners, Redis and HTTP clients, logs
CONCURRENT_CONNECTS = 100  # per generator process
FILE_LIMIT = 200_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def raise_file_limit(wanted: int) -> int:
    """RLIMIT_NOFILE raised towards `wanted`, soft and hard, as far as this process may (past the
    hard limit takes CAP_SYS_RESOURCE, which a container may withhold even from root); the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
        return wanted
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


def gateway_names(count: int, file_limit: int) -> list[str]:
    """At least four gateways, more if a quarter of the sockets would not fit a gateway's file limit."""
    per_gateway = file_limit - FDS_BESIDES_SOCKETS
    return [f"gateway-{n}" for n in range(max(4, math.ceil(count / per_gateway)))]


class Generators:
    """The generator processes, N sockets spread over them and, within each, over the gateways."""

    def __init__(self, urls: list[str], count: int):
        processes = max(1, math.ceil(count / SOCKETS_PER_PROCESS))
        bounds = [count * n // processes for n in range(processes + 1)]
        self.processes = []
        for first, end in zip(bounds, bounds[1:]):
            process = subprocess.Popen([sys.executable, "-m", "bench.idle_generator"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, cwd=PROJECT_DIR)
            process.stdin.write(json.dumps({"urls": urls, "users": [first, end], "concurrency": CONCURRENT_CONNECTS,
                                            "secret": BENCH_JWT.jwt_secret}) + "\n")
            process.stdin.flush()
            self.processes.append(process)

    def answers(self) -> list[dict]:
        return [json.loads(process.stdout.readline() or "{}") for process in self.processes]

    def ask(self, line: str) -> list[dict]:
        for process in self.processes:
            process.stdin.write(line + "\n")
            process.stdin.flush()
        return self.answers()

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(process.pid) for process in self.processes)

    def close(self) -> None:
        for process in self.processes:
            try:
                process.stdin.write("close\n")
                process.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def redis_counters(client: redis.Redis) -> tuple[int, float]:
    stats, cpu = client.info("stats"), client.info("cpu")
    return stats["total_commands_processed"], cpu["used_cpu_sys"] + cpu["used_cpu_user"]


def measure(count: int, gateways: list[str], window: float, settle: float, url: str, run_dir: Path) -> dict:
    private_redis = PrivateRedis(run_dir / "idle-redis")
    private_redis.start()
    try:
        env = {"DATABASE_URL": url, "REDIS_URL": private_redis.url, "LOG_LEVEL": "WARNING"}
        stack = bench_stack(env, run_dir / "logs", ["history", "presence", *gateways])
        stack.start()
        try:
            pids = {name: stack[name].process.pid for name in gateways}
            rss_before = {name: rss_kib(pid) for name, pid in pids.items()}
            started = time.perf_counter()
            generators = Generators([stack[name].url for name in gateways], count)
            try:
                opened = generators.answers()
                connected_after = time.perf_counter() - started
                connected = sum(answer.get("connected", 0) for answer in opened)
                failed = sum(answer.get("failed", 0) for answer in opened)
                time.sleep(settle)  # the storm's tail: presence's batches, onlineUsers
                client = redis.Redis.from_url(private_redis.url)
                generators.ask("count")  # pings heard from now on
                cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                presence_before = cpu_seconds(stack["presence"].process.pid)
                commands_before, redis_cpu_before = redis_counters(client)
                generator_cpu_before = generators.cpu_seconds()
                window_started = time.perf_counter()
                time.sleep(window)
                elapsed = time.perf_counter() - window_started
                cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
                presence_cpu = cpu_seconds(stack["presence"].process.pid) - presence_before
                commands_after, redis_cpu_after = redis_counters(client)
                generator_cpu = generators.cpu_seconds() - generator_cpu_before
                counted = generators.ask("count")
                rss_after = {name: rss_kib(pid) for name, pid in pids.items()}
                client.close()
            finally:
                generators.close()
        finally:
            stack.stop()
    finally:
        private_redis.stop()
    pings = sum(answer.get("pings", 0) for answer in counted)
    still_open = sum(answer.get("open", 0) for answer in counted)
    per_socket_second = 1e6 / (connected * elapsed) if connected else float("nan")
    return {
        "sockets": count,
        "gateways": len(gateways),
        "file limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "connected": connected,
        "failed": failed,
        "open at the end": still_open,
        "connect seconds": round(connected_after, 2),
        "gateway KiB a socket": round(sum(rss_after[n] - rss_before[n] for n in gateways) / max(connected, 1), 2),
        "gateway RSS MiB": [round(rss_after[n] / 1024, 1) for n in gateways],
        "window seconds": round(elapsed, 1),
        "idle CPU % a gateway": [round(100 * cpu[n] / elapsed, 2) for n in gateways],
        "gateway CPU-µs a socket a second": round(sum(cpu.values()) * per_socket_second, 2),
        "presence + Redis CPU-µs a socket a second": round(
            (presence_cpu + redis_cpu_after - redis_cpu_before) * per_socket_second, 3),
        "Redis commands a socket a second": round((commands_after - commands_before) * per_socket_second / 1e6, 5),
        "Redis commands a second": round((commands_after - commands_before) / elapsed, 1),
        "pings a socket in the window": round(pings / max(connected, 1), 3),
        "generator CPU % of a core": round(100 * generator_cpu / elapsed, 1),
    }


TARGET_GATEWAYS, TARGET_KIB, TARGET_IDLE_PERCENT = 4, 20.0, 5.0  # issue 21's idle sockets
# A per-socket keep-alive cost may read this much higher at a larger N and still count as flat:
# the readings of one N move by about a tenth from run to run.
FLAT_MARGIN = 1.25
KEEP_ALIVE_COSTS = ("gateway CPU-µs a socket a second", "presence + Redis CPU-µs a socket a second",
                    "Redis commands a socket a second")


def targets(rows: list[dict]) -> list[str]:
    """Issue 21's idle-socket targets against the rows measured, a line each."""
    lines = []
    for row in rows:
        kib, idle = row["gateway KiB a socket"], max(row["idle CPU % a gateway"])
        held = row["connected"] == row["sockets"] == row["open at the end"]
        verdicts = [
            f"all held: {'met' if held else 'NOT met'}",
            f"{kib:.1f} KiB a socket (target <= {TARGET_KIB:.0f}): {'met' if kib <= TARGET_KIB else 'NOT met'}",
            f"idle CPU {idle:.2f} % of a core a gateway (target < {TARGET_IDLE_PERCENT:.0f}): "
            f"{'met' if idle < TARGET_IDLE_PERCENT else 'NOT met'}",
        ]
        if row["gateways"] != TARGET_GATEWAYS:
            verdicts.append(f"over {row['gateways']} gateways, not {TARGET_GATEWAYS}: NOT met (a process may open "
                            f"{row['file limit']:,} files here, and this process may not raise that)")
        lines.append(f"target at {row['sockets']:,} sockets: " + "; ".join(verdicts))
    for smaller, larger in zip(rows, rows[1:]):
        rising = [name for name in KEEP_ALIVE_COSTS if larger[name] > smaller[name] * FLAT_MARGIN]
        lines.append(f"target, keep-alive cost a socket flat from {smaller['sockets']:,} to {larger['sockets']:,}: "
                     + (f"NOT met ({', '.join(rising)} rose)" if rising else "met"))
    return lines


def table(rows: list[dict]) -> str:
    lines = [
        "| sockets | gateways | connected | connect s | gateway KiB a socket | idle CPU % a gateway (max) | gateway CPU-µs / socket / s"
        " | presence+Redis CPU-µs / socket / s | Redis commands / socket / s | pings / socket in window |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['sockets']:,} | {row['gateways']} | {row['connected']:,} | {row['connect seconds']:.2f} | {row['gateway KiB a socket']:.1f}"
            f" | {max(row['idle CPU % a gateway']):.2f} ({', '.join(map(str, row['idle CPU % a gateway']))})"
            f" | {row['gateway CPU-µs a socket a second']:.2f} | {row['presence + Redis CPU-µs a socket a second']:.3f}"
            f" | {row['Redis commands a socket a second']:.5f} | {row['pings a socket in the window']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", default="1000,10000,100000", help="comma-separated socket counts")
    parser.add_argument("--window", type=float, default=25.0, help="idle window, s (at least one ping interval)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between the last connect and the window")
    args = parser.parse_args()
    counts = [int(part) for part in args.sockets.split(",")]
    # Every gateway holds a quarter of the sockets, and this process starts them: theirs and ours.
    file_limit = raise_file_limit(FILE_LIMIT)

    stores = find_stores(RUN_DIR)
    rows = []
    try:
        url = ensure_database(with_database(stores.database_url, "postgres"), DATABASE)
        for count in counts:
            rows.append(measure(count, gateway_names(count, file_limit), args.window, args.settle, url, RUN_DIR))
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    finally:
        stores.stop()
    print()
    print(table(rows))
    print()
    print("\n".join(targets(rows)))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "idle.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
