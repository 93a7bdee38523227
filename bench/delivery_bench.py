"""Delivery under load, and fan-out as nodes are added: the real system, generators in processes.

For each offered rate (two gateway nodes, most pairs across nodes): achieved rate, delivered,
lost, duplicates, p50/p95/p99 latency sendMessage -> receiveMessage and -> ack, and the CPU
milliseconds per delivered message of every process (from /proc). Then the same load over 1, 2
and 4 nodes: CPU per message and pub/sub messages each node decoded per delivered message.
And where a message's time goes at each rate, from the processes' own histograms (means over
the run): the sending gateway from `sendMessage` to its acknowledgement, the store call it makes
(one per batch), and history's handling of that call, so the HTTP hop is the difference of the
last two and the wait for a call (the batch forming, pacing) plus the emits the difference of
the first two; the client's ack p50 and delivery p50 frame them; and the gateways' garbage-collector pauses.
Last, issue 21's targets against what was measured (p50 <= 7 ms and p99 <= 20 ms at 500/s, p99
< 50 ms up to 3,000/s, faster rates carried in full: nothing lost, nothing later than 1 s).
Prints tables; writes bench/results/delivery.json.

    .venv/bin/python -m bench.delivery_bench [--rates 500,1000,2000,3000,5000] [--seconds 10] [--quick]
        [--client node]   # the real socket.io-client from npm, default options (bench/node/)
"""

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import asyncpg

from bench.measure import (
    PUBSUB_RECEIVED, RESULTS_DIR, RUN_DIR, CpuMeter, Generators, create_users, fresh_database, gateway_counters,
    gateways_of, histogram_totals, percentile, start_stack,
)
from bench.stack import BENCH_JWT
from services.devtools.stack import Stack
from services.devtools.stores import PrivateRedis, find_stores
from services.shared.auth import issue_token

GENERATORS = 2
USERS = 200
METRICS = (PUBSUB_RECEIVED, "parley_gateway_store_batch_messages_sum", "parley_gateway_store_batch_messages_count")
STORE_ROUTE = 'route="/internal/messages/batch"'


async def stage_totals(stack: Stack) -> dict[str, tuple[float, float]]:
    """(sum, count) of each stage's histogram, over every gateway (and history)."""
    stages = {"send": ("parley_gateway_send_duration_seconds", ""),
              "store_call": ("parley_gateway_internal_call_duration_seconds", STORE_ROUTE),
              "gc": ("parley_gateway_gc_pause_seconds", "")}
    totals = {}
    for stage, (name, label) in stages.items():
        found = [await histogram_totals(process.internal_url, name, label) for process in gateways_of(stack)]
        totals[stage] = (sum(total for total, _ in found), sum(count for _, count in found))
    totals["history"] = await histogram_totals(stack["history"].internal_url,
                                               "parley_history_http_request_duration_seconds", STORE_ROUTE)
    return totals


def stage_means_ms(before: dict, after: dict) -> dict[str, float]:
    means = {}
    for stage in after:
        total, count = (after[stage][0] - before[stage][0]), (after[stage][1] - before[stage][1])
        means[stage] = round(total * 1000 / count, 2) if count else 0.0
    return means


def gc_share(before: dict, after: dict, seconds: float, gateways: int) -> float:
    """Per cent of each gateway's time its garbage collector held it (the event loop waited)."""
    return round((after["gc"][0] - before["gc"][0]) / (seconds * gateways) * 100, 2)


async def wal_bytes(database_url: str) -> int:
    """Where the server's write-ahead log is now (bytes since its start): the bench runs alone."""
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
    finally:
        await connection.close()


