"""A connect storm: N idle sockets (5,000 by default; 10,000 for issue 7) over two gateway nodes.

Reports the time until every socket is connected and until presence agrees they are online,
gateway memory per 1,000 sockets, the internal calls made per connect, and the Redis commands
per node heartbeat (on a private Redis, so nothing else is counted). Prints a table; writes
bench/results/presence-<N>.json.

    .venv/bin/python -m bench.presence_bench [--sockets 5000]
"""

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

import aiohttp
import redis

from bench.history_bench import DATABASE
from bench.stack import BENCH_JWT, GATEWAY_TOKEN, bench_stack
from services.devtools.stack import Stack
from services.devtools.stores import PrivateRedis, ensure_database, find_stores, with_database
from services.shared.auth import issue_token

PROJECT_DIR = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT_DIR / "bench" / "results"
HEARTBEAT_SECONDS = 1.0
CONCURRENT_CONNECTS = 200


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


async def run(stack: Stack, gateways: list[str], count: int, redis_url: str) -> list[tuple[str, str]]:
    jwt = BENCH_JWT
    users = [f"bench-presence-{n}" for n in range(count)]
    before = {name: await scrape(stack[name].internal_url) for name in (*gateways, "presence")}
    rss_before = sum(rss_kib(stack[name].process.pid) for name in gateways)
    connector = aiohttp.TCPConnector(limit=0)
    limit = asyncio.Semaphore(CONCURRENT_CONNECTS)
    sockets = []
    async with aiohttp.ClientSession(connector=connector) as http:
        async def connect(n: int) -> None:
            async with limit:
                sockets.append(await open_socket(http, stack[gateways[n % len(gateways)]].url, issue_token(users[n], jwt)))

        started = time.perf_counter()
        await asyncio.gather(*(connect(n) for n in range(count)))
        connected = time.perf_counter() - started
        presence_url = stack["presence"].internal_url
        while True:
            online = 0
            for chunk in range(0, count, 100):
                async with http.get(presence_url + "/internal/presence/online",
                                    params={"ids": ",".join(users[chunk:chunk + 100])},
                                    headers={"X-Internal-Token": GATEWAY_TOKEN}) as answer:
                    online += len((await answer.json())["online"])
            if online == count:
                break
            await asyncio.sleep(0.05)
        agreed = time.perf_counter() - started

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
        for ws in sockets:
            await ws.close()
    return [
        ("sockets", f"{count:,} over {len(gateways)} nodes"),
        ("all connected after", f"{connected:.2f} s ({count / connected:,.0f} connects/s)"),
        ("presence agrees after", f"{agreed:.2f} s"),
        ("gateway memory per 1,000 sockets", f"{rss_per_thousand / 1024:.1f} MiB ({rss_per_thousand / 1000:.1f} KiB a socket)"),
        ("gateway -> presence calls per connect", f"{gateway_calls / count:.3f} ({batches:.0f} batched event calls)"),
        ("presence -> history calls per connect", f"{history_calls / count:.3f}"),
        ("Redis commands per heartbeat (idle)",
         f"{commands / heartbeats:.1f} (incl. sweeps, route refreshes: {commands} in {window:.0f} s)"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=5000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    run_dir = PROJECT_DIR / ".run" / "bench"
    stores = find_stores(run_dir)
    private_redis = PrivateRedis(run_dir / "presence-redis")
    private_redis.start()
    try:
        url = ensure_database(with_database(stores.database_url, "postgres"), DATABASE)
        env = {"DATABASE_URL": url, "REDIS_URL": private_redis.url, "LOG_LEVEL": "WARNING",
               "HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS)}
        stack = bench_stack(env, run_dir / "logs", ["history", "presence", "gateway-a", "gateway-b"])
        stack.start()
        try:
            rows = asyncio.run(run(stack, ["gateway-a", "gateway-b"], args.sockets, private_redis.url))
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
