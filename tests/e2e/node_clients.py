"""The guide's client, as it is, for the e2e tests: socket.io-client from npm driven by Node
(tests/e2e/node/recovering_client.mjs, default options), a TCP proxy in front of the gateways
playing the load balancer (it can point at a node, refuse, and cut what it carries), and a
gateway's metrics read from its internal listener."""

import asyncio
import contextlib
import json
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

CLIENT_SCRIPT = Path(__file__).with_name("node") / "recovering_client.mjs"
WAIT_SECONDS = 20.0  # a reconnection backs off up to 5 s (with jitter) between attempts


class Proxy:
    """One address in front of the gateways, as a load balancer: forwards each new connection to
    the port it points at (or closes it at once, when it points nowhere); `cut` drops every
    connection it carries, as a network failure would."""

    def __init__(self):
        self.target: int | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def cut(self) -> None:
        for writer in list(self._links):
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.target is None:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, upstream_writer))
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            for end in (writer, upstream_writer):
                self._links.discard(end)
                end.transport.abort()

    async def close(self) -> None:
        self.cut()
        self._server.close()
        await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.transport.abort()  # one side gone: so is the other (as a dropped connection)


class NodeClient:
    """recovering_client.mjs as a process: its JSON lines recorded, commands sent on stdin."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url, token
        self.records: list[dict] = []
        self._changed = asyncio.Event()

    async def start(self) -> "NodeClient":
        self.process = await asyncio.create_subprocess_exec(
            "node", str(CLIENT_SCRIPT), self.url, self.token,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        while line := await self.process.stdout.readline():
            self.records.append(json.loads(line))
            self._changed.set()

    async def wait_for(self, predicate, timeout: float = WAIT_SECONDS, what: str = "a record") -> dict:
        """The first record (in order) that satisfies `predicate`, waiting up to `timeout`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for record in self.records:
                if predicate(record):
                    return record
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout} s; got {self.records}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def connected(self, count: int, timeout: float = WAIT_SECONDS) -> dict:
        """The client's `count`-th "connect" (1 is the first)."""
        await self.wait_for(lambda _: len(self.connects()) >= count, timeout, f"connect #{count}")
        return self.connects()[count - 1]

    def connects(self) -> list[dict]:
        return [record for record in self.records if record["type"] == "connect"]

    def events(self, name: str) -> list[list]:
        return [record["args"] for record in self.records if record["type"] == "event" and record["event"] == name]

    async def command(self, line: str) -> None:
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()




def port_of(url: str) -> int:
    return urlsplit(url).port


async def metric(cluster, node: str, name: str) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{cluster.gateway_internal_url(node)}/metrics") as answer:
            text = await answer.text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))
