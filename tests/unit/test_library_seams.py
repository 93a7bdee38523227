"""The private parts of python-socketio and python-engineio that Parley overrides or calls.

services/gateway/websocket.py (the lean websocket transport), services/gateway/server.py
(`ParleyServer`, `EngineIoServer`, `WirePacket`) and services/shared/routed_manager.py
(`RoutedRedisManager`) reach into these libraries' internals; their docstrings give the measured
reasons. pyproject.toml pins both libraries to the versions these checks were written against.
After an upgrade, each failure names what moved and which of our code relies on it.

No I/O: only inspection, and library objects built in memory.
"""

import hashlib
import inspect
import re

import engineio
import pytest
import socketio
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket
from socketio.async_manager import AsyncManager
from socketio.async_pubsub_manager import AsyncPubSubManager

from services.gateway.server import EngineIoServer, ParleyServer, WirePacket
from services.gateway.websocket import FrameWriter, LeanWebSocket, PacketQueue

LIBRARIES = {"socketio": socketio, "engineio": engineio}

# What we override or call, the parameters our code passes or expects, and who relies on it.
SIGNATURES = [
    ("socketio.AsyncServer._send_packet", "self eio_sid pkt", "server.py ParleyServer._send_packet overrides it"),
    ("socketio.AsyncServer._send_eio_packet", "self eio_sid eio_pkt",
     "server.py ParleyServer._send_eio_packet overrides it; routed_manager.py _emit_here calls it"),
    ("socketio.AsyncServer._handle_eio_message", "self eio_sid data",
     "server.py ParleyServer._handle_eio_message overrides it; websocket.py _read calls it directly"),
    ("socketio.AsyncServer._handle_eio_disconnect", "self eio_sid reason",
     "server.py ParleyServer._handle_eio_disconnect overrides it"),
    ("socketio.AsyncServer._handle_connect", "self eio_sid namespace data",
     "server.py ParleyServer._handle_connect overrides it (and trims `self.environ[eio_sid]` after)"),
    ("socketio.AsyncServer._engineio_server_class", "self",
     "server.py ParleyServer._engineio_server_class overrides it"),
    ("socketio.packet.Packet.__init__", "self packet_type data namespace id binary encoded_packet",
     "server.py WirePacket.__init__ passes these positionally"),
    ("socketio.packet.Packet.encode", "self", "server.py WirePacket.encode overrides it"),
    ("engineio.AsyncServer.create_queue", "self args kwargs", "server.py EngineIoServer.create_queue overrides it"),
    ("engineio.AsyncServer.disconnect", "self sid", "server.py ParleyServer._handle_eio_message calls it"),
    ("engineio.async_drivers.aiohttp.WebSocket.__init__", "self handler server",
     "websocket.py LeanWebSocket inherits it (engine.io builds it with these)"),
    ("engineio.async_drivers.aiohttp.WebSocket.__call__", "self environ", "websocket.py LeanWebSocket.__call__ overrides it"),
    ("engineio.async_socket.AsyncSocket._websocket_handler", "self ws",
     "websocket.py LeanWebSocket serves the socket this bound method belongs to (`handler.__self__`)"),
    ("engineio.async_socket.AsyncSocket.close", "self wait abort reason",
     "websocket.py LeanWebSocket.__call__ calls close(wait=False, abort=True, reason=...)"),
    ("engineio.async_socket.AsyncSocket.receive", "self pkt", "websocket.py _read calls it"),
    ("engineio.async_socket.AsyncSocket._send_ping", "self",
     "server.py EngineIoServer.start_background_task takes this bound method as `ping this socket later` (pings.py)"),
    ("engineio.async_socket.AsyncSocket.schedule_ping", "self",
     "pings.py PingWheel relies on it clearing `last_ping` and asking for `_send_ping` (see the test below)"),
    ("engineio.AsyncServer.start_background_task", "self target args kwargs",
     "server.py EngineIoServer.start_background_task overrides it"),
    ("engineio.AsyncServer._service_task", "self", "server.py EngineIoServer._service_task overrides it (the ping wheel)"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager.__init__", "self channel write_only logger json",
     "routed_manager.py RoutedRedisManager.__init__ calls it with channel, write_only, logger"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager.emit",
     "self event data namespace room skip_sid callback to kwargs", "routed_manager.py RoutedRedisManager.emit overrides it"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager._publish", "self data",
     "routed_manager.py RoutedRedisManager._publish overrides it"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager._listen", "self",
     "routed_manager.py RoutedRedisManager._listen overrides it"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager._handle_emit", "self message",
     "routed_manager.py RoutedRedisManager._handle_emit overrides it"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager.enter_room", "self sid namespace room eio_sid",
     "routed_manager.py RoutedRedisManager.enter_room overrides it"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager.initialize", "self",
     "routed_manager.py RoutedRedisManager.initialize overrides it"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager.get_participants", "self namespace room",
     "routed_manager.py _emit_here calls it for (sid, eio_sid) pairs"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager.basic_leave_room", "self sid namespace room",
     "routed_manager.py RoutedRedisManager.basic_leave_room overrides it"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager.basic_enter_room", "self sid namespace room eio_sid",
     "routed_manager.py RoutedRedisManager.basic_enter_room overrides it (each socket's rooms)"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager.basic_disconnect", "self sid namespace kwargs",
     "routed_manager.py RoutedRedisManager.basic_disconnect replaces it (see the test below)"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager.get_rooms", "self sid namespace",
     "routed_manager.py RoutedRedisManager.get_rooms replaces it"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager.is_connected", "self sid namespace",
     "routed_manager.py RoutedRedisManager.emit calls it"),
]


