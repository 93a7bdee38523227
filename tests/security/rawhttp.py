"""A raw HTTP/1.1 client over a plain socket: the request line goes out exactly as written.

Client libraries normalise what an attacker would not: they resolve `..`, re-encode `%2e`,
refuse a tab or a backslash. Every byte here is the caller's, so the server is the only
thing that decides what the path means.
"""

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

READ_TIMEOUT_SECONDS = 10.0


@dataclass
class RawAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first header called `name` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def __str__(self) -> str:
        return f"{self.status} {self.text[:200]!r}"


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def request_bytes(method: str, target: str, headers: list[tuple[str, str]] = (), body: bytes = b"",
                  host: str | None = None) -> bytes:
    """The request as sent: `target` verbatim (a str is encoded as UTF-8 bytes, nothing quoted).

    `Host` is `host` unless the caller gives one; `Connection: close` so the answer ends at EOF.
    """
    names = {name.lower() for name, _ in headers}
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in names and host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


async def send_raw(url: str, raw: bytes, timeout: float = READ_TIMEOUT_SECONDS) -> RawAnswer:
    """Sends `raw` to the listener at `url` (scheme://host:port) and reads the whole answer."""
    host, port = host_port(url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(read_to_eof(reader), timeout)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    return parse_answer(data)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    try:
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass  # what arrived before the reset is the answer
    return b"".join(chunks)


async def request(url: str, method: str, target: str, headers: list[tuple[str, str]] = (),
                  body: bytes = b"") -> RawAnswer:
    """One request to the listener at `url`, `Host` naming that listener unless `headers` has one."""
    host, port = host_port(url)
    return await send_raw(url, request_bytes(method, target, headers, body, host=f"{host}:{port}"))


def parse_answer(data: bytes) -> RawAnswer:
    """Status, headers and body (de-chunked); status 0 when the server closed without answering."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return RawAnswer(0, [], data)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = []
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    answer = RawAnswer(status, headers, body)
    if (answer.header("Transfer-Encoding") or "").lower() == "chunked":
        answer.body = dechunk(body)
    return answer


def dechunk(body: bytes) -> bytes:
    out = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        body = rest[size + 2:]
    return b"".join(out)
