"""Fan-out over one Redis and over a Redis Cluster (issue 19): throughput and Redis CPU per message.

Four gateway nodes, history and presence; pairs of users (sender on node i, receiver on node
i + 1, so every message crosses nodes through Redis) at one offered rate, first with one Redis
(`redis://`, the routing script publishes on the node channels), then with a cluster of three
masters and a replica each (`redis+cluster://`: sharded node channels, batches published from
Python). For each: messages delivered a second, lost, latency, and the Redis CPU per delivered
message (INFO CPU used_cpu_sys + used_cpu_user of every Redis process, replicas included,
before and after the messages flow), with each master's share. Prints a table; writes
bench/results/cluster.json.

    .venv/bin/python -m bench.cluster_bench [--rate 1500] [--seconds 8]
"""

import argparse
import asyncio
import json
import sys
import time

import redis as redis_sync

from bench.measure import (
    PUBSUB_RECEIVED, RESULTS_DIR, RUN_DIR, Generators, create_users, fresh_database, gateway_counters, gateways_of,
    percentile, start_stack,
)
from services.devtools.stores import PrivateRedis, PrivateRedisCluster, find_stores

NODES = 4
GENERATORS = 2
USERS = 200


def redis_cpu(ports: list[int]) -> dict[int, float]:
    """used_cpu_sys + used_cpu_user of each Redis process, by port."""
    used = {}
    for port in ports:
        with redis_sync.Redis(port=port, socket_timeout=5) as client:
            info = client.info("cpu")
        used[port] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return used


def run(stack, ports: list[int], masters: list[int], rate: float, seconds: float, tag: str) -> dict:
    gateways = gateways_of(stack)
    urls = ",".join(process.url for process in gateways)
    tags = [f"{tag}g{n}" for n in range(GENERATORS)]
    pairs = USERS // 2 // GENERATORS
    asyncio.run(create_users(stack["history"].internal_url,
                             [f"{each}-{side}{n}" for each in tags for side in "sr" for n in range(pairs)]))
    generators = Generators("bench.load_generator", [
        ["--urls", urls, "--users", str(pairs * 2), "--rate", str(rate / GENERATORS), "--seconds", str(seconds),
         "--tag", each] for each in tags], [RUN_DIR / f"generator-{each}.json" for each in tags])
    generators.expect("ready")  # Redis CPU counts from here: connecting is not messaging
    internal_urls = [process.internal_url for process in gateways]
    decoded_before = asyncio.run(gateway_counters(internal_urls, (PUBSUB_RECEIVED,)))
    before = redis_cpu(ports)
    generators.tell("go")
    generators.expect("done")
    after = redis_cpu(ports)
    decoded_after = asyncio.run(gateway_counters(internal_urls, (PUBSUB_RECEIVED,)))
    outputs = generators.finish()
    delivered = sum(output["delivered"] for output in outputs)
    acked = sum(output["acked"] for output in outputs)
    delivery = sorted(value for output in outputs for value in output["delivery_ms"])
    used = {port: after[port] - before[port] for port in ports}
    per_message_us = sum(used.values()) * 1e6 / max(delivered, 1)
    decoded = sum(b.get(PUBSUB_RECEIVED, 0) - a.get(PUBSUB_RECEIVED, 0)
                  for a, b in zip(decoded_before, decoded_after))
    return {
        "offered_per_s": rate,
        "achieved_per_s": round(delivered / max(output["send_seconds"] for output in outputs), 1),
        "acked": acked,
        "delivered": delivered,
        "undelivered": acked - min(acked, delivered),
        "duplicates": sum(output["duplicates"] for output in outputs),
        "delivery_p50_ms": percentile(delivery, 0.50),
        "delivery_p99_ms": percentile(delivery, 0.99),
        "redis_cpu_us_per_message": round(per_message_us, 1),
        "masters_cpu_us_per_message": round(sum(used[port] for port in masters) * 1e6 / max(delivered, 1), 1),
        "redis_cpu_seconds": round(sum(used.values()), 3),
        # Of the masters' CPU, the share of each (the replicas' is in the total only).
        "master_shares": [round(used[port] / max(sum(used[m] for m in masters), 1e-9), 2) for port in masters],
        "pubsub_decoded_per_delivered": round(decoded / max(delivered, 1), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1500)
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    stores = find_stores(RUN_DIR)
    results = {"date": time.strftime("%Y-%m-%d"), "nodes": NODES, "rows": []}
    try:
        url = fresh_database(stores, "clusterbench")
        for mode in ("one Redis", "cluster, 3 masters"):
            if mode == "one Redis":
                server = PrivateRedis(RUN_DIR / "cluster-bench-redis")
                server.start()
                ports = masters = [server.port]
            else:
                server = PrivateRedisCluster(RUN_DIR / "cluster-bench-nodes")
                server.start()
                ports, masters = server.ports, server.masters()
            try:
                stack = start_stack(url, server, NODES, f"bench-cluster-{int(time.time())}")
                try:
                    row = run(stack, ports, masters, args.rate, args.seconds, f"c{len(results['rows'])}t{int(time.time())}")
                finally:
                    stack.stop()
            finally:
                server.stop()
            results["rows"].append({"redis": mode, **row})
    finally:
        stores.stop()
    print(f"\n{NODES} gateway nodes, offered {args.rate:.0f} msg/s for {args.seconds:.0f} s, every message across nodes\n")
    print(f"{'Redis':<20} {'delivered/s':>11} {'delivered':>9} {'lost':>4} {'dup':>3} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'Redis CPU us/msg':>16} {'of it masters':>13} {'decoded/msg':>11}  masters' shares of their CPU")
    for row in results["rows"]:
        print(f"{row['redis']:<20} {row['achieved_per_s']:>11} {row['delivered']:>9} {row['undelivered']:>4} "
              f"{row['duplicates']:>3} {row['delivery_p50_ms']:>7} {row['delivery_p99_ms']:>7} "
              f"{row['redis_cpu_us_per_message']:>16} {row['masters_cpu_us_per_message']:>13} "
              f"{row['pubsub_decoded_per_delivered']:>11}  {row['master_shares']}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "cluster.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
