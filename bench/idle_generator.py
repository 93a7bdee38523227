"""One generator process of the idle bench: holds idle Socket.IO websockets until told to close them.

Run by `bench.idle_bench`, one process per at most ~20,000 sockets. Reads one JSON line on stdin:
`{"urls": [gateway URL, ...], "users": [first, end], "concurrency": n, "secret": JWT secret}`;
opens a socket for each user id `idle-<n>` in [first, end), on gateway `n % len(urls)`; prints
one JSON line `{"connected", "failed", "seconds"}` once every connect has ended; then answers
engine.io's pings (lean_socket does) until a line `count` (prints `{"pings": ...}`, the pings
heard since the last count) or `close` (or end of input) comes.

The file limit is raised here, for this process only (RLIMIT_NOFILE), never in the system's
configuration.
"""

import asyncio
import json
import resource
import sys
import time

from bench.lean_socket import LeanSocket
from services.shared.auth import issue_token
from services.shared.settings import JwtSettings


def raise_file_limit(wanted: int) -> None:
    """The soft RLIMIT_NOFILE at least `wanted`, the hard one too if this process may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):  # past the hard limit takes CAP_SYS_RESOURCE
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class CountingSocket(LeanSocket):
    pings = 0

    def _text(self, text: str) -> None:
        if text == "2":
            CountingSocket.pings += 1
        super()._text(text)


async def run(config: dict) -> None:
    first, end = config["users"]
    urls = config["urls"]
    jwt = JwtSettings(jwt_secret=config["secret"])
    limit = asyncio.Semaphore(config["concurrency"])
    sockets: list[LeanSocket] = []
    failed = 0

    async def connect(n: int) -> None:
        nonlocal failed
        token = issue_token(f"idle-{n}", jwt)
        async with limit:
            for _attempt in range(3):
                try:
                    sockets.append(await CountingSocket.open(urls[n % len(urls)], token, lambda socket, text: None))
                    return
                except (OSError, asyncio.TimeoutError, ConnectionError):
                    await asyncio.sleep(0.5)
            failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(connect(n) for n in range(first, end)))
    report({"connected": len(sockets), "failed": failed, "seconds": time.perf_counter() - started})
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() == "count":
            report({"pings": CountingSocket.pings,
                    "open": sum(1 for s in sockets if s.transport is not None and not s.transport.is_closing())})
            CountingSocket.pings = 0
            continue
        break
    for socket in sockets:
        socket.close()


def report(answer: dict) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


def main() -> int:
    config = json.loads(sys.stdin.readline())
    raise_file_limit(config["users"][1] - config["users"][0] + 1000)
    try:
        import uvloop
        uvloop.run(run(config))
    except ImportError:  # pragma: no cover
        asyncio.run(run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
