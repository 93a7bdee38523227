"""`make bench`: every benchmark in turn, each printing its table (results in bench/results/)."""

import subprocess
import sys

# The history bench first: it seeds the database the store bench measures in. The idle bench
# (1,000 / 10,000 / 100,000 sockets) takes about 5 minutes, most of it connecting 100,000.
BENCHMARKS = [
    "bench.history_bench", "bench.store_bench", "bench.writers_bench", "bench.presence_bench", "bench.recovery_bench",
    "bench.idle_bench", "bench.delivery_bench", "bench.group_bench",
    "bench.media_bench", "bench.reaction_bench", "bench.call_bench", "bench.notify_bench",
    "bench.cluster_bench",
    # The headline delivery figures again as the real socket.io-client sees them (its own CPU is
    # about three times the lean generator's, so fewer rates).
    "bench.delivery_bench --client node --rates 500,1000,2000 --no-scaling",
]


def main() -> int:
    failed = [name for name in BENCHMARKS if subprocess.call([sys.executable, "-m", *name.split()]) != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