def resolve(path: str):
    """The library object at `path`, or a failure naming the first part that is gone."""
    library, *names = path.split(".")
    found = LIBRARIES[library]
    for depth, name in enumerate(names, start=1):  # the submodules are imported above
        if not hasattr(found, name):
            pytest.fail(f"{'.'.join([library, *names[:depth]])} is gone", pytrace=False)
        found = getattr(found, name)
    return found


def flat_source(obj) -> str:
    """The object's source without whitespace, so a reformatting upstream does not count as a move."""
    return re.sub(r"\s+", "", inspect.getsource(obj))


@pytest.mark.parametrize("path, parameters, relied_on_by", SIGNATURES, ids=[row[0] for row in SIGNATURES])
def test_each_overridden_or_called_internal_keeps_its_name_and_parameters(path, parameters, relied_on_by):
    found = list(inspect.signature(resolve(path)).parameters)
    assert found == parameters.split(), (
        f"{path} moved: it now takes ({', '.join(found)}); {relied_on_by}, expecting ({', '.join(parameters.split())})")


def test_the_aiohttp_driver_table_still_names_its_websocket_class():
    table = getattr(eio_aiohttp, "_async", None)
    assert isinstance(table, dict) and table.get("websocket") is eio_aiohttp.WebSocket, (
        "engineio.async_drivers.aiohttp._async['websocket'] moved: ParleyServer.__init__ replaces that entry "
        "with the lean websocket class (server.py)")
    assert issubclass(LeanWebSocket, eio_aiohttp.WebSocket)


def test_engine_io_builds_its_websocket_from_the_driver_table_with_the_sockets_own_handler():
    assert "self.server._async['websocket'](self._websocket_handler,self.server)" in flat_source(
        AsyncSocket._upgrade_websocket), (
        "engineio.async_socket.AsyncSocket._upgrade_websocket no longer builds `_async['websocket']` from "
        "(self._websocket_handler, self.server): websocket.py LeanWebSocket relies on both")


def test_a_polling_socket_being_upgraded_gets_noops():
    assert "ifself.upgradingorself.upgraded:" in flat_source(AsyncSocket.handle_get_request), (
        "engineio.async_socket.AsyncSocket.handle_get_request no longer answers NOOP while `upgrading`: "
        "websocket.py _open sets that flag for the probe handshake")


def test_an_engine_io_socket_sends_through_its_queue_and_takes_it_from_create_queue():
    assert "self.queue.put(" in flat_source(AsyncSocket.send), (
        "engineio.async_socket.AsyncSocket.send no longer puts packets on `self.queue`: PacketQueue (websocket.py) "
        "writes them straight to the websocket from there")
    socket = AsyncSocket(EngineIoServer(async_mode="aiohttp"), "sid-1")
    assert isinstance(socket.queue, PacketQueue), "engine.io's socket no longer takes its queue from create_queue()"
    missing = [name for name in ("sid", "server", "connected", "upgraded", "upgrading", "closed")
               if not hasattr(socket, name)]
    assert not missing, f"engine.io's socket lost attributes websocket.py and server.py use: {missing}"


def test_packet_queue_has_every_queue_method_engine_io_calls():
    called = set()
    for module in ("async_socket", "async_server"):
        called |= set(re.findall(r"\.queue\.(\w+)\(", inspect.getsource(getattr(engineio, module))))
    missing = sorted(name for name in called if not callable(getattr(PacketQueue, name, None)))
    assert called and not missing, f"engine.io now calls queue methods PacketQueue (websocket.py) lacks: {missing}"


