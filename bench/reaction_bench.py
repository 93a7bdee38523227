"""The cost of a reaction at a fixed rate (issue 16: "the cost of a reaction at 1,000/s").

PAIRS pairs of users, the reacting one on gateway-0 and the other on gateway-1, each pair with
one message between them. At RATE reactions per second in all, each reacting user alternately
puts 👍 on its message and takes it off (`react` / `unreact`, so every call changes the
message and is heard), over raw websockets (bench/lean_socket.py). Reported: reactions
acknowledged, the other member's `reactionUpdated` heard, p50/p99 latency from the call to
that event on the other node, and the CPU milliseconds per reaction of every process (from
/proc: gateways, history, presence, Redis, Postgres, and this process, which holds the sockets).
Writes bench/results/reactions.json.

    .venv/bin/python -m bench.reaction_bench [--rate 1000] [--seconds 10] [--pairs 100]
"""

import argparse
import asyncio
import json
import os
import sys
import time
from collections import defaultdict, deque

from bench.lean_socket import LeanSocket
from bench.measure import RESULTS_DIR, RUN_DIR, CpuMeter, cpu_seconds, create_users, fresh_database, percentile
from bench.stack import BENCH_JWT, bench_stack
from services.devtools.stores import PrivateRedis, find_stores
from services.shared.auth import issue_token

EMOJI = "👍"
# Events still arriving this long after the last call are counted; later ones are lost.
GRACE_SECONDS = 5.0


class Member:
    """One user's socket, with its acks as futures and every reactionUpdated's arrival time."""

    def __init__(self, on_update):
        self.socket: LeanSocket | None = None
        self.pending: dict[int, asyncio.Future] = {}
        self.on_update = on_update

    async def open(self, url: str, user_id: str) -> "Member":
        self.socket = await LeanSocket.open(url, issue_token(user_id, BENCH_JWT), self.frame)
        return self

    def frame(self, _socket: LeanSocket, data: str) -> None:
        if data.startswith("43"):
            bracket = data.index("[")
            future = self.pending.pop(int(data[2:bracket]), None)
            if future is not None and not future.done():
                future.set_result(json.loads(data[bracket:])[0])
        elif data.startswith('42["reactionUpdated"'):
            self.on_update(json.loads(data[2:])[1]["messageId"])

    def call(self, event: str, payload: dict) -> asyncio.Future:
        self.socket.next_ack += 1
        number = self.socket.next_ack
        future = asyncio.get_running_loop().create_future()
        self.pending[number] = future
        self.socket.send_text(f"42{number}" + json.dumps([event, payload], ensure_ascii=False))
        return future


async def run(urls: list[str], history_url: str, meter: CpuMeter, rate: float, seconds: float, pairs: int) -> dict:
    tag = f"r{int(time.time())}"
    reactors, others = [f"{tag}-a{n}" for n in range(pairs)], [f"{tag}-b{n}" for n in range(pairs)]
    await create_users(history_url, reactors + others)
    sent_at: dict[str, deque] = defaultdict(deque)
    latencies: list[float] = []
    heard = 0

    def on_update(message_id: str) -> None:  # only the other members' sockets count
        nonlocal heard
        if sent_at[message_id]:
            latencies.append((time.perf_counter() - sent_at[message_id].popleft()) * 1000)
            heard += 1

    a_side = [await Member(lambda _id: None).open(urls[0], user) for user in reactors]
    b_side = [await Member(on_update).open(urls[1], user) for user in others]
    messages = []
    for member, other in zip(a_side, others):
        ack = await member.call("sendMessage", {"receiverId": other, "text": "react to me"})
        messages.append(ack["message"]["_id"])

    interval, calls, acked, refused = 1 / rate, 0, 0, 0
    acks: list[asyncio.Future] = []
    before = {**meter.sample(), "bench": cpu_seconds(os.getpid())}
    started = time.perf_counter()
    while (now := time.perf_counter()) - started < seconds:
        due = int((now - started) / interval) + 1
        while calls < due:
            pair = calls % pairs
            event = "react" if (calls // pairs) % 2 == 0 else "unreact"
            sent_at[messages[pair]].append(time.perf_counter())
            acks.append(a_side[pair].call(event, {"messageId": messages[pair], "emoji": EMOJI}))
            calls += 1
        await asyncio.sleep(interval * 5)
    send_seconds = time.perf_counter() - started
    results = await asyncio.gather(*(asyncio.wait_for(ack, GRACE_SECONDS) for ack in acks), return_exceptions=True)
    acked = sum(1 for result in results if isinstance(result, dict) and result.get("ok"))
    refused = len(results) - acked
    deadline = time.perf_counter() + GRACE_SECONDS
    while heard < acked and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    after = {**meter.sample(), "bench": cpu_seconds(os.getpid())}
    for member in a_side + b_side:
        member.socket.close()
    used = CpuMeter.used(before, after)
    per_reaction = {name: round(value * 1000 / max(heard, 1), 3) for name, value in used.items()}
    latencies.sort()
    return {"offered_per_s": rate, "achieved_per_s": round(calls / send_seconds, 1), "calls": calls,
            "acked": acked, "refused": refused, "heard": heard, "unheard": acked - min(acked, heard),
            "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99),
            "cpu_ms_per_reaction": per_reaction, "cpu_ms_per_reaction_total": round(sum(per_reaction.values()), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--pairs", type=int, default=100)
    args = parser.parse_args()
    stores = find_stores(RUN_DIR)
    redis = PrivateRedis(RUN_DIR / "reaction-redis")
    redis.start()
    try:
        url = fresh_database(stores, "reactionbench")
        per_user = str(max(10.0, 2 * args.rate / args.pairs))  # the limit out of the way, not the point here
        stack = bench_stack({"DATABASE_URL": url, "REDIS_URL": redis.url, "REDIS_PREFIX": f"bench-r{int(time.time())}",
                             "LOG_LEVEL": "WARNING", "REACTION_RATE_PER_SECOND": per_user, "REACTION_BURST": per_user,
                             "SEND_RATE_PER_SECOND": "1000", "SEND_BURST": "1000"},
                            RUN_DIR / "logs", ["history", "presence", "gateway-0", "gateway-1"])
        stack.start()
        try:
            row = asyncio.run(run([stack["gateway-0"].url, stack["gateway-1"].url], stack["history"].internal_url,
                                  CpuMeter(stack, redis), args.rate, args.seconds, args.pairs))
        finally:
            stack.stop()
    finally:
        redis.stop()
        stores.stop()
    row.update({"machine": f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"), "seconds": args.seconds,
                "pairs": args.pairs})
    parts = ", ".join(f"{name} {value}" for name, value in row["cpu_ms_per_reaction"].items())
    print(f"\n{'offered/s':>9} {'achieved/s':>10} {'acked':>6} {'heard':>6} {'unheard':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU ms/reaction':>15}  per process (ms/reaction)")
    print(f"{row['offered_per_s']:>9.0f} {row['achieved_per_s']:>10} {row['acked']:>6} {row['heard']:>6} "
          f"{row['unheard']:>7} {row['p50_ms']:>7} {row['p99_ms']:>7} {row['cpu_ms_per_reaction_total']:>15}  {parts}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "reactions.json").write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
