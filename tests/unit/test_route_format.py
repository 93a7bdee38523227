"""The routing format's version rules (services/shared/route_format.py)."""

import pytest

from services.shared import route_format
from services.shared.route_format import UnreadablePayload, advertised, decode, newest_shared


def test_what_a_liveness_key_says_a_node_reads():
    assert advertised(b"1") == {1}  # what the previous release (9f02a0c) writes, meaning "alive"
    assert advertised(None) == advertised(b"") == {1}  # nothing advertised: the previous release's format
    assert advertised("1,2") == {1, 2}
    assert advertised(b"99") == {99}
    assert advertised(b"garbage") == frozenset()
    assert route_format.advertisement() == "1"  # this release: what 9f02a0c writes, byte for byte


def test_an_emitter_writes_the_newest_format_both_know():
    assert newest_shared(frozenset({1, 99})) == 1
    assert newest_shared(frozenset({1, 2}), writable=(1, 2)) == 2
    assert newest_shared(frozenset({99})) is None


def test_format_one_payloads_decode_as_the_previous_release_writes_them():
    assert decode(b'[{"method":"emit"},{"method":"emit"}]') == [{"method": "emit"}, {"method": "emit"}]
    assert decode(b'{"method":"disconnect","sid":"x"}') == [{"method": "disconnect", "sid": "x"}]


@pytest.mark.parametrize("payload, reason", [
    (b"not json", "malformed"), (b"\xff\xfe\x00", "malformed"), (b"42", "malformed"), (b'"text"', "malformed"),
    (b'{"format": 2, "emits": []}', "format"), (b'{"format": "x"}', "format"),
])
def test_an_unreadable_payload_raises_with_its_reason(payload, reason):
    with pytest.raises(UnreadablePayload) as raised:
        decode(payload)
    assert raised.value.reason == reason
