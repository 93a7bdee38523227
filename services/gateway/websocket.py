"""engine.io's websocket transport, run without a task per frame, a writer task per socket, or deflate.

python-engineio serves a websocket with two tasks per socket (a reader, and a writer waiting on
the socket's packet queue), a task and a timeout wrapper per received frame, and one send system
call per packet: at 2,000 msg/s, about a third of a gateway's CPU (bench/RESULTS.md, appendix,
"What each change did": the profile of a gateway). Here the handler's own task reads frames,
and the socket's queue, once its websocket is open, writes packets straight out: the frames of
every socket written to in one turn of the event loop leave together, one write per socket.

A packet is never awaited on: a client that stops reading gets its frames buffered by the
transport, and once more than `max_buffered_bytes` wait there it is cut off (it reconnects and
catches up with `sync`), rather than making anyone who emits to it wait, or holding its backlog.

Per-message deflate is refused, as Socket.IO's own server does by default: it held about 100 KiB
of zlib state per browser socket, for chat messages too short to gain from it.

This transport overrides python-engineio internals (the aiohttp driver's `WebSocket`, a socket's
queue): pyproject.toml pins the library exactly, and tests/unit/test_library_seams.py names what
moved after an upgrade.
"""

import asyncio
import logging
import struct

from aiohttp import WSMsgType, web
from engineio import packet as eio_packet
from engineio.async_drivers.aiohttp import WebSocket as EngineIoWebSocket
from engineio.exceptions import SocketIsClosedError, UnknownPacketError

log = logging.getLogger(__name__)

# What decoding a malformed packet raises: bad JSON or a non-numeric type (ValueError), JSON
# nested past the recursion limit (RecursionError), a packet of the wrong shape (TypeError,
# LookupError: an unknown packet type, an event that is not an array or is empty).
UNDECODABLE = (ValueError, RecursionError, TypeError, LookupError)

# Socket.IO's BINARY_EVENT and BINARY_ACK: a header naming N attachments that python-socketio
# would keep in memory until all N binary frames had come (N is the client's to choose).
BINARY_PACKET_TYPES = ("5", "6")
BINARY_REFUSED = "binary Socket.IO packet refused; closing that connection"

TEXT, BINARY = 0x1, 0x2  # RFC 6455 opcodes
_FINAL = 0x80


def websocket_frame(payload: str | bytes) -> bytes:
    """One unmasked, final websocket frame (a server's): text for str, binary for bytes."""
    opcode = TEXT if isinstance(payload, str) else BINARY
    data = payload.encode() if opcode == TEXT else payload
    size = len(data)
    if size < 126:
        header = struct.pack("!BB", _FINAL | opcode, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", _FINAL | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", _FINAL | opcode, 127, size)
    return header + data


class FrameWriter:
    """A node's outgoing frames: coalesced per socket and per turn of the event loop."""

    def __init__(self, max_buffered_bytes: int, on_slow_client=None):
        self.max_buffered_bytes = max_buffered_bytes
        self._on_slow_client = on_slow_client
        self._due: list[SocketOutput] = []

    def schedule(self, output: "SocketOutput") -> None:
        if not self._due:
            asyncio.get_running_loop().call_soon(self._write_due)
        self._due.append(output)

    def _write_due(self) -> None:
        due, self._due = self._due, []
        for output in due:
            try:
                output.write_pending()
            except Exception:  # one connection's failure must not keep the others' frames back
                log.exception("writing to a websocket failed")

    def slow_client(self, sid: str, buffered: int) -> None:
        log.warning("socket %s stopped reading (%d bytes waiting): disconnected", sid, buffered)
        if self._on_slow_client is not None:
            self._on_slow_client()