def test_parley_server_wires_itself_into_python_socketio_and_engine_io():
    server = ParleyServer(async_mode="aiohttp", frame_writer=FrameWriter(1 << 20), connect_timeout=10,
                          serializer=WirePacket)
    assert isinstance(server.eio, EngineIoServer), "socketio.AsyncServer no longer builds eio from _engineio_server_class()"
    assert server.packet_class is WirePacket, "socketio.AsyncServer no longer takes packet_class from `serializer`"
    assert issubclass(server.eio._async["websocket"], LeanWebSocket)
    assert server.eio._async is not eio_aiohttp._async, "the driver table must be copied, not changed for every server"
    assert server.eio.handlers.get("message") == server._handle_eio_message, (
        "engine.io's 'message' handler is no longer socketio.AsyncServer._handle_eio_message: websocket.py _read "
        "calls that handler for every message frame")
    missing = [name for name in ("sockets", "max_http_buffer_size", "ping_interval", "ping_timeout")
               if not hasattr(server.eio, name)]
    assert not missing, f"engineio.AsyncServer lost attributes websocket.py and server.py use: {missing}"
    assert server.eio.reason.TRANSPORT_CLOSE


def test_python_socketio_decodes_a_clients_packet_with_its_packet_class():
    assert "self.packet_class(encoded_packet=data)" in flat_source(socketio.AsyncServer._handle_eio_message), (
        "socketio.AsyncServer._handle_eio_message no longer decodes with packet_class(encoded_packet=data): "
        "WirePacket and ParleyServer's undecodable-packet handling (server.py) rely on it")


def test_python_socketio_sends_to_sockets_through_send_eio_packet():
    assert "self.server._send_eio_packet(" in flat_source(AsyncManager.emit), (
        "socketio.async_manager.AsyncManager.emit no longer sends through server._send_eio_packet: "
        "ParleyServer._send_eio_packet (server.py) writes open websockets directly from there")


def test_the_pub_sub_listener_and_message_are_as_the_routed_manager_expects():
    thread = flat_source(AsyncPubSubManager._thread)
    assert "asyncformessageinself._listen():" in thread and "awaitself._handle_emit(data)" in thread, (
        "AsyncPubSubManager._thread no longer reads `async for message in self._listen()` and hands emits to "
        "_handle_emit: routed_manager.py's _listen yields decoded messages for it")
    assert "self.thread=" in flat_source(AsyncPubSubManager.initialize), (
        "AsyncPubSubManager.initialize no longer keeps its listener task in `self.thread`: "
        "RoutedRedisManager.close cancels it from there")
    emit = flat_source(AsyncPubSubManager.emit)
    missing = [key for key in ("method", "event", "data", "binary", "namespace", "room", "skip_sid", "callback",
                               "host_id") if f"'{key}':" not in emit]
    assert not missing, (f"python-socketio's pub/sub emit message lost keys that RoutedRedisManager.emit writes "
                         f"and its _handle_emit reads: {missing}")


def test_the_engine_io_packet_types_the_lean_transport_uses_exist():
    missing = [name for name in ("MESSAGE", "PING", "PONG", "NOOP", "UPGRADE", "CLOSE") if not hasattr(eio_packet, name)]
    assert not missing, f"engineio.packet lost packet types websocket.py uses: {missing}"


def test_engine_io_asks_for_each_ping_through_start_background_task_and_keeps_last_ping():
    schedule = flat_source(AsyncSocket.schedule_ping)
    assert "self.last_ping=None" in schedule and "self.server.start_background_task(self._send_ping)" in schedule, (
        "engineio.async_socket.AsyncSocket.schedule_ping no longer clears `last_ping` and starts `_send_ping` "
        "through server.start_background_task: the ping wheel (pings.py, server.py EngineIoServer) relies on both")
    assert "s.schedule_ping()" in flat_source(engineio.AsyncServer._handle_connect), (
        "engineio.AsyncServer._handle_connect no longer schedules a new socket's first ping: the wheel never sees it")
    assert "self.schedule_ping()" in flat_source(AsyncSocket.receive), (
        "engineio.async_socket.AsyncSocket.receive no longer schedules the next ping on a PONG")
    check = flat_source(AsyncSocket.check_ping_timeout)
    assert "time.time()-last_ping>self.server.ping_timeout" in check and "reason=self.server.reason.PING_TIMEOUT" in check, (
        "engine.io's ping timeout moved (check_ping_timeout): pings.py PingWheel._check does what it did, on "
        "time.time() and with reason PING_TIMEOUT")


