"""python-socketio's server, hardened against traffic it cannot decode, and made cheaper per packet.

Malformed Socket.IO or engine.io packets are a client's fault: the connection is closed and a
warning logged, where the libraries would log a traceback at ERROR (or answer 500), which a
client could use to flood the error log. Binary Socket.IO packets (which Parley's events never
need) and JSONP polling are refused outright, and a session that does not sign in within
CONNECT_TIMEOUT_SECONDS is closed. Packets are encoded with orjson (`WirePacket`), and
websockets are served by the lean transport of `websocket`.

Every override here reaches into python-socketio's or python-engineio's internals: pyproject.toml
pins both libraries exactly, and tests/unit/test_library_seams.py names what moved after an
upgrade. Each docstring gives the measured reason, from bench/RESULTS.md.
"""

import asyncio
import logging

import engineio
import orjson
import socketio
from aiohttp import web
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from ..shared import fast_json
from ..shared.errors import ErrorCode, error_response
from .delivery_log import DeliveryLog, FeedPacket
from .pings import PingWheel
from .recovery import guard_offsets
from .websocket import BINARY_REFUSED, UNDECODABLE, FrameWriter, PacketQueue, binary_packet, lean_websocket_class

log = logging.getLogger(__name__)

# The ping wheel's resolution: a ping leaves at most this late (engine.io's clients allow the
# ping interval plus the ping timeout), and a silent client is closed at most this late.
PING_TICK_SECONDS = 1.0
# What a connected socket's environ keeps of its handshake (see `ParleyServer._handle_connect`).
ENVIRON_KEPT = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "REMOTE_ADDR", "wsgi.url_scheme", "aiohttp.request")


class WirePacket(socketio.packet.Packet):
    """python-socketio's packet, its data encoded once, by orjson.

    The stock packet walks every payload in Python looking for binary data, then encodes it.
    Here the data is encoded first: orjson refuses bytes, so data it encodes holds none, and that
    encoding is the one sent (a few percent of a busy gateway's CPU, twice).

    Measured (bench/RESULTS.md, appendix): "What each change did", row "routed emits batched per
    publish, orjson for Socket.IO (6ea35dc)": 2,000/s p99 8,365 -> 2,962 ms, CPU 1.66 -> 1.06
    ms a message; and "Second session", table "Each change", row "... packets encoded once
    (7a29971, 035605e)": 3,000/s each gateway 0.185 -> 0.151 CPU-ms a message. Both rows
    measure this together with other changes.
    """

    json = fast_json

    def __init__(self, packet_type=socketio.packet.EVENT, data=None, namespace=None, id=None, binary=None,
                 encoded_packet=None):
        self._encoded_data: str | None = None
        if packet_type == socketio.packet.EVENT and encoded_packet is None and isinstance(data, list):
            data = guard_offsets(data)  # no string but a feed offset ends an event (see `recovery`)
        if binary is None and encoded_packet is None and data is not None:
            try:
                self._encoded_data = orjson.dumps(data).decode()
                binary = False
            except TypeError:  # bytes somewhere, or an integer beyond 64 bits: the stock walk decides
                pass
        super().__init__(packet_type, data, namespace, id, binary, encoded_packet)

    def encode(self):
        if self._encoded_data is None:
            return super().encode()
        # The Socket.IO format: type, then `namespace,` unless it is "/", then the ack id, then data.
        head = str(self.packet_type)
        if self.namespace is not None and self.namespace != "/":
            head += self.namespace + ","
        if self.id is not None:
            head += str(self.id)
        return head + self._encoded_data