class SocketOutput:
    """Where an upgraded socket's packets go: its websocket's transport, frames of a turn together."""

    __slots__ = ("_writer", "_ws", "_transport", "_sid", "_pending", "closer")

    def __init__(self, writer: FrameWriter, ws: web.WebSocketResponse, transport: asyncio.Transport, sid: str):
        self._writer = writer
        self._ws = ws
        self._transport = transport
        self._sid = sid
        self._pending: list[bytes] = []
        self.closer: asyncio.Task | None = None

    def send(self, pkt: eio_packet.Packet) -> None:
        if not self._pending:
            self._writer.schedule(self)
        self._pending.append(websocket_frame(pkt.encode()))
        if pkt.packet_type == eio_packet.CLOSE:  # the session is over: so is its websocket
            self.stop()

    def stop(self) -> None:
        """Closes the websocket once what is pending is written."""
        if self.closer is None:
            self.closer = asyncio.ensure_future(self.close())

    def write_pending(self) -> None:
        frames, self._pending = self._pending, []
        if not frames or self._ws.closed or self._transport.is_closing():
            return  # aiohttp has sent (or is sending) the close frame: nothing may follow it
        self._transport.write(b"".join(frames))
        buffered = self._transport.get_write_buffer_size()
        if buffered > self._writer.max_buffered_bytes:
            self._writer.slow_client(self._sid, buffered)
            self._transport.abort()

    async def close(self) -> None:
        self.write_pending()
        await self._ws.close()


class PacketQueue:
    """An engine.io socket's packet queue, which writes straight out once the socket has a websocket.

    Until then (the handshake, long-polling) it keeps packets in an asyncio.Queue, with the
    methods engine.io calls on one; once the websocket is attached it holds none (an idle
    asyncio.Queue is 3 KiB, a tenth of a socket). A `None` is engine.io's word for "stop
    writing": the websocket is closed.

    Measured (bench/RESULTS.md, appendix, "Connect storm and presence"): gateway memory per idle
    socket 29.0 -> 25.7 KiB, 10,000 sockets (`python -m bench.presence_bench --sockets 10000`).
    """

    __slots__ = ("output", "_waiting")

    def __init__(self):
        self.output: SocketOutput | None = None
        self._waiting: asyncio.Queue | None = None

    def _queue(self) -> asyncio.Queue:
        if self._waiting is None:
            self._waiting = asyncio.Queue()
        return self._waiting

    async def put(self, item) -> None:
        self.put_nowait(item)

    def put_nowait(self, item) -> None:
        if self.output is None:
            self._queue().put_nowait(item)
        elif item is None:
            self.output.stop()
        else:
            self.output.send(item)

    async def get(self):
        return await self._queue().get()

    def get_nowait(self):
        return self._queue().get_nowait()

    def task_done(self) -> None:
        self._queue().task_done()

    async def join(self) -> None:
        if self._waiting is not None:
            await self._waiting.join()

    def empty(self) -> bool:
        return self._waiting is None or self._waiting.empty()

    def qsize(self) -> int:
        return 0 if self._waiting is None else self._waiting.qsize()

    def attach(self, output: SocketOutput) -> bool:
        """From now on packets go to `output`, the ones already queued first; False if told to stop."""
        while not self.empty():
            item = self.get_nowait()
            self.task_done()
            if item is None:
                return False
            output.send(item)
        self.output, self._waiting = output, None
        return True


class LeanWebSocket(EngineIoWebSocket):
    """The driver's websocket class (`_async["websocket"]`): engine.io hands it a socket to serve.

    Measured (bench/RESULTS.md, appendix): "Second session", table "Each change", row "lean
    websocket transport, local emits without tasks, publishes not awaited, packets encoded once
    (7a29971, 035605e)": 3,000/s p99 1,041 -> 247 ms, each gateway 0.185 -> 0.151 CPU-ms a
    message (with those other changes); "Connect storm and presence": gateway memory per idle
    socket 33.5 -> 29.0 KiB (no writer task, no task per frame) and, without the timer per
    frame, 25.7 -> 24.9 KiB.
    """

    writer: FrameWriter  # set on the subclass made for each server (see `lean_websocket_class`)

    async def __call__(self, environ):
        socket = self.handler.__self__  # the engine.io socket whose handler we replace
        request: web.Request = environ["aiohttp.request"]
        ws = web.WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=False)
        await ws.prepare(request)
        _drop_http_parser(request)
        self._sock, self.environ = ws, environ
        output = None
        try:
            # A failed upgrade leaves the socket to long-polling, as engine.io does.
            if await _open(socket, ws, self.server.ping_interval + self.server.ping_timeout) and request.transport:
                output = SocketOutput(self.writer, ws, request.transport, socket.sid)
                if socket.queue.attach(output):
                    await _read(socket, ws)
        finally:
            if output is not None:
                socket.queue.output = None
                await socket.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
            await (output.closer if output is not None and output.closer else ws.close())
        return ws


