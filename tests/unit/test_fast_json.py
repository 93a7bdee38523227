"""The gateway's Socket.IO JSON: orjson where it can, the standard library's answer elsewhere."""

import json

import pytest

from services.gateway import wire_json


@pytest.mark.parametrize("value", [
    {"text": "héllo ✓ \u2028 \"quoted\" \\ </script>", "n": 1, "f": 1.5, "none": None, "list": [True, False]},
    2**64 + 1,
    [-(2**70), {"deep": [2**63]}],
])
def test_encodes_what_decodes_to_the_same_value(value):
    assert json.loads(wire_json.dumps(value, separators=(",", ":"))) == value


def test_big_integers_are_read_exactly():
    assert wire_json.loads('{"n": 123456789012345678901234567890}') == {"n": 123456789012345678901234567890}
