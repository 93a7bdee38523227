"""python-socketio's server, hardened against traffic it cannot decode, and made cheaper per packet.

Malformed Socket.IO or engine.io packets are a client's fault: the connection is closed and a
warning logged, where the libraries would log a traceback at ERROR (or answer 500), which a
client could use to flood the error log. Packets are encoded with orjson (`WirePacket`) and,
when a socket's writer is idle, written straight to its websocket (`ParleyServer`).
"""

import logging

import orjson
import socketio
from aiohttp import web
from engineio.async_drivers.aiohttp import WebSocket as EngineIoWebSocket

from ..shared import fast_json
from ..shared.errors import ErrorCode, error_response

log = logging.getLogger(__name__)

# What decoding a malformed packet raises: bad JSON or a non-numeric type (ValueError), JSON
# nested past the recursion limit (RecursionError), a packet of the wrong shape (TypeError,
# LookupError: an unknown packet type, an event that is not an array or is empty).
UNDECODABLE = (ValueError, RecursionError, TypeError, LookupError)


class WirePacket(socketio.packet.Packet):
    """python-socketio's packet, encoded with orjson, and with a cheaper test for binary data.

    The stock test walks every emitted payload in Python (a few percent of a busy gateway's
    CPU); orjson refuses bytes, so data it encodes holds none.
    """

    json = fast_json

    @classmethod
    def data_is_binary(cls, data) -> bool:
        try:
            orjson.dumps(data)
        except TypeError:  # bytes somewhere, or an integer beyond 64 bits: the stock walk decides
            return super().data_is_binary(data)
        return False


class DirectWebSocket(EngineIoWebSocket):
    """engine.io's aiohttp websocket, made known to its socket so packets can skip the queue."""

    async def __call__(self, environ):
        socket = self.handler.__self__  # the engine.io socket whose handler this websocket runs
        socket.direct_ws = self
        try:
            return await super().__call__(environ)
        finally:
            socket.direct_ws = None


class ParleyServer(socketio.AsyncServer):
    """python-socketio's server, hardened against undecodable traffic, with direct websocket writes.

    engine.io hands every outgoing packet to a per-socket queue and a writer task, which on
    Python 3.11 also creates a task per wake-up: a sixth of a busy gateway's CPU, and at 3,000
    msg/s the difference between keeping up and queueing for seconds (bench/RESULTS.md). When
    the socket's writer is idle (nothing queued, nothing in hand: it waits on the empty queue),
    a packet is written straight to the websocket by the emitting task, which keeps the order:
    anything else (pings, the handshake, a writer still busy, polling) takes engine.io's path.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A copy: the driver's table is shared by every engine.io server in the process.
        self.eio._async = {**self.eio._async, "websocket": DirectWebSocket}

    async def _send_eio_packet(self, eio_sid, eio_pkt):
        socket = self.eio.sockets.get(eio_sid)
        ws = getattr(socket, "direct_ws", None)
        if ws is None or not _writer_idle(socket):
            return await super()._send_eio_packet(eio_sid, eio_pkt)
        if not await socket.check_ping_timeout():
            return
        try:
            await ws.send(eio_pkt.encode())
        except Exception:  # the connection is going: engine.io's own path notices and cleans up
            await super()._send_eio_packet(eio_sid, eio_pkt)

    async def _handle_eio_message(self, eio_sid, data):
        # Event handlers run as tasks of their own (and catch their own errors), so what
        # reaches here is the decoding of the client's packet.
        try:
            await super()._handle_eio_message(eio_sid, data)
        except UNDECODABLE as exc:
            log.warning("undecodable Socket.IO packet (%s); closing that connection", type(exc).__name__)
            # In the background: closing waits for this very receive loop to end.
            self.start_background_task(self.eio.disconnect, eio_sid)


def _writer_idle(socket) -> bool:
    """An upgraded, open websocket whose writer waits on an empty queue, holding no packet."""
    return (socket.upgraded and not socket.upgrading and not socket.closing and not socket.closed
            and socket.queue.empty() and bool(socket.queue._getters))


@web.middleware
async def engineio_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Engine.IO traffic goes straight to its handler; what engine.io cannot parse gets a 400.

    The outermost middleware. The others serve the REST routes (engine.io answers CORS itself),
    and a websocket would hold a frame of each of them for its whole life: about 2 KB a socket.
    A frame engine.io cannot even parse escapes its handler: answer 400, not 500.
    """
    if not request.path.startswith("/socket.io/"):
        return await handler(request)
    try:
        return await request.match_info.handler(request)
    except UNDECODABLE as exc:
        log.warning("undecodable engine.io traffic (%s); connection closed", type(exc).__name__)
        return error_response(400, "Malformed engine.io packet", ErrorCode.INVALID_PAYLOAD)


class EngineIoClientFaultFilter(logging.Filter):
    """engine.io logs a client's undecodable packet or refused origin at ERROR: make it a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        refused_origin = "is not an accepted origin" in record.getMessage()
        if record.levelno >= logging.ERROR and (isinstance(exc, UNDECODABLE) or refused_origin):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            if exc is not None:
                record.msg, record.args = f"undecodable engine.io packet ({type(exc).__name__}); closed", ()
            record.exc_info = record.exc_text = None
        return True


def origin_check(allowed: list[str]):
    """Engine.io's origin test: the allow-list, and always the gateway's own origin (its page)."""

    def allowed_origin(origin: str | None, environ: dict) -> bool:
        if origin is None or "*" in allowed or origin in allowed:
            return True
        own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
        return origin == own

    return allowed_origin


def harden(app: web.Application) -> None:
    logging.getLogger("engineio.server").addFilter(EngineIoClientFaultFilter())
    app.middlewares.insert(0, engineio_middleware)
