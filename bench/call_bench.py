"""The cost of a call's signalling (issue 17): whole calls, caller on gateway-0, callee on gateway-1.

PAIRS pairs each place calls back to back for SECONDS: `callUser`, the callee's `incomingCall`,
`answerCall`, the caller's `callAnswered`, CANDIDATES `iceCandidate` each way (relayed to the
one node holding the other party), `endCall`, both `callEnded`, and the call's message stored.
Reported: calls completed per second, p50/p99 of ring latency (callUser sent -> incomingCall
on the other node), answer latency (answerCall sent -> callAnswered) and candidate relay
latency, the CPU milliseconds per call of every process, and Redis commands per call (from
Redis's own counter: the call scripts, the relays' publishes and the routing of each emit).
Writes bench/results/calls.json.

    .venv/bin/python -m bench.call_bench [--pairs 50] [--seconds 10] [--candidates 10]
"""

import argparse
import asyncio
import json
import os
import sys
import time

import redis

from bench.lean_socket import LeanSocket
from bench.measure import RESULTS_DIR, RUN_DIR, CpuMeter, cpu_seconds, create_users, fresh_database, percentile
from bench.stack import BENCH_JWT, bench_stack
from services.devtools.stores import PrivateRedis, find_stores
from services.shared.auth import issue_token

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n" + "a=x\r\n" * 400
TIMEOUT_SECONDS = 10.0


class Party:
    """One user's socket: acks and awaited events as futures, keyed by what identifies them."""

    def __init__(self):
        self.socket: LeanSocket | None = None
        self.acks: dict[int, asyncio.Future] = {}
        self.waiting: dict[tuple, asyncio.Future] = {}
        self.early: dict[tuple, float] = {}  # arrived before anyone expected it (before an ack)

    async def open(self, url: str, user_id: str) -> "Party":
        self.socket = await LeanSocket.open(url, issue_token(user_id, BENCH_JWT), self.frame)
        return self

    def frame(self, _socket: LeanSocket, data: str) -> None:
        if data.startswith("43"):
            bracket = data.index("[")
            future = self.acks.pop(int(data[2:bracket]), None)
            if future is not None and not future.done():
                future.set_result(json.loads(data[bracket:])[0])
        elif data.startswith("42["):
            event, payload = json.loads(data[2:])[:2]
            key = (event, payload.get("callId") if isinstance(payload, dict) else None)
            if event == "iceCandidate":
                key += (payload["candidate"]["candidate"],)
            future = self.waiting.pop(key, None)
            if future is not None and not future.done():
                future.set_result(time.perf_counter())
            elif event in ("incomingCall", "callEnded"):
                self.early[key] = time.perf_counter()

    def expect(self, *key) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if key in self.early:
            future.set_result(self.early.pop(key))
        else:
            self.waiting[key] = future
        return future

    def call(self, event: str, payload: dict) -> asyncio.Future:
        self.socket.next_ack += 1
        number = self.socket.next_ack
        future = self.acks[number] = asyncio.get_running_loop().create_future()
        self.socket.send_text(f"42{number}" + json.dumps([event, payload]))
        return future


async def one_call(caller: Party, callee: Party, callee_id: str, candidates: int, seen: dict) -> None:
    sent = time.perf_counter()
    ack = await asyncio.wait_for(caller.call("callUser", {"to": callee_id, "kind": "video", "sdp": SDP}),
                                 TIMEOUT_SECONDS)
    assert ack["ok"], ack
    call_id = ack["callId"]
    ringing = callee.expect("incomingCall", call_id)  # perhaps heard before the ack: `early`
    seen["ring"].append((await asyncio.wait_for(ringing, TIMEOUT_SECONDS) - sent) * 1000)
    answered = caller.expect("callAnswered", call_id)
    sent = time.perf_counter()
    assert (await asyncio.wait_for(callee.call("answerCall", {"callId": call_id, "sdp": SDP}), TIMEOUT_SECONDS))["ok"]
    seen["answer"].append((await asyncio.wait_for(answered, TIMEOUT_SECONDS) - sent) * 1000)
    for n in range(candidates):
        for speaker, listener in ((caller, callee), (callee, caller)):
            line = f"candidate:{n} 1 udp 2122260223 192.0.2.{n % 250 + 1} {50000 + n} typ host"
            heard = listener.expect("iceCandidate", call_id, line)
            sent = time.perf_counter()
            speaker.call("iceCandidate", {"callId": call_id, "candidate": {"candidate": line, "sdpMid": "0",
                                                                           "sdpMLineIndex": 0}})
            seen["candidate"].append((await asyncio.wait_for(heard, TIMEOUT_SECONDS) - sent) * 1000)
    ended = callee.expect("callEnded", call_id)
    assert (await asyncio.wait_for(caller.call("endCall", {"callId": call_id}), TIMEOUT_SECONDS))["ok"]
    await asyncio.wait_for(ended, TIMEOUT_SECONDS)
    seen["calls"] += 1


