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


def run(name: str, verdicts: list[str]) -> bool:
    """One bench, its output passed through as it comes; its target lines kept for the summary."""
    label = name.split()[0].removeprefix("bench.") + (" (socket.io-client)" if "--client node" in name else "")
    bench = subprocess.Popen([sys.executable, "-m", *name.split()], stdout=subprocess.PIPE, text=True, bufsize=1)
    for line in bench.stdout:
        print(line, end="", flush=True)
        if line.startswith("target"):
            verdicts.append(f"{label}: {' '.join(line.split())}")
    return bench.wait() == 0


def main() -> int:
    verdicts: list[str] = []
    failed = [name for name in BENCHMARKS if not run(name, verdicts)]
    print("\nTargets (issue 21), as each bench judged its run:")
    print("\n".join(verdicts))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
