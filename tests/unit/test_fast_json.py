"""Hot-path JSON: orjson where it can, the standard library's answer elsewhere."""

import json

import pytest

import socketio

from services.gateway.server import WirePacket
from services.shared import fast_json as wire_json


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