async def run(urls: list[str], history_url: str, meter: CpuMeter, redis_url: str, pairs: int, seconds: float,
              candidates: int) -> dict:
    tag = f"c{int(time.time())}"
    callers, callees = [f"{tag}-a{n}" for n in range(pairs)], [f"{tag}-b{n}" for n in range(pairs)]
    await create_users(history_url, callers + callees)
    a_side = [await Party().open(urls[0], user) for user in callers]
    b_side = [await Party().open(urls[1], user) for user in callees]
    seen = {"ring": [], "answer": [], "candidate": [], "calls": 0, "failed": 0}
    counter = redis.Redis.from_url(redis_url)
    commands_before = counter.info("stats")["total_commands_processed"]
    before = {**meter.sample(), "bench": cpu_seconds(os.getpid())}
    started = time.perf_counter()

    async def pair_loop(caller: Party, callee: Party, callee_id: str) -> None:
        while time.perf_counter() - started < seconds:
            try:
                await one_call(caller, callee, callee_id, candidates, seen)
            except (AssertionError, asyncio.TimeoutError):
                seen["failed"] += 1

    await asyncio.gather(*(pair_loop(a, b, user) for a, b, user in zip(a_side, b_side, callees)))
    elapsed = time.perf_counter() - started
    after = {**meter.sample(), "bench": cpu_seconds(os.getpid())}
    commands = counter.info("stats")["total_commands_processed"] - commands_before
    counter.close()
    for party in a_side + b_side:
        party.socket.close()
    calls = max(seen["calls"], 1)
    used = CpuMeter.used(before, after)
    per_call = {name: round(value * 1000 / calls, 3) for name, value in used.items()}
    return {"pairs": pairs, "candidates_each_way": candidates, "calls": seen["calls"], "failed": seen["failed"],
            "calls_per_s": round(seen["calls"] / elapsed, 1),
            **{f"{name}_p50_ms": percentile(sorted(seen[name]), 0.50) for name in ("ring", "answer", "candidate")},
            **{f"{name}_p99_ms": percentile(sorted(seen[name]), 0.99) for name in ("ring", "answer", "candidate")},
            "redis_commands_per_call": round(commands / calls, 1),
            "cpu_ms_per_call": per_call, "cpu_ms_per_call_total": round(sum(per_call.values()), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--candidates", type=int, default=10)
    args = parser.parse_args()
    stores = find_stores(RUN_DIR)
    private_redis = PrivateRedis(RUN_DIR / "call-redis")
    private_redis.start()
    try:
        url = fresh_database(stores, "callbench")
        stack = bench_stack({"DATABASE_URL": url, "REDIS_URL": private_redis.url,
                             "REDIS_PREFIX": f"bench-c{int(time.time())}", "LOG_LEVEL": "WARNING",
                             # The per-user limits out of the way: the bench calls back to back.
                             "CALL_RATE_PER_SECOND": "1000", "CALL_BURST": "1000",
                             "ICE_RATE_PER_SECOND": "1000", "ICE_BURST": "1000"},
                            RUN_DIR / "logs", ["history", "presence", "gateway-0", "gateway-1"])
        stack.start()
        try:
            row = asyncio.run(run([stack["gateway-0"].url, stack["gateway-1"].url], stack["history"].internal_url,
                                  CpuMeter(stack, private_redis), private_redis.url, args.pairs, args.seconds,
                                  args.candidates))
        finally:
            stack.stop()
    finally:
        private_redis.stop()
        stores.stop()
    row.update({"machine": f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"), "seconds": args.seconds})
    parts = ", ".join(f"{name} {value}" for name, value in row["cpu_ms_per_call"].items())
    print(f"\n{'pairs':>5} {'calls/s':>7} {'calls':>6} {'failed':>6} {'ring p50/p99 ms':>16} {'answer p50/p99':>15} "
          f"{'candidate p50/p99':>18} {'Redis cmd/call':>14} {'CPU ms/call':>11}  per process (ms/call)")
    print(f"{row['pairs']:>5} {row['calls_per_s']:>7} {row['calls']:>6} {row['failed']:>6} "
          f"{row['ring_p50_ms']:>7}/{row['ring_p99_ms']:<8} {row['answer_p50_ms']:>6}/{row['answer_p99_ms']:<8} "
          f"{row['candidate_p50_ms']:>8}/{row['candidate_p99_ms']:<9} {row['redis_commands_per_call']:>14} "
          f"{row['cpu_ms_per_call_total']:>11}  {parts}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "calls.json").write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
