"""A connect storm: N idle sockets (10,000 by default, issue 21's storm) over two gateway nodes.

Reports the time until every socket is connected and until presence agrees they are online,
gateway memory per 1,000 sockets, the internal calls made per connect, the Redis commands
per node heartbeat (on a private Redis, so nothing else is counted), and then, every socket
closed at once, the time until no gateway holds one and presence has them all offline. Last,
issue 21's target: 10,000 sockets all connected, and presence agreeing, within 5 s.
Prints a table; writes bench/results/presence-<N>.json.

    .venv/bin/python -m bench.presence_bench [--sockets 10000]
"""

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import redis

from bench.history_bench import DATABASE
from bench.measure import RESULTS_DIR, RUN_DIR, Generators, cpu_seconds
from bench.stack import BENCH_JWT, GATEWAY_TOKEN, bench_stack
from services.devtools.stack import Stack
from services.devtools.stores import PrivateRedis, ensure_database, find_stores, with_database
from services.shared.auth import issue_token

PROJECT_DIR = Path(__file__).resolve().parents[1]
HEARTBEAT_SECONDS = 1.0
CONCURRENT_CONNECTS = 200
USER_PREFIX = "bench-presence"
TARGET_SOCKETS, TARGET_SECONDS = 10_000, 5.0  # issue 21's connect storm


async def open_socket(http: aiohttp.ClientSession, url: str, token: str) -> aiohttp.ClientWebSocketResponse:
    # Offers per-message deflate, as browsers do: what a node accepts there decides its memory.
    ws = await http.ws_connect(url + "/socket.io/?EIO=4&transport=websocket", heartbeat=None, compress=15)
    await ws.receive_str(timeout=30)  # engine.io OPEN
    await ws.send_str("40" + json.dumps({"token": token}))
    while not (await ws.receive_str(timeout=30)).startswith("40"):
        pass
    return ws


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def metric_sum(text: str, name: str, label: str = "") -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
        if line.startswith(name) and label in line and not line.startswith("#")
    )


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/metrics") as answer:
            return await answer.text()