def test_engine_io_starts_and_stops_the_service_task_that_runs_the_ping_wheel():
    connect = flat_source(engineio.AsyncServer._handle_connect)
    assert "self.start_background_task(self._service_task)" in connect, (
        "engineio.AsyncServer._handle_connect no longer starts `_service_task`: EngineIoServer runs the ping wheel there")
    shutdown = flat_source(engineio.AsyncServer.shutdown)
    assert "self.service_task_event.set()" in shutdown and "awaitself.service_task_handle" in shutdown, (
        "engineio.AsyncServer.shutdown no longer stops the service task through `service_task_event`: "
        "EngineIoServer._service_task (the ping wheel) stops on it")
    server = EngineIoServer(async_mode="aiohttp", monitor_clients=False)
    assert server.start_service_task, "EngineIoServer must run its service task (the ping wheel) whatever it is given"


def test_every_way_out_of_a_room_goes_through_basic_leave_room():
    assert "self.basic_leave_room(sid,namespace,room)" in flat_source(AsyncPubSubManager.basic_disconnect), (
        "python-socketio's basic_disconnect no longer leaves rooms through basic_leave_room: "
        "routed_manager.py RoutedRedisManager notes emptied user rooms there")
    assert "self.basic_leave_room(sid,namespace,room)" in flat_source(AsyncPubSubManager.basic_close_room), (
        "python-socketio's basic_close_room no longer leaves rooms through basic_leave_room")
    assert "returnself.basic_leave_room(sid,namespace,room)" in flat_source(AsyncManager.leave_room), (
        "python-socketio's AsyncManager.leave_room no longer goes through basic_leave_room")
    assert "delself.rooms[namespace][room]" in flat_source(AsyncPubSubManager.basic_leave_room), (
        "python-socketio's basic_leave_room no longer deletes a room its last socket left: "
        "RoutedRedisManager.basic_leave_room takes an absent room as emptied")


def test_a_disconnect_does_what_routed_manager_basic_disconnect_does_without_its_scan():
    """RoutedRedisManager.basic_disconnect does python-socketio 5.18.1's work from its own index of
    each socket's rooms; any change upstream (a new structure to clean up) must be read again."""
    digest = hashlib.sha256(flat_source(AsyncPubSubManager.basic_disconnect).encode()).hexdigest()
    assert digest == BASIC_DISCONNECT_5_18_1, (
        "python-socketio's basic_disconnect changed: routed_manager.py RoutedRedisManager.basic_disconnect "
        "replaces it (rooms left from `_rooms_of`, callbacks, pending lists); bring it up to date")
    assert "self.rooms[namespace][room][sid]=eio_sid" in flat_source(AsyncPubSubManager.basic_enter_room), (
        "python-socketio's basic_enter_room no longer adds a socket to a room this way: "
        "RoutedRedisManager.basic_enter_room notes the room after it")


# sha256 of python-socketio 5.18.1's BaseManager.basic_disconnect, whitespace removed (flat_source).
BASIC_DISCONNECT_5_18_1 = "ae506e1c9a148f0c95d0622f48a22a764d76fe55a0e666a3d66d9537cb4a5b0b"


def test_aiohttp_never_uses_an_upgraded_connections_http_parser_unguarded():
    from aiohttp import base_protocol, web_protocol

    handler = web_protocol.RequestHandler
    data_received = flat_source(handler.data_received)
    assert "ifself._payload_parserisNoneandnotself._upgraded:" in data_received, (
        "aiohttp's RequestHandler.data_received may now parse HTTP on an upgraded connection: websocket.py "
        "_drop_http_parser sets its `_parser` to None once a websocket is open")
    assert "ifself._parserisnotNone:" in flat_source(handler.start), (
        "aiohttp's RequestHandler.start no longer guards `_parser` against None (websocket.py _drop_http_parser)")
    assert "andself._parserisnotNone" in flat_source(handler.finish_response), (
        "aiohttp's RequestHandler.finish_response no longer guards `_parser` against None (websocket.py _drop_http_parser)")
    assert "ifnotself._upgraded:assertself._parserisnotNone" in flat_source(base_protocol.BaseProtocol.pause_reading), (
        "aiohttp's pause_reading may now use the parser of an upgraded connection (websocket.py _drop_http_parser)")
    uses = re.findall(r"self\._parser\b", inspect.getsource(web_protocol))
    assert len(uses) == 8, (f"aiohttp's web_protocol uses RequestHandler._parser in {len(uses)} places, not 8: "
                            "check each still allows None once upgraded (websocket.py _drop_http_parser)")
