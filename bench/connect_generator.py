"""One connect-storm generator process: opens idle Socket.IO websockets as fast as it is let
(bench/lean_socket.py, a client kept light so that the generator takes little of the CPU it
measures), and holds them until told. Tokens are issued before the storm (clients have theirs
already), so the storm's CPU is only connecting. Writes its figures as JSON to --out.

    python -m bench.connect_generator --urls URL_A,URL_B --prefix P --first 0 --count 5000 --out F

The exchange with the bench (bench/measure.py, `Generators`): "ready" once the tokens are
issued, then waits for "go"; connects user P-n to urls[n % len(urls)] for n in
[first, first + count); says "connected" and waits for "exit"; then closes its sockets.
"""

import argparse
import asyncio
import json
import resource
import time

import uvloop

from bench.generator_steps import cpu_seconds_used, reached
from bench.lean_socket import LeanSocket
from bench.stack import BENCH_JWT
from services.shared.auth import issue_token


async def run(args) -> dict:
    urls = args.urls.split(",")
    numbers = range(args.first, args.first + args.count)
    plan = [(urls[n % len(urls)], issue_token(f"{args.prefix}-{n}", BENCH_JWT)) for n in numbers]
    limit = asyncio.Semaphore(args.concurrency)
    sockets: list[LeanSocket] = []
    connect_ms: list[float] = []
    failures = 0

    def ignore(socket: LeanSocket, frame: str) -> None:
        pass  # idle sockets: `onlineUsers` and the like are not this bench's business

    async def connect(url: str, token: str) -> None:
        nonlocal failures
        async with limit:
            started = time.perf_counter()
            try:
                sockets.append(await LeanSocket.open(url, token, ignore))
            except (OSError, asyncio.TimeoutError):
                failures += 1
                return
            connect_ms.append((time.perf_counter() - started) * 1000)

    await reached("ready")
    cpu_before = cpu_seconds_used()
    started = time.perf_counter()
    await asyncio.gather(*(connect(url, token) for url, token in plan))
    seconds = time.perf_counter() - started
    cpu = cpu_seconds_used() - cpu_before
    await reached("connected")
    for socket in sockets:
        socket.close()
    return {"connected": len(sockets), "failed": failures, "seconds": seconds, "cpu_seconds": cpu,
            "connect_ms": sorted(connect_ms)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--urls", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=100, help="connects under way at once")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = uvloop.run(run(args))
    with open(args.out, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