def start_profiles(targets: dict[str, int], out_dir: Path) -> list[subprocess.Popen]:
    """py-spy (pip-installed into .venv) records each process (name -> pid) until `stop_profiles`:
    speedscope files in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).parent / "py-spy"
    return [subprocess.Popen([str(py_spy), "record", "-p", str(pid), "-r", "200", "-f", "speedscope",
                              "-o", str(out_dir / f"{name}.speedscope.json")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in targets.items()]


def stop_profiles(profilers: list[subprocess.Popen]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
    for profiler in profilers:
        profiler.wait(timeout=60)


async def count_online(http: aiohttp.ClientSession, presence_url: str, users: list[str]) -> int:
    """How many of `users` presence holds online now."""
    online = 0
    for chunk in range(0, len(users), 100):
        async with http.get(presence_url + "/internal/presence/online", params={"ids": ",".join(users[chunk:chunk + 100])},
                            headers={"X-Internal-Token": GATEWAY_TOKEN}) as answer:
            online += len((await answer.json())["online"])
    return online


async def sockets_connected(stack: Stack, gateways: list[str]) -> float:
    return sum([metric_sum(await scrape(stack[name].internal_url), "parley_gateway_sockets_connected") for name in gateways])


class InProcessClients:
    """The first generator: aiohttp's websocket client in the bench's own process (200 connects
    under way at once), kept to compare with."""

    def __init__(self, urls: list[str], users: list[str]):
        self.plan = [(urls[n % len(urls)], issue_token(user, BENCH_JWT)) for n, user in enumerate(users)]
        self.pids = [os.getpid()]
        self.sockets = []
        self.cpu_seconds = 0.0

    async def prepare(self) -> None:
        pass

    async def storm(self) -> None:
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        limit = asyncio.Semaphore(CONCURRENT_CONNECTS)

        async def connect(url: str, token: str) -> None:
            async with limit:
                self.sockets.append(await open_socket(self.http, url, token))

        cpu_before = time.process_time()
        await asyncio.gather(*(connect(url, token) for url, token in self.plan))
        self.cpu_seconds = time.process_time() - cpu_before

    async def close(self) -> None:
        for ws in self.sockets:
            await ws.close()
        await self.http.close()


class GeneratorClients:
    """Lean generator processes (bench/connect_generator.py), the users split evenly between them."""

    def __init__(self, urls: list[str], count: int, processes: int, concurrency: int):
        share = -(-count // processes)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        self.generators = Generators(
            "bench.connect_generator",
            [["--urls", ",".join(urls), "--prefix", USER_PREFIX, "--first", str(first),
              "--count", str(min(share, count - first)), "--concurrency", str(max(1, concurrency // processes))]
             for first in range(0, count, share)],
            [RESULTS_DIR / f"connect-generator-{n}.json" for n in range(processes)],
        )
        self.pids = [process.pid for process in self.generators.processes]
        self.cpu_seconds = 0.0

    async def prepare(self) -> None:
        await asyncio.to_thread(self.generators.expect, "ready")  # tokens issued

    async def storm(self) -> None:
        self.generators.tell("go")
        await asyncio.to_thread(self.generators.expect, "connected")

    async def close(self) -> None:
        results = await asyncio.to_thread(self.generators.finish)
        self.cpu_seconds = sum(result["cpu_seconds"] for result in results)
        if failed := sum(result["failed"] for result in results):
            raise RuntimeError(f"{failed} connect(s) failed")


async def run(stack: Stack, gateways: list[str], count: int, redis_url: str, clients_kind: str,
              processes: int, concurrency: int, profile_dir: Path | None = None) -> list[tuple[str, str]]:
    users = [f"{USER_PREFIX}-{n}" for n in range(count)]
    urls = [stack[name].url for name in gateways]
    clients = (InProcessClients(urls, users) if clients_kind == "aiohttp"
               else GeneratorClients(urls, count, processes, concurrency))
    await clients.prepare()
    before = {name: await scrape(stack[name].internal_url) for name in (*gateways, "presence")}
    rss_before = sum(rss_kib(stack[name].process.pid) for name in gateways)
    pids = {name: stack[name].process.pid for name in (*gateways, "presence", "history")}
    profilers = [] if profile_dir is None else start_profiles(
        {**{name: pids[name] for name in (*gateways, "presence")}, "generator": clients.pids[0]}, profile_dir)
    await asyncio.sleep(1 if profilers else 0)  # py-spy attaches
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    async with aiohttp.ClientSession() as http:
        storm = asyncio.create_task(clients.storm())
        started = time.perf_counter()
        await storm
        connected = time.perf_counter() - started
        presence_url = stack["presence"].internal_url
        while await count_online(http, presence_url, users) < count:
            await asyncio.sleep(0.05)
        agreed = time.perf_counter() - started
        # A gateway's per connect it took (count / nodes); the others' per connect of the storm.
        cpu_ms = {name: (cpu_seconds(pid) - cpu_before[name]) * 1000 / (count / len(gateways) if name in gateways else count)
                  for name, pid in pids.items()}
        stop_profiles(profilers)

        after = {name: await scrape(stack[name].internal_url) for name in (*gateways, "presence")}
        rss_per_thousand = (sum(rss_kib(stack[name].process.pid) for name in gateways) - rss_before) / count * 1000
        calls = "parley_gateway_internal_call_duration_seconds_count"
        gateway_calls = sum(metric_sum(after[g], calls) - metric_sum(before[g], calls) for g in gateways)
        history_calls = (metric_sum(after["presence"], "parley_presence_internal_call_duration_seconds_count")
                         - metric_sum(before["presence"], "parley_presence_internal_call_duration_seconds_count"))
        batches = sum(
            metric_sum(after[g], calls, 'route="/internal/presence/events"')
            - metric_sum(before[g], calls, 'route="/internal/presence/events"') for g in gateways
        )

        # Idle: once the storm has settled, only heartbeats, presence's sweeps and the nodes'
        # liveness refreshes (one per heartbeat) reach Redis.
        await asyncio.sleep(2)
        client = redis.Redis.from_url(redis_url)
        window = 5 * HEARTBEAT_SECONDS
        commands_before = client.info("stats")["total_commands_processed"]
        time.sleep(window)
        commands = client.info("stats")["total_commands_processed"] - commands_before
        client.close()
        heartbeats = len(gateways) * window / HEARTBEAT_SECONDS

        # The disconnect storm: every socket closes at once (a load balancer restarting, say).
        gateway_cpu_before = {name: cpu_seconds(pids[name]) for name in gateways}
        started = time.perf_counter()
        await clients.close()
        while await count_online(http, presence_url, users) or await sockets_connected(stack, gateways):
            await asyncio.sleep(0.05)
        all_gone = time.perf_counter() - started
        disconnect_cpu_ms = {name: (cpu_seconds(pids[name]) - gateway_cpu_before[name]) * 1000 / (count / len(gateways))
                             for name in gateways}
    cpu_ms["generators (connecting only)"] = clients.cpu_seconds * 1000 / count
    return [
        ("sockets", f"{count:,} over {len(gateways)} nodes"),
        ("all connected after", f"{connected:.2f} s ({count / connected:,.0f} connects/s)"),
        ("presence agrees after", f"{agreed:.2f} s"),
        ("CPU-ms a connect (a gateway: of its own)",
         ", ".join(f"{name} {ms:.2f}" for name, ms in cpu_ms.items())),
        ("gateway memory per 1,000 sockets", f"{rss_per_thousand / 1024:.1f} MiB ({rss_per_thousand / 1000:.1f} KiB a socket)"),
        ("gateway -> presence calls per connect", f"{gateway_calls / count:.3f} ({batches:.0f} batched event calls)"),
        ("presence -> history calls per connect", f"{history_calls / count:.3f}"),
        ("Redis commands per heartbeat (idle)",
         f"{commands / heartbeats:.1f} (incl. sweeps, route refreshes: {commands} in {window:.0f} s)"),
        ("all closed at once: gone everywhere after", f"{all_gone:.2f} s (no socket on a gateway, none online in presence)"),
        ("CPU-ms a disconnect (a gateway: of its own)", ", ".join(f"{name} {ms:.2f}" for name, ms in disconnect_cpu_ms.items())),
        ("target", storm_verdict(count, agreed)),
    ]


def storm_verdict(count: int, agreed_seconds: float) -> str:
    """Issue 21's: a storm of 10,000 sockets over two nodes, presence agreeing within 5 s."""
    if count != TARGET_SOCKETS:
        return f"set for {TARGET_SOCKETS:,} sockets (--sockets {TARGET_SOCKETS})"
    met = "met" if agreed_seconds <= TARGET_SECONDS else "NOT met"
    return f"{count:,} sockets, presence agrees after {agreed_seconds:.2f} s (target <= {TARGET_SECONDS:.0f}): {met}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=TARGET_SOCKETS)
    parser.add_argument("--client", choices=("lean", "aiohttp"), default="lean",
                        help="lean generator processes, or aiohttp's client in this process (the first generator)")
    parser.add_argument("--generators", type=int, default=2, help="lean generator processes")
    parser.add_argument("--concurrency", type=int, default=200, help="connects under way at once, all generators together")
    parser.add_argument("--profile", type=Path, help="py-spy the gateways, presence and a generator into DIR")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    stores = find_stores(RUN_DIR)
    private_redis = PrivateRedis(RUN_DIR / "presence-redis")
    private_redis.start()
    try:
        url = ensure_database(with_database(stores.database_url, "postgres"), DATABASE)
        env = {"DATABASE_URL": url, "REDIS_URL": private_redis.url, "LOG_LEVEL": "WARNING",
               "HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS)}
        stack = bench_stack(env, RUN_DIR / "logs", ["history", "presence", "gateway-a", "gateway-b"])
        stack.start()
        try:
            rows = asyncio.run(run(stack, ["gateway-a", "gateway-b"], args.sockets, private_redis.url, args.client,
                                 args.generators, args.concurrency, args.profile))
        finally:
            stack.stop()
    finally:
        private_redis.stop()
        stores.stop()
    print()
    for label, value in rows:
        print(f"{label:<40} {value}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"presence-{args.sockets}.json").write_text(json.dumps(dict(rows), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
