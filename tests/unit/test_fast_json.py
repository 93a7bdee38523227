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
    ({"text": "hi", "sender": {"_id": "u1"}, "n": [1, 2.5, None]}, False),
    (["receiveMessage", {"nested": [{"deep": b"\x00"}]}], True),
    ([bytearray(b"x")], True),
    ({"huge": 2**70}, False),
    ({"huge": 2**70, "raw": b"x"}, True),
])
def test_the_gateway_packet_finds_binary_data_as_python_socketio_does(data, binary):
    assert WirePacket.data_is_binary(data) is binary
    assert socketio.packet.Packet.data_is_binary(data) is binary
