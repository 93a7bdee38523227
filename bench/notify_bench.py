"""Notifications (issue 18): pushes per second through one notifier, and the delay from store to
push at a steady rate.

A push receiver in this process stands in for the browsers' push service (as the tests' does):
it decrypts every push with its subscription's key and reads the message ids in it. Messages
are stored through history's internal batch route (the gateway's group commit), each from its
own sender to its own recipient, neither of them looking, so every message is one job and one
push (no collapse: a pair writes again only after COLLAPSE_SECONDS).

- Throughput: N messages are stored with the notifier stopped, until the relay has appended
  their N jobs; then the notifier starts, and from its first push to the N-th the rate and its
  CPU per push are measured: the rate one notifier drains a backlog at.
- Delay: with the notifier running, messages are stored at RATE per second for SECONDS; for each,
  the time from history's answer (stored) to the push's arrival: p50, p99, max.

    .venv/bin/python -m bench.notify_bench [--backlog 3000] [--rate 100] [--seconds 20]
"""

import argparse
import asyncio
import json
import os
import sys
import time

import aiohttp
import asyncpg
import http_ece
import redis.asyncio
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.measure import RESULTS_DIR, RUN_DIR, cpu_seconds, create_users, fresh_database, percentile
from bench.stack import GATEWAY_TOKEN, bench_stack
from services.devtools.stores import PrivateRedis, find_stores
from services.shared.keys import push_stream_key
from services.shared.push import b64url, generate_vapid_keys

BATCH = 200  # messages per store call
WAIT_SECONDS = 120


class Receiver:
    """The push service: every push decrypted, each message id's arrival time kept."""

    def __init__(self):
        self.keys: dict[str, tuple[ec.EllipticCurvePrivateKey, bytes]] = {}  # path -> (key, auth)
        self.arrived: dict[str, float] = {}  # message id -> time.time() of its push
        self.pushes = 0
        self.changed = asyncio.Event()
        self.url = ""
        app = web.Application()
        app.router.add_post("/push/{id}", self.receive)
        self.runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    def subscription(self, name: str) -> dict:
        key, auth = ec.generate_private_key(ec.SECP256R1()), os.urandom(16)
        self.keys[f"/push/{name}"] = (key, auth)
        public = key.public_key().public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.UncompressedPoint)
        return {"endpoint": f"{self.url}/push/{name}", "keys": {"p256dh": b64url(public), "auth": b64url(auth)}}

    async def receive(self, request: web.Request) -> web.Response:
        now = time.time()
        key, auth = self.keys[request.path]
        plain = http_ece.decrypt(await request.read(), private_key=key, auth_secret=auth, version="aes128gcm")
        for message_id in json.loads(plain)["messageIds"]:
            self.arrived.setdefault(message_id, now)
        self.pushes += 1
        self.changed.set()
        return web.Response(status=201)

    async def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while len(self.arrived) < count and time.monotonic() < deadline:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 1)
            except asyncio.TimeoutError:
                pass


async def subscribe_pairs(stack, receiver: Receiver, tag: str, count: int) -> list[tuple[str, str]]:
    senders, recipients = [f"{tag}-s{n}" for n in range(count)], [f"{tag}-r{n}" for n in range(count)]
    await create_users(stack["history"].internal_url, senders + recipients)
    database = await asyncpg.connect(stack.env["DATABASE_URL"])
    try:
        rows = []
        for user in recipients:
            sub = receiver.subscription(user)
            rows.append((sub["endpoint"], user, sub["keys"]["p256dh"], sub["keys"]["auth"]))
        await database.executemany(
            "INSERT INTO push_subscriptions (endpoint, user_id, p256dh, auth) VALUES ($1, $2, $3, $4)", rows)
    finally:
        await database.close()
    return list(zip(senders, recipients))


async def store(http: aiohttp.ClientSession, history: str, pairs: list[tuple[str, str]]) -> tuple[list[str], float]:
    """Stores one message per pair in one call: their ids, and when history answered."""
    body = {"messages": [{"senderId": s, "receiverId": r, "text": f"bench {s}"} for s, r in pairs]}
    async with http.post(history + "/internal/messages/batch", json=body) as answer:
        results = (await answer.json())["results"]
    return [result["message"]["_id"] for result in results], time.time()


