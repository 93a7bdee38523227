"""Hot-path JSON: orjson where it can, the standard library's answer elsewhere."""

import asyncio
import json

import pytest
import socketio
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

from services.gateway.server import WirePacket
from services.shared import fast_json as wire_json
from services.shared.errors import ErrorCode, ParleyError
from services.shared.internal import InternalClient
from services.shared.routed_manager import RoutedRedisManager
from services.shared.settings import NodeLivenessSettings
from services.shared.web import json_body


@pytest.mark.parametrize("value", [
    {"text": "héllo ✓ \u2028 \"quoted\" \\ </script>", "n": 1, "f": 1.5, "none": None, "list": [True, False]},
    2**64 + 1,
    [-(2**70), {"deep": [2**63]}],
])
def test_encodes_what_decodes_to_the_same_value(value):
    assert json.loads(wire_json.dumps(value, separators=(",", ":"))) == value


def test_big_integers_are_read_exactly():
    assert wire_json.loads('{"n": 123456789012345678901234567890}') == {"n": 123456789012345678901234567890}


@pytest.mark.parametrize("data, binary", [
    ({"text": "hi ✓", "sender": {"_id": "u1"}, "n": [1, 2.5, None]}, False),
    (["receiveMessage", {"nested": [{"deep": b"\x00"}]}], True),
    ([bytearray(b"x")], True),
    ({"huge": 2**70}, False),
    ({"huge": 2**70, "raw": b"x"}, True),
])
@pytest.mark.parametrize("packet_type, namespace, ack_id", [
    (socketio.packet.EVENT, None, None), (socketio.packet.EVENT, "/chat", 7), (socketio.packet.ACK, "/", 12),
])
def test_the_gateway_packet_encodes_as_python_socketio_does(data, binary, packet_type, namespace, ack_id):
    ours = WirePacket(packet_type, data=data, namespace=namespace, id=ack_id)
    stock = socketio.packet.Packet(packet_type, data=data, namespace=namespace, id=ack_id)
    assert ours.packet_type == stock.packet_type
    assert (ours.packet_type in (socketio.packet.BINARY_EVENT, socketio.packet.BINARY_ACK)) is binary
    ours_encoded, stock_encoded = ours.encode(), stock.encode()
    if binary:  # a packet with placeholders, then the attachments
        assert ours_encoded == stock_encoded
    else:  # the same packet, though orjson leaves non-ASCII characters unescaped
        decoded, expected = socketio.packet.Packet(encoded_packet=ours_encoded), socketio.packet.Packet(
            encoded_packet=stock_encoded)
        assert (decoded.packet_type, decoded.namespace, decoded.id, decoded.data) == (
            expected.packet_type, expected.namespace, expected.id, expected.data)


# --- a 2**70 integer through every path that encodes or decodes Parley's JSON --------------------
# The decision (fast_json's docstring): decoding is exact everywhere; encoding carries it wherever
# a client's data can go (fast_json.dumps, Socket.IO packets, routed emits), and the internal
# client, which only ever sends validated models, refuses it with orjson's TypeError before
# anything is sent.

HUGE = 2**70
HUGE_JSON = b'{"n": 1180591620717411303424}'


def test_fast_json_decodes_a_2_to_the_70_integer_exactly_from_text_and_bytes():
    for payload in (HUGE_JSON, HUGE_JSON.decode()):
        decoded = wire_json.loads(payload)
        assert decoded == {"n": HUGE} and type(decoded["n"]) is int


def test_fast_json_encodes_a_2_to_the_70_integer_exactly():
    assert wire_json.dumps({"n": HUGE}) == '{"n":1180591620717411303424}'


def test_a_socket_io_packet_carries_a_2_to_the_70_integer_both_ways():
    encoded = WirePacket(socketio.packet.EVENT, data=["receiveMessage", {"n": HUGE}]).encode()
    assert encoded == '2["receiveMessage",{"n":1180591620717411303424}]'
    received = WirePacket(encoded_packet='2["sendMessage",{"n":1180591620717411303424}]')  # from a client
    assert received.data == ["sendMessage", {"n": HUGE}] and type(received.data[1]["n"]) is int