class EngineIoServer(engineio.AsyncServer):
    """engine.io's server, whose sockets queue packets in a `PacketQueue` (`create_queue`), and
    whose pings and ping timeouts all run from one `PingWheel` (`pings`).

    Measured (bench/RESULTS.md, appendix, "Connect storm and presence"): no asyncio.Queue once
    the websocket is open took gateway memory per idle socket from 29.0 to 25.7 KiB (an idle
    asyncio.Queue is 3.2 KiB), `python -m bench.presence_bench --sockets 10000`. The ping
    wheel's measured reason is in `pings`.
    """

    def __init__(self, *args, **kwargs):
        kwargs["monitor_clients"] = True  # the service task is what sends the pings now
        super().__init__(*args, **kwargs)
        self.pings = PingWheel(self, tick=min(PING_TICK_SECONDS, self.ping_interval / 4, self.ping_timeout / 4))

    def create_queue(self, *args, **kwargs):
        return PacketQueue()

    def start_background_task(self, target, *args, **kwargs):
        """engine.io's `schedule_ping` starts a task per socket to sleep out the ping interval:
        the wheel pings the socket instead."""
        if getattr(target, "__func__", None) is AsyncSocket._send_ping:
            self.pings.ping_later(target.__self__)
            return None
        return super().start_background_task(target, *args, **kwargs)

    async def _service_task(self):
        """engine.io's per-socket ping check, replaced by the wheel's (stopped by `shutdown`)."""
        self.service_task_event = self.create_event()
        await self.pings.run(self.service_task_event)