async def run(stack, receiver: Receiver, backlog: int, rate: float, seconds: float) -> dict:
    history = stack["history"].internal_url
    notifier = stack["notifier"]
    stream = push_stream_key(stack.env["REDIS_PREFIX"])
    client = redis.asyncio.Redis.from_url(stack.env["REDIS_URL"])
    async with aiohttp.ClientSession(headers={"X-Internal-Token": GATEWAY_TOKEN}) as http:
        # Throughput: a backlog of jobs, then the notifier.
        pairs = await subscribe_pairs(stack, receiver, f"t{int(time.time())}", backlog)
        for start in range(0, backlog, BATCH):
            await store(http, history, pairs[start:start + BATCH])
        while await client.xlen(stream) < backlog:
            await asyncio.sleep(0.1)
        notifier.start()
        await receiver.wait_for(1)  # from the first push: the process's start-up is not the drain
        first, cpu_first, pushed_first = time.time(), cpu_seconds(notifier.process.pid), len(receiver.arrived)
        await receiver.wait_for(backlog)
        drained = time.time() - first
        cpu = cpu_seconds(notifier.process.pid) - cpu_first
        after_first = len(receiver.arrived) - pushed_first
        throughput = {"jobs": backlog, "pushed": len(receiver.arrived), "seconds": round(drained, 2),
                      "pushes_per_s": round(after_first / drained, 1),
                      "notifier_cpu_ms_per_push": round(cpu * 1000 / max(after_first, 1), 3)}

        # Delay at a steady rate: each pair writes once per `seconds` at most (no collapse).
        receiver.arrived.clear()
        count = int(rate * seconds)
        pairs = await subscribe_pairs(stack, receiver, f"d{int(time.time())}", count)
        stored_at: dict[str, float] = {}
        tick, sent, began = 0.02, 0, time.perf_counter()
        cpu_before = cpu_seconds(notifier.process.pid)
        while sent < count:
            due = min(count, int((time.perf_counter() - began) * rate) + 1)
            if due > sent:
                ids, at = await store(http, history, pairs[sent:due])
                stored_at.update({message_id: at for message_id in ids})
                sent = due
            await asyncio.sleep(tick)
        await receiver.wait_for(count)
        cpu = cpu_seconds(notifier.process.pid) - cpu_before
        delays = sorted((receiver.arrived[m] - at) * 1000 for m, at in stored_at.items() if m in receiver.arrived)
    await client.aclose()
    steady = {"offered_per_s": rate, "messages": count, "pushed": len(delays), "lost": count - len(delays),
              "p50_ms": percentile(delays, 0.5), "p99_ms": percentile(delays, 0.99),
              "max_ms": round(delays[-1], 1) if delays else None,
              "notifier_cpu_ms_per_push": round(cpu * 1000 / max(len(delays), 1), 3)}
    return {"throughput": throughput, "steady": steady}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    stores = find_stores(RUN_DIR)
    redis_server = PrivateRedis(RUN_DIR / "notify-redis")
    redis_server.start()
    private, public = generate_vapid_keys()

    async def with_receiver() -> dict:
        receiver = Receiver()
        await receiver.start()
        stack = bench_stack({"DATABASE_URL": url, "REDIS_URL": redis_server.url, "REDIS_PREFIX": f"bench-n{int(time.time())}",
                             "LOG_LEVEL": "WARNING", "VAPID_PRIVATE_KEY": private, "VAPID_PUBLIC_KEY": public,
                             "PUSH_ALLOW_LOOPBACK_ENDPOINTS": "true", "PUSH_RELAY_BATCH": "1000"},
                            RUN_DIR / "logs", ["history", "notifier"])
        stack["history"].start()
        await asyncio.to_thread(stack["history"].wait_ready)
        try:
            return await run(stack, receiver, args.backlog, args.rate, args.seconds)
        finally:
            await asyncio.to_thread(stack.stop)
            await receiver.runner.cleanup()

    try:
        url = fresh_database(stores, "notifybench")
        row = asyncio.run(with_receiver())
    finally:
        redis_server.stop()
        stores.stop()
    row.update({"machine": f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")})
    t, s = row["throughput"], row["steady"]
    print(f"\none notifier draining {t['jobs']} jobs: {t['pushed']} pushed in {t['seconds']} s = "
          f"{t['pushes_per_s']} pushes/s from the first push on, notifier {t['notifier_cpu_ms_per_push']} CPU-ms a push")
    print(f"{'offered/s':>9} {'messages':>8} {'pushed':>7} {'lost':>5} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'notifier CPU-ms/push':>21}")
    print(f"{s['offered_per_s']:>9.0f} {s['messages']:>8} {s['pushed']:>7} {s['lost']:>5} {s['p50_ms']:>7} "
          f"{s['p99_ms']:>7} {s['max_ms']:>7} {s['notifier_cpu_ms_per_push']:>21}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "notifications.json").write_text(json.dumps(row, indent=2))
    return 0 if s["lost"] == 0 and t["pushed"] == t["jobs"] else 1


if __name__ == "__main__":
    sys.exit(main())