def node_plan(tag: str, urls: list[str], pairs: int, rate: float, seconds: float) -> Path:
    """The Node generator's plan (bench/node/load_generator.mjs): the same pairs as the lean
    generator makes (sender on one node, receiver on the next), with their tokens."""
    def user(user_id: str, url: str) -> dict:
        return {"id": user_id, "url": url, "token": issue_token(user_id, BENCH_JWT)}

    plan = {"rate": rate, "seconds": seconds, "tag": tag, "pairs": [
        {"sender": user(f"{tag}-s{n}", urls[n % len(urls)]), "receiver": user(f"{tag}-r{n}", urls[(n + 1) % len(urls)])}
        for n in range(pairs)]}
    path = RUN_DIR / f"plan-{tag}.json"
    path.write_text(json.dumps(plan))
    return path


def run_load(stack: Stack, redis: PrivateRedis, rate: float, seconds: float, round_tag: str,
             client: str = "lean") -> dict:
    gateways = gateways_of(stack)
    urls = [process.url for process in gateways]
    internal_urls = [process.internal_url for process in gateways]
    tags = [f"{round_tag}g{n}" for n in range(GENERATORS)]
    pairs = USERS // 2 // GENERATORS
    asyncio.run(create_users(stack["history"].internal_url,
                             [f"{tag}-{side}{n}" for tag in tags for side in "sr" for n in range(pairs)]))
    meter = CpuMeter(stack, redis)
    outs = [RUN_DIR / f"generator-{tag}.json" for tag in tags]
    if client == "node":
        generators = Generators(["node", "bench/node/load_generator.mjs"],
                                [["--plan", str(node_plan(tag, urls, pairs, rate / GENERATORS, seconds))] for tag in tags],
                                outs)
    else:
        generators = Generators(
            "bench.load_generator",
            [["--urls", ",".join(urls), "--users", str(pairs * 2), "--rate", str(rate / GENERATORS),
              "--seconds", str(seconds), "--tag", tag] for tag in tags], outs)
    # CPU is counted from the moment every generator is connected: connecting is not messaging.
    generators.expect("ready")
    counters_before = asyncio.run(gateway_counters(internal_urls, METRICS))
    stages_before = asyncio.run(stage_totals(stack))
    wal_before = asyncio.run(wal_bytes(stack.env["DATABASE_URL"]))
    before = meter.sample()
    generators.tell("go")
    generators.expect("done")
    cpu = CpuMeter.used(before, meter.sample())
    counters_after = asyncio.run(gateway_counters(internal_urls, METRICS))
    stages_after = asyncio.run(stage_totals(stack))
    stages = stage_means_ms(stages_before, stages_after)
    wal_after = asyncio.run(wal_bytes(stack.env["DATABASE_URL"]))
    outputs = generators.finish()

    delivered = sum(output["delivered"] for output in outputs)
    sent = sum(output["sent"] for output in outputs)
    acked = sum(output["acked"] for output in outputs)
    delivery = sorted(value for output in outputs for value in output["delivery_ms"])
    acks = sorted(value for output in outputs for value in output["ack_ms"])
    cpu["generators"] = sum(output["cpu_seconds"] for output in outputs)
    per_message = {name: round(seconds_used * 1000 / max(delivered, 1), 3) for name, seconds_used in cpu.items()}

    def grown(name: str) -> list[float]:
        return [after.get(name, 0) - before.get(name, 0) for before, after in zip(counters_before, counters_after)]

    stored, store_calls = sum(grown(METRICS[1])), sum(grown(METRICS[2]))
    connects = sorted(value for output in outputs for value in output.get("connect_ms", []))
    return {
        "client": client,
        "connect_p50_ms": percentile(connects, 0.50) if connects else None,
        "connect_p99_ms": percentile(connects, 0.99) if connects else None,
        "nodes": len(gateways),
        "offered_per_s": rate,
        "achieved_per_s": round(delivered / max(output["send_seconds"] for output in outputs), 1),
        "sent": sent,
        "acked": acked,
        "delivered": delivered,
        # Acknowledged but not received within the generator's 5 s grace: lost, or only late.
        "undelivered": acked - min(acked, delivered),
        "refused": sum(output["errors"] for output in outputs),
        "duplicates": sum(output["duplicates"] for output in outputs),
        "delivery_p50_ms": percentile(delivery, 0.50),
        "delivery_p95_ms": percentile(delivery, 0.95),
        "delivery_p99_ms": percentile(delivery, 0.99),
        # Issue 21's "carried in full": nothing late beyond 1 s.
        "delivery_max_ms": round(delivery[-1], 1) if delivery else None,
        "ack_p50_ms": percentile(acks, 0.50),
        "ack_p99_ms": percentile(acks, 0.99),
        "cpu_ms_per_message": per_message,
        "cpu_ms_per_message_total": round(sum(per_message.values()), 3),
        "pubsub_decoded_per_delivered": [round(count / max(delivered, 1), 2) for count in grown(METRICS[0])],
        "messages_per_store_call": round(stored / max(store_calls, 1), 1),
        # Means over the run (ms): see the module docstring.
        "gateway_send_mean_ms": stages["send"],
        "store_call_mean_ms": stages["store_call"],
        "history_store_mean_ms": stages["history"],
        "gc_pause_mean_ms": stages["gc"],
        "gc_share_percent": gc_share(stages_before, stages_after, max(output["send_seconds"] for output in outputs),
                                     len(gateways)),
        "wal_bytes_per_message": round((wal_after - wal_before) / max(delivered, 1)),
    }


