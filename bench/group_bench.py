"""Group fan-out (issue 15): groups of 10, 100 and 1,000 members over 1, 2 and 4 gateway nodes.

For each group size and node count: one group, its members connected round-robin over the nodes
(member i on node i % nodes), a few of them taking turns to send at a fixed message rate. Reports
messages sent, copies delivered, lost (acknowledged, not received within 5 s), duplicates, the
latency sendMessage -> receiveMessage of each message's first and last copy, the CPU
milliseconds per delivered copy of every process of the system (gateways, history, presence,
Redis, Postgres), Redis publishes per message (INFO commandstats), and the pub/sub messages each
node decoded per message it had to hear of (one sent through another node). The routed manager
should make that one publish per other node holding members and one decode per node, whatever
the member count. Prints a table; writes bench/results/groups.json.

    .venv/bin/python -m bench.group_bench [--sizes 10,100,1000] [--nodes 1,2,4] [--seconds 10] [--rate R]

Without --rate, each size gets min(MAX_RATE, COPIES_PER_SECOND / (size - 1)) messages a second
(see those constants): a 1,000-member group at 20/s is ~20,000 copies a second, which a 2-core
machine delivers in full while also running the generators that receive them (bench/RESULTS.md).
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import aiohttp
import redis as redis_client

from bench.group_generator import member_id
from bench.measure import (
    PUBSUB_RECEIVED, RESULTS_DIR, RUN_DIR, CpuMeter, Generators, create_users, fresh_database, gateway_counters,
    gateways_of, percentile, start_stack,
)
from bench.stack import BENCH_JWT
from services.devtools.stack import Stack
from services.devtools.stores import PrivateRedis, find_stores
from services.shared.auth import issue_token

MAX_RATE = 100.0  # messages a second, for small groups
COPIES_PER_SECOND = 20_000  # what large groups are held to: copies delivered a second
SENDERS = 4  # members taking turns to send: one on each node of a 4-node stack
RECEIVER_PROCESSES = 2  # the other members' sockets, split between this many generators
WARM_UP_SIZE, WARM_UP_SECONDS = 10, 2.0
# Quiet: no Redis publish and no pub/sub message decoded for this long. The previous round's
# members going offline are announced to their co-members for a while after they disconnect
# (a 1,000-member group's: ~1,000 announcements, each decoded by every node), and must not be
# charged to this round's messages.
QUIET_SECONDS, SETTLE_TIMEOUT_SECONDS = 1.0, 300.0
REDIS_COMMANDS = ("cmdstat_publish", "cmdstat_evalsha")


def default_rate(size: int) -> float:
    return min(MAX_RATE, round(COPIES_PER_SECOND / max(size - 1, 1)))


async def create_group(history_api_url: str, members: list[str]) -> str:
    """Through history's public API, as the creator (the first member) would."""
    headers = {"Authorization": f"Bearer {issue_token(members[0], BENCH_JWT)}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{history_api_url}/api/groups",
                             json={"name": f"bench {len(members)}", "memberIds": members[1:]}) as answer:
            assert answer.status == 201, await answer.text()
            return (await answer.json())["_id"]


def redis_calls(redis: PrivateRedis) -> dict[str, int]:
    """Calls so far of the commands that publish (PUBLISH is counted inside scripts too)."""
    stats = redis_client.Redis.from_url(redis.url).info("commandstats")
    return {name: stats.get(name, {}).get("calls", 0) for name in REDIS_COMMANDS}


def traffic(redis: PrivateRedis, internal_urls: list[str]) -> float:
    """Publishes so far, and pub/sub messages decoded so far by every node: one number that moves
    while anything is fanned out. Not script calls: every gateway's call sweeper runs one every
    second (`call_sweep_seconds`), with nothing to do too, so they never stop."""
    decoded = asyncio.run(gateway_counters(internal_urls, (PUBSUB_RECEIVED,)))
    return redis_calls(redis)["cmdstat_publish"] + sum(node.get(PUBSUB_RECEIVED, 0) for node in decoded)