class ParleyServer(socketio.AsyncServer):
    """python-socketio's server, hardened against undecodable traffic, on the lean websocket transport.

    `frame_writer` writes every websocket's frames (see `websocket`); long-polling stays engine.io's.
    `__init__` puts the lean websocket class in (a copy of) engine.io's driver table, and
    `_engineio_server_class` makes engine.io's server an `EngineIoServer`: their measured reasons
    are those of `websocket` and `EngineIoServer`.
    An engine.io session without a Socket.IO connection `connect_timeout` seconds after it opened
    is closed.

    For connection-state recovery (`recovery`) and catch-up (`catchup`): `connect_answers` holds what a socket's CONNECT
    answer carries besides its sid (its pid), and a socket's packets can be held (`hold`) while
    its missed events are read, then written after them (`release`).
    """

    def __init__(self, *args, frame_writer: FrameWriter, connect_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        # A copy: the driver's table is shared by every engine.io server in the process.
        self.eio._async = {**self.eio._async, "websocket": lean_websocket_class(frame_writer)}
        self._connect_timeout = connect_timeout
        # Sessions being closed for a binary packet: what else they send is dropped unlogged.
        self._refused: set[str] = set()
        self.connect_answers: dict[str, dict] = {}  # sid -> more of its CONNECT answer (the pid)
        self._held: dict[str, list[eio_packet.Packet]] = {}  # eio sid -> packets held back
        # Where each socket's feed events get their offsets (set by the app with the chat handler).
        self.deliveries: DeliveryLog | None = None
        # Closings under way: asyncio keeps only a weak reference to a task, and one the garbage
        # collector takes while pending is lost (logged at ERROR as "Task was destroyed").
        self._closings: set[asyncio.Task] = set()

    def close_session(self, eio_sid: str) -> None:
        """Closes an engine.io session in the background (closing waits for its own receive
        loop, which may be the caller), holding the task until it is done."""
        task = asyncio.ensure_future(self.eio.disconnect(eio_sid))
        self._closings.add(task)
        task.add_done_callback(self._closings.discard)

    def hold(self, eio_sid: str) -> None:
        """From now until `release`, the socket's packets wait."""
        self._held[eio_sid] = []

    def holding(self, eio_sid: str) -> bool:
        """Whether the socket's packets are held now (one hold at a time: recovery's or a catch-up's)."""
        return eio_sid in self._held

    async def release(self, eio_sid: str, first: list[eio_packet.Packet], covered) -> None:
        """Writes `first`, then the held packets but the feed events whose offset is `covered`
        (a predicate), then lets packets through again: in that order, whatever arrives meanwhile."""
        held = self._held.get(eio_sid)
        if held is None:
            return  # the session ended meanwhile
        for pkt in first:
            await self._write_eio_packet(eio_sid, pkt)
        written = 0
        while written < len(held):  # packets may still arrive while these are written
            pkt = held[written]
            written += 1
            if not isinstance(pkt, FeedPacket) or not covered(pkt.position):
                await self._write_eio_packet(eio_sid, pkt)
        self._held.pop(eio_sid, None)

    def _engineio_server_class(self):
        return EngineIoServer

    async def _send_packet(self, eio_sid, pkt):
        """Every part of the packet through `_send_eio_packet` (python-socketio's own sends them
        through `eio.send`, around it), so each can take the direct path; measured there. A
        CONNECT answer also carries the socket's `connect_answers` (its recovery pid)."""
        if pkt.packet_type == socketio.packet.CONNECT and isinstance(pkt.data, dict) and "sid" in pkt.data:
            if (more := self.connect_answers.pop(pkt.data["sid"], None)) is not None:
                pkt = self.packet_class(socketio.packet.CONNECT, {**pkt.data, **more}, namespace=pkt.namespace)
        encoded = pkt.encode()
        for part in encoded if isinstance(encoded, list) else [encoded]:
            await self._send_eio_packet(eio_sid, eio_packet.Packet(eio_packet.MESSAGE, part))

    async def _send_eio_packet(self, eio_sid, eio_pkt):
        """To an open websocket, straight to its output: engine.io would pass the packet through
        four coroutines to reach the same queue. Its ping check, skipped here, also runs on its own.

        Measured (bench/RESULTS.md, appendix): "What each change did", row "packets written
        straight to idle websockets": 3,000/s p99 1,023 -> 355 ms, each gateway 0.20 -> 0.175
        CPU-ms a message, 98.5 % of packets direct; "Second session", table "Each change", row
        "packets straight to the websocket's output ... (dea4713 to 7bfc5b9)": 2,000/s p99
        134 -> 77 ms, each gateway 0.22 -> 0.199 CPU-ms a message."""
        if (held := self._held.get(eio_sid)) is not None:
            held.append(eio_pkt)
            return
        await self._write_eio_packet(eio_sid, eio_pkt)

    async def _write_eio_packet(self, eio_sid, eio_pkt):
        if isinstance(eio_pkt, FeedPacket) and self.deliveries is not None:
            sid = self.manager.sid_from_eio_sid(eio_sid, "/")
            if sid is not None:  # written its own offset, once (see `delivery_log`)
                eio_pkt = self.deliveries.write(sid, eio_pkt)
                if eio_pkt is None:
                    return
        socket = self.eio.sockets.get(eio_sid)
        output = socket.queue.output if socket is not None and not socket.closed else None
        if output is None:  # the handshake, long-polling, a socket going away: engine.io's path
            return await super()._send_eio_packet(eio_sid, eio_pkt)
        output.send(eio_pkt)

    async def _handle_connect(self, eio_sid, namespace, data):
        """Once a socket has connected, its handshake's environ keeps only ENVIRON_KEPT: the
        headers (`HTTP_*`) were read by the CONNECT handler, and all stay reachable in
        `environ["aiohttp.request"]`.
        A refused CONNECT keeps them, for the client's next try on the same session.

        Measured: 10,000 idle sockets over 4 gateways, `python -m bench.idle_bench`, see
        bench/RESULTS.md "Idle sockets" (a browser's dozen headers weigh more than the bench's 5)."""
        await super()._handle_connect(eio_sid, namespace, data)
        environ = self.environ.get(eio_sid)
        if environ is not None and self.manager.sid_from_eio_sid(eio_sid, namespace or "/") is not None:
            kept = {key: environ[key] for key in ENVIRON_KEPT if key in environ}
            environ.clear()  # the same dict the handshake's frames hold: a smaller table in place
            environ.update(kept)

    async def _handle_eio_connect(self, eio_sid, environ):
        await super()._handle_eio_connect(eio_sid, environ)
        asyncio.get_running_loop().call_later(self._connect_timeout, self._close_if_not_connected, eio_sid)

    def _close_if_not_connected(self, eio_sid: str) -> None:
        if eio_sid not in self.eio.sockets:
            return  # gone already
        sid = self.manager.sid_from_eio_sid(eio_sid, "/")
        if sid is not None and self.manager.is_connected(sid, "/"):
            return
        log.info("no Socket.IO CONNECT within %s s; closing that session", self._connect_timeout)
        self.close_session(eio_sid)

    async def _handle_eio_disconnect(self, eio_sid, reason):
        """Also closes the socket's websocket. The lean transport reads without a timer per frame
        (bench/RESULTS.md, appendix, "Connect storm and presence": 25.7 -> 24.9 KiB a socket),
        so a session engine.io ends must end its websocket here; not a speed-up of its own, it
        is what makes that one safe (tests/e2e/test_websocket_transport.py,
        test_a_client_gone_silent_is_disconnected_and_its_websocket_closed)."""
        self._refused.discard(eio_sid)
        self._held.pop(eio_sid, None)
        await super()._handle_eio_disconnect(eio_sid, reason)
        # engine.io ended the session itself (its ping check found the client silent, or the
        # server disconnected it): the websocket goes too, or its read would wait forever.
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None and socket.queue.output is not None:
            socket.queue.output.stop()

    async def _handle_eio_message(self, eio_sid, data):
        """A client's undecodable packet, or a binary one, closes its connection with a warning,
        where python-socketio would log a traceback at ERROR for each (or buffer the binary
        packet's attachments). Not a measured speed-up: a hardening, tested from outside
        (tests/e2e/test_hostile_input.py, test_malformed_frames_do_not_hurt_the_node;
        tests/e2e/test_socket_security.py)."""
        # Long-polling's way in (the lean websocket refuses binary packets before they get here).
        # python-socketio would keep a binary packet's attachments until all had come: refused.
        if binary_packet(data):
            if eio_sid not in self._refused:
                self._refused.add(eio_sid)
                log.warning(BINARY_REFUSED)
                self.close_session(eio_sid)
            return
        # Event handlers run as tasks of their own (and catch their own errors), so what
        # reaches here is the decoding of the client's packet.
        try:
            await super()._handle_eio_message(eio_sid, data)
        except UNDECODABLE as exc:
            log.warning("undecodable Socket.IO packet (%s); closing that connection", type(exc).__name__)
            self.close_session(eio_sid)


@web.middleware
async def engineio_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Engine.IO traffic goes straight to its handler; what engine.io cannot parse gets a 400.

    The outermost middleware. The others serve the REST routes (engine.io answers CORS itself),
    and a websocket would hold a frame of each of them for its whole life: about 2 KB a socket.
    A frame engine.io cannot even parse escapes its handler: answer 400, not 500. JSONP polling
    (`j=`) is refused before engine.io sees it: its answer is a script any page may load, which
    runs with this origin's cookies.
    """
    if not request.path.startswith("/socket.io/"):
        return await handler(request)
    if "j" in request.query:
        log.warning("JSONP polling refused")
        return error_response(400, "JSONP polling is not supported", ErrorCode.INVALID_PAYLOAD)
    try:
        return await request.match_info.handler(request)
    except UNDECODABLE as exc:
        log.warning("undecodable engine.io traffic (%s); connection closed", type(exc).__name__)
        return error_response(400, "Malformed engine.io packet", ErrorCode.INVALID_PAYLOAD)


# engine.io's `_log_error_once` ends its message with this: every caller of it reports a
# client's fault (a bad transport, protocol version, session id or upgrade), once at ERROR.
ENGINEIO_CLIENT_FAULT_ONCE = "(further occurrences of this error will be logged with level INFO)"


class EngineIoClientFaultFilter(logging.Filter):
    """engine.io logs a client's undecodable packet, refused origin or bad request (a wrong
    protocol version, transport or session id) at ERROR: a client can write to the error log
    at will. Make it a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        client_fault = "is not an accepted origin" in message or ENGINEIO_CLIENT_FAULT_ONCE in message
        if record.levelno >= logging.ERROR and (isinstance(exc, UNDECODABLE) or client_fault):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            if exc is not None:
                record.msg, record.args = f"undecodable engine.io packet ({type(exc).__name__}); closed", ()
            record.exc_info = record.exc_text = None
        return True


def trusted_origin(origin: str | None, allowed: list[str], environ: dict) -> bool:
    """Whether `origin` is on the allow-list, or is the gateway's own origin (its page). No Origin
    is not trusted: a client that sends none is not a browser page we know."""
    if origin is None:
        return False
    if "*" in allowed or origin in allowed:
        return True
    return origin == f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"


def origin_check(allowed: list[str]):
    """Engine.io's origin test (CORS): a trusted origin, or none at all (not a browser)."""

    def allowed_origin(origin: str | None, environ: dict) -> bool:
        return origin is None or trusted_origin(origin, allowed, environ)

    return allowed_origin


def harden(app: web.Application) -> None:
    logging.getLogger("engineio.server").addFilter(EngineIoClientFaultFilter())
    app.middlewares.insert(0, engineio_middleware)