def print_delivery(rows: list[dict]) -> None:
    if rows and rows[0]["client"] == "node":
        print(f"\nclient: socket.io-client {socket_io_client_version()} (defaults), connect p50 / p99 ms: "
              + "; ".join(f"{row['connect_p50_ms']} / {row['connect_p99_ms']}" for row in rows))
    print(f"\n{'nodes':>5} {'offered/s':>9} {'achieved/s':>10} {'delivered':>9} {'late/lost':>9} {'dup':>4} "
          f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} {'ack p99':>7} {'CPU ms/msg':>10} {'msgs/store call':>15} "
          f"{'WAL B/msg':>9}  per process (ms/msg)")
    for row in rows:
        parts = ", ".join(f"{name} {value}" for name, value in row["cpu_ms_per_message"].items())
        print(f"{row['nodes']:>5} {row['offered_per_s']:>9.0f} {row['achieved_per_s']:>10} {row['delivered']:>9} "
              f"{row['undelivered']:>9} {row['duplicates']:>4} {row['delivery_p50_ms']:>7} {row['delivery_p95_ms']:>7} "
              f"{row['delivery_p99_ms']:>7} {row['delivery_max_ms']:>7} {row['ack_p99_ms']:>7} {row['cpu_ms_per_message_total']:>10} "
              f"{row['messages_per_store_call']:>15} {row['wal_bytes_per_message']:>9}  {parts}")


def print_stages(rows: list[dict]) -> None:
    print(f"\nwhere a message's time goes (means, ms; p50s from the client)\n{'offered/s':>9} {'ack p50':>7} "
          f"{'delivery p50':>12} {'gateway send':>12} {'wait + emits':>12} {'store call':>10} {'HTTP hop':>8} "
          f"{'history':>7} {'GC mean pause':>13} {'GC % of time':>12}")
    for row in rows:
        send, call, history = row["gateway_send_mean_ms"], row["store_call_mean_ms"], row["history_store_mean_ms"]
        print(f"{row['offered_per_s']:>9.0f} {row['ack_p50_ms']:>7} {row['delivery_p50_ms']:>12} {send:>12} "
              f"{round(send - call, 2):>12} {call:>10} {round(call - history, 2):>8} {history:>7} "
              f"{row['gc_pause_mean_ms']:>13} {row['gc_share_percent']:>12}")