def _drop_http_parser(request: web.Request) -> None:
    """aiohttp keeps a connection's HTTP parser for the connection's life; an upgraded one has its
    websocket reader instead and never parses HTTP again (aiohttp itself checks for None there:
    its connection_lost sets it so). 760 bytes a socket, of about 20 KiB (tracemalloc, 5,000 idle
    sockets on one gateway). An aiohttp internal: pyproject.toml pins aiohttp exactly, and
    tests/unit/test_library_seams.py checks aiohttp's guards."""
    protocol = request.protocol
    if protocol is not None and protocol._upgraded and protocol._payload_parser is not None:
        protocol._parser = None


def binary_packet(data: str | bytes) -> bool:
    """A Socket.IO binary header, or a binary attachment (engine.io's data of a binary frame)."""
    return not isinstance(data, str) or data[:1] in BINARY_PACKET_TYPES


def lean_websocket_class(writer: FrameWriter) -> type[LeanWebSocket]:
    return type("LeanWebSocket", (LeanWebSocket,), {"writer": writer})


async def _next_packet(ws: web.WebSocketResponse, timeout: float | None = None) -> eio_packet.Packet | None:
    """The client's next engine.io packet; None once the connection ends (or `timeout` passes)."""
    try:
        message = await ws.receive(timeout=timeout)
    except asyncio.TimeoutError:
        return None
    return _packet(message)


def _packet(message) -> eio_packet.Packet | None:
    """The engine.io packet a websocket message holds; None if it holds none (the connection ends)."""
    if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return None
    try:
        return eio_packet.Packet(encoded_packet=message.data)
    except UNDECODABLE as exc:
        log.warning("undecodable engine.io packet (%s); connection closed", type(exc).__name__)
        return None


async def _open(socket, ws: web.WebSocketResponse, timeout: float) -> bool:
    """A new websocket session, or a long-polling one upgraded by the probe handshake."""
    if not socket.connected:
        socket.connected = socket.upgraded = True
        return True
    socket.upgrading = True  # engine.io answers polls with NOOP from now on
    try:
        probe = await _next_packet(ws, timeout)
        if probe is None or probe.packet_type != eio_packet.PING or probe.data != "probe":
            return False
        await ws.send_str(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
        await socket.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the poll under way
        upgrade = await _next_packet(ws, timeout)
        if upgrade is None or upgrade.packet_type != eio_packet.UPGRADE:
            return False
        socket.upgraded = True
        return True
    finally:
        socket.upgrading = False


async def _read(socket, ws: web.WebSocketResponse) -> None:
    """Until the connection ends. No timer per frame: a client gone silent misses engine.io's
    pings, its ping check ends the session, and that closes this websocket (`ParleyServer`).
    It awaits `ws.receive()` itself, not through `_next_packet`: an idle socket waits here for
    its whole life, and each coroutine in that chain holds a frame (about 260 bytes a socket)."""
    on_message = socket.server.handlers.get("message")  # python-socketio's
    while (pkt := _packet(await ws.receive())) is not None:
        if pkt.packet_type == eio_packet.MESSAGE and binary_packet(pkt.data):
            log.warning(BINARY_REFUSED)  # before anything of it is kept: the connection ends here
            return
        try:
            if pkt.packet_type == eio_packet.MESSAGE and on_message is not None:
                await on_message(socket.sid, pkt.data)  # engine.io's receive would only wrap this call
            else:
                await socket.receive(pkt)
        except UnknownPacketError:
            continue
        except SocketIsClosedError:
            return
        except UNDECODABLE as exc:  # a packet type engine.io does not know
            log.warning("undecodable engine.io packet (%s); connection closed", type(exc).__name__)
            return
        except Exception:  # as engine.io does: one bad event does not end the connection
            log.exception("handling a packet failed")