def wait_quiet(redis: PrivateRedis, internal_urls: list[str]) -> float:
    """Until nothing is published or decoded for QUIET_SECONDS; how long that took (seconds)."""
    started = time.monotonic()
    last = traffic(redis, internal_urls)
    while time.monotonic() - started < SETTLE_TIMEOUT_SECONDS:
        time.sleep(QUIET_SECONDS)
        now = traffic(redis, internal_urls)
        if now == last:
            return round(time.monotonic() - started - QUIET_SECONDS, 1)
        last = now
    raise RuntimeError(f"still publishing after {SETTLE_TIMEOUT_SECONDS} s")


def generator_arguments(urls: list[str], tag: str, size: int, messages: int, rate: float,
                        seconds: float) -> list[list[str]]:
    """The senders' process first, then the receivers' shares (members SENDERS.. of the group)."""
    common = ["--urls", ",".join(urls), "--tag", tag, "--messages", str(messages), "--seconds", str(seconds)]
    senders = min(SENDERS, size)
    arguments = [common + ["--first", "0", "--count", str(senders), "--send", "--rate", str(rate)]]
    receivers = size - senders
    share = -(-receivers // RECEIVER_PROCESSES)
    for first in range(senders, size, max(share, 1)):
        arguments.append(common + ["--first", str(first), "--count", str(min(share, size - first))])
    return arguments


def run_group(stack: Stack, redis: PrivateRedis, size: int, rate: float, seconds: float, tag: str) -> dict:
    gateways = gateways_of(stack)
    internal_urls = [process.internal_url for process in gateways]
    members = [member_id(tag, index) for index in range(size)]
    asyncio.run(create_users(stack["history"].internal_url, members))
    messages = int(rate * seconds)
    arguments = generator_arguments([process.url for process in gateways], tag, size, messages, rate, seconds)
    generators = Generators("bench.group_generator", arguments,
                            [RUN_DIR / f"group-{tag}-{number}.json" for number in range(len(arguments))])
    try:
        # Members connect before the group exists: they are nobody's partners yet, so their
        # connects announce nothing (a connect storm is not what this measures).
        generators.expect("ready")
        generators.tell(asyncio.run(create_group(stack["history"].url, members)))
        generators.expect("joined")
        settle_seconds = wait_quiet(redis, internal_urls)
        load = os.getloadavg()[0]  # the machine is shared: what else ran is part of the result
        meter = CpuMeter(stack, redis)
        decoded_before = asyncio.run(gateway_counters(internal_urls, (PUBSUB_RECEIVED,)))
        redis_before = redis_calls(redis)
        cpu_before = meter.sample()
        generators.tell("go")
        generators.expect("done")
        cpu = CpuMeter.used(cpu_before, meter.sample())
        redis_after = redis_calls(redis)
        decoded_after = asyncio.run(gateway_counters(internal_urls, (PUBSUB_RECEIVED,)))
    except BaseException:
        generators.kill()
        raise
    outputs = generators.finish()
    return summarise(size, len(gateways), rate, settle_seconds, load, outputs, cpu,
                     [after.get(PUBSUB_RECEIVED, 0) - before.get(PUBSUB_RECEIVED, 0)
                      for before, after in zip(decoded_before, decoded_after)],
                     {name: redis_after[name] - redis_before[name] for name in REDIS_COMMANDS})


def summarise(size: int, nodes: int, rate: float, settle_seconds: float, load: float, outputs: list[dict],
              cpu: dict[str, float], decoded: list[float], redis_calls_made: dict[str, int]) -> dict:
    sender = outputs[0]
    sent_at = sender["sent_at"]
    sent = len(sent_at)
    copies, first, last = 0, {}, {}
    for output in outputs:
        for text, (count, first_at, last_at) in output["copies"].items():
            copies += count
            first[text] = min(first.get(text, first_at), first_at)
            last[text] = max(last.get(text, last_at), last_at)
    first_ms = sorted((first[text] - sent_at[text]) * 1000 for text in first if text in sent_at)
    last_ms = sorted((last[text] - sent_at[text]) * 1000 for text in last if text in sent_at)
    expected = sender["acked"] * (size - 1)
    system_cpu = sum(cpu.values())
    generators_cpu = sum(output["cpu_seconds"] for output in outputs)
    # A node hears, through pub/sub, of the messages sent through the other nodes.
    heard_of = [sent - through for through in sender["via_node"]]
    return {
        "size": size,
        "nodes": nodes,
        "rate_per_s": rate,
        # Waited, before sending, for the previous round's fan-out to end (see QUIET_SECONDS).
        "settle_seconds": settle_seconds,
        "load_average_1min_before": round(load, 2),
        "sent": sent,
        "send_seconds": round(sender["send_seconds"], 2),
        "acked": sender["acked"],
        "refused": sender["errors"],
        "expected_copies": expected,
        "delivered_copies": copies,
        # Acknowledged but not received within the generators' 5 s grace: lost, or only late.
        "lost": max(expected - copies, 0),
        "duplicates": sum(output["duplicates"] for output in outputs),
        "first_copy_p50_ms": percentile(first_ms, 0.50),
        "first_copy_p99_ms": percentile(first_ms, 0.99),
        "last_copy_p50_ms": percentile(last_ms, 0.50),
        "last_copy_p99_ms": percentile(last_ms, 0.99),
        "ack_p99_ms": percentile(sender["ack_ms"], 0.99),
        "cpu_ms_per_copy": round(system_cpu * 1000 / max(copies, 1), 4),
        "cpu_ms_per_copy_by_process": {name: round(used * 1000 / max(copies, 1), 4) for name, used in cpu.items()},
        "generators_cpu_ms_per_copy": round(generators_cpu * 1000 / max(copies, 1), 4),
        "cpu_ms_per_message": round(system_cpu * 1000 / max(sent, 1), 2),
        "redis_publishes_per_message": round(redis_calls_made["cmdstat_publish"] / max(sent, 1), 3),
        "redis_evalsha_per_message": round(redis_calls_made["cmdstat_evalsha"] / max(sent, 1), 3),
        "other_nodes": nodes - 1,
        "decoded_per_node_per_message_heard_of": [round(count / heard, 3) if heard else None
                                                  for count, heard in zip(decoded, heard_of)],
        "decoded_per_node": decoded,
    }


def print_table(rows: list[dict]) -> None:
    print(f"\n{'size':>5} {'nodes':>5} {'msg/s':>5} {'sent':>5} {'copies':>7} {'lost':>4} {'dup':>3} "
          f"{'first p50/p99 ms':>16} {'last p50/p99 ms':>16} {'CPU ms/copy':>11} {'CPU ms/msg':>10} "
          f"{'publishes/msg':>13}  decoded per node per message heard of")
    for row in rows:
        decoded = ", ".join("-" if value is None else f"{value:.2f}"
                            for value in row["decoded_per_node_per_message_heard_of"])
        print(f"{row['size']:>5} {row['nodes']:>5} {row['rate_per_s']:>5.0f} {row['sent']:>5} "
              f"{row['delivered_copies']:>7} {row['lost']:>4} {row['duplicates']:>3} "
              f"{row['first_copy_p50_ms']:>7} /{row['first_copy_p99_ms']:>7} "
              f"{row['last_copy_p50_ms']:>7} /{row['last_copy_p99_ms']:>7} {row['cpu_ms_per_copy']:>11} "
              f"{row['cpu_ms_per_message']:>10} {row['redis_publishes_per_message']:>13}  [{decoded}]")


def commit() -> str:
    answer = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return answer.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="group sizes (members, the sender included)")
    parser.add_argument("--nodes", default="1,2,4", help="gateway node counts")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, help="messages a second for every size (default: by size, see above)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    node_counts = [int(nodes) for nodes in args.nodes.split(",")]

    stores = find_stores(RUN_DIR)
    redis = PrivateRedis(RUN_DIR / "group-redis")
    redis.start()
    results = {"machine": f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"), "commit": commit(),
               "command": " ".join(["python -m bench.group_bench", *sys.argv[1:]]), "groups": []}
    try:
        url = fresh_database(stores, "groupbench")
        for nodes in node_counts:
            stack = start_stack(url, redis, nodes, f"groupbench-{nodes}-{int(time.time())}")
            try:
                # Not reported: fresh processes are slower for their first messages.
                run_group(stack, redis, WARM_UP_SIZE, args.rate or default_rate(WARM_UP_SIZE), WARM_UP_SECONDS,
                          f"w{nodes}t{int(time.time())}")
                for size in sizes:
                    row = run_group(stack, redis, size, args.rate or default_rate(size), args.seconds,
                                    f"s{size}n{nodes}t{int(time.time())}")
                    results["groups"].append(row)
                    print_table([row])
            finally:
                stack.stop()
    finally:
        redis.stop()
        stores.stop()
    print_table(results["groups"])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "groups.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