def print_targets(rows: list[dict]) -> None:
    """Issue 21's targets, against the rows measured."""
    for row in rows:
        rate, p50, p99 = row["offered_per_s"], row["delivery_p50_ms"], row["delivery_p99_ms"]
        full = row["undelivered"] == 0 and row["delivered"] == row["acked"] and row["refused"] == 0
        verdicts = []
        if rate == 500:
            verdicts.append(f"p50 {p50} ms (target <= 7), p99 {p99} ms (target <= 20): "
                            f"{'met' if p50 <= 7 and p99 <= 20 else 'NOT met'}")
        if rate <= 3000:
            verdicts.append(f"p99 {p99} ms (target < 50): {'met' if p99 < 50 and full else 'NOT met'}")
        else:
            verdicts.append(f"carried in full (all delivered, slowest {row['delivery_max_ms']} ms, target <= 1000): "
                            f"{'met' if full and row['delivery_max_ms'] <= 1000 else 'NOT met'}")
        print(f"target at {rate:,.0f}/s: " + "; ".join(verdicts))


def socket_io_client_version() -> str:
    package = Path(__file__).parent.parent / "services/gateway/webclient/node_modules/socket.io-client/package.json"
    return json.loads(package.read_text())["version"]


def print_scaling(rows: list[dict]) -> None:
    print(f"\n{'nodes':>5} {'delivered':>9} {'CPU ms/msg':>10}  pub/sub messages decoded per delivered message, per node")
    for row in rows:
        print(f"{row['nodes']:>5} {row['delivered']:>9} {row['cpu_ms_per_message_total']:>10}  "
              f"{row['pubsub_decoded_per_delivered']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,1000,2000,3000,5000")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--scaling-rate", type=float, default=1000)
    parser.add_argument("--quick", action="store_true", help="one short rate and a short scaling run")
    parser.add_argument("--no-scaling", action="store_true", help="only the delivery rates, over two nodes")
    parser.add_argument("--client", choices=("lean", "node"), default="lean",
                        help="the lean Python generator, or the real socket.io-client from npm (Node)")
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]
    seconds = args.seconds
    if args.quick:
        rates, seconds = [500.0], 3.0

    stores = find_stores(RUN_DIR)
    redis = PrivateRedis(RUN_DIR / "delivery-redis")
    redis.start()
    results = {"machine": f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"), "delivery": [], "scaling": []}
    try:
        url = fresh_database(stores, "loadbench")
        stack = start_stack(url, redis, 2, f"bench-{int(time.time())}")
        try:
            # Not reported: fresh processes and tables are slower for their first few thousand
            # messages, which would be charged to whichever rate came first.
            run_load(stack, redis, rates[0], min(seconds, 3.0), f"w{int(time.time())}", args.client)
            for number, rate in enumerate(rates):
                results["delivery"].append(
                    run_load(stack, redis, rate, seconds, f"d{number}t{int(time.time())}", args.client))
        finally:
            stack.stop()
        for nodes in () if args.no_scaling else (1, 2, 4):
            stack = start_stack(url, redis, nodes, f"bench-{nodes}-{int(time.time())}")
            try:
                results["scaling"].append(
                    run_load(stack, redis, args.scaling_rate, seconds, f"n{nodes}t{int(time.time())}", args.client))
            finally:
                stack.stop()
    finally:
        redis.stop()
        stores.stop()
    print_delivery(results["delivery"])
    print_stages(results["delivery"])
    held = [row["offered_per_s"] for row in results["delivery"]
            if row["delivery_p99_ms"] < 50 and row["undelivered"] == 0 and row["achieved_per_s"] >= 0.95 * row["offered_per_s"]]
    print(f"\nhighest rate held with p99 < 50 ms and nothing lost: {max(held) if held else 'none'} msg/s")
    print_targets(results["delivery"])
    print_scaling(results["scaling"])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = "delivery.json" if args.client == "lean" else f"delivery-{args.client}.json"
    (RESULTS_DIR / name).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