class OneAnswerSession:
    """aiohttp's ClientSession where the internal client touches it: one answer to any request."""

    def __init__(self, status: int, body: bytes):
        self.status, self.body = status, body
        self.requests: list[dict] = []

    def request(self, method, url, **kwargs):
        self.requests.append(kwargs)
        return self

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        return False

    async def read(self) -> bytes:
        return self.body


def internal_client(session: OneAnswerSession) -> InternalClient:
    client = InternalClient("history", "http://history.invalid", "token")
    client._session = session  # what `session` would build, without a connector
    return client


async def test_an_internal_answer_with_a_2_to_the_70_integer_decodes_exactly():
    answer = await internal_client(OneAnswerSession(200, HUGE_JSON)).call("GET", "/internal/x")
    assert answer == {"n": HUGE} and type(answer["n"]) is int


async def test_an_internal_refusal_with_a_2_to_the_70_integer_keeps_its_code():
    body = b'{"message": "Too big", "code": "invalid_payload", "n": 1180591620717411303424}'
    with pytest.raises(ParleyError) as refused:
        await internal_client(OneAnswerSession(400, body)).call("GET", "/internal/x")
    assert (refused.value.message, refused.value.code, refused.value.status) == ("Too big", "invalid_payload", 400)


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe\xfd", b"[1, 2]", b""])
async def test_an_internal_failure_that_is_not_our_json_reads_as_unavailable(body):
    with pytest.raises(ParleyError) as failed:
        await internal_client(OneAnswerSession(502, body)).call("GET", "/internal/x")
    assert failed.value.code == ErrorCode.SERVICE_UNAVAILABLE


async def test_an_internal_call_refuses_to_send_a_2_to_the_70_integer_before_sending():
    session = OneAnswerSession(200, b"{}")
    with pytest.raises(TypeError, match="64-bit"):
        await internal_client(session).call("POST", "/internal/x", json={"n": HUGE})
    assert session.requests == []


class LoopbackRedis:
    """redis-py's client where the routed manager touches it for python-socketio's own messages:
    what is published on any channel, the pub/sub hands back."""

    def __init__(self):
        self.published: list[bytes] = []

    async def publish(self, channel: str, payload: bytes) -> None:
        self.published.append(payload)

    def pubsub(self, **_options):
        return LoopbackPubSub(self.published)


class LoopbackPubSub:
    def __init__(self, published: list[bytes]):
        self._published = published

    async def subscribe(self, *channels: str) -> None:
        pass

    async def listen(self):
        for payload in self._published:
            yield {"type": "message", "data": payload}

    async def aclose(self) -> None:
        pass


async def test_a_routed_emit_carries_a_2_to_the_70_integer_to_another_node_exactly():
    manager = RoutedRedisManager("redis://127.0.0.1:1/0", "fast-json-test", node_id="n1",
                                 liveness=NodeLivenessSettings())
    unconnected, manager._redis = manager._redis, LoopbackRedis()
    await unconnected.aclose()
    # orjson refuses the integer, so the emit takes python-socketio's path: the shared channel.
    await manager.emit("receiveMessage", {"n": HUGE}, room="user:u1")
    assert manager._redis.published == [
        b'{"method":"emit","event":"receiveMessage","data":[{"n":1180591620717411303424}],"binary":false,'
        b'"namespace":"/","room":"user:u1","skip_sid":null,"callback":null,"host_id":"' + manager.host_id.encode()
        + b'"}']
    listener = manager._listen()
    received = await anext(listener)
    await listener.aclose()
    assert received["data"] == [{"n": HUGE}] and type(received["data"][0]["n"]) is int


def request_with_body(body: bytes) -> web.Request:
    """An aiohttp request whose body has fully arrived (no socket: the bytes are fed in)."""
    payload = StreamReader(BaseProtocol(asyncio.get_running_loop()), limit=2**16, loop=asyncio.get_running_loop())
    payload.feed_data(body)
    payload.feed_eof()
    return make_mocked_request("POST", "/api/x", headers={"Content-Type": "application/json"}, payload=payload)


async def test_a_rest_body_with_a_2_to_the_70_integer_decodes_exactly():
    body = await json_body(request_with_body(HUGE_JSON))
    assert body == {"n": HUGE} and type(body["n"]) is int


async def test_a_rest_answer_with_a_2_to_the_70_integer_encodes_exactly():
    assert wire_json.json_response({"n": HUGE}).body == b'{"n":1180591620717411303424}'
