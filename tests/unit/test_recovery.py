"""The recovery pid and offsets (services/gateway/recovery.py), without a cluster."""

import pytest

from services.gateway.recovery import PidSigner, guard_offsets
from services.gateway.server import WirePacket

SECRET = "unit-test-gateway-internal-token-0123456789"
NOW = 1_700_000_000.0


def signer(now: float = NOW, secret: str = SECRET) -> PidSigner:
    return PidSigner(secret, 86400, clock=lambda: now)


def test_a_pid_verifies_for_its_user_only_and_carries_its_feed_position():
    pid = signer().issue("u1", 42)
    session = signer().verify(pid, "u1")
    assert session is not None and session.position == 42 and session.issued_at == int(NOW)
    assert signer().verify(pid, "u2") is None


@pytest.mark.parametrize("pid", [None, 17, "", "no-dot", "a.b.c", "x" * 600, "e30.AAAA", "é.é"])
def test_anything_but_a_pid_of_ours_is_refused_without_error(pid):
    assert signer().verify(pid, "u1") is None


def test_a_pid_signed_with_another_secret_or_tampered_is_refused():
    assert signer(secret="another-secret-of-thirty-two-bytes-or-more").verify(signer().issue("u1", 1), "u1") is None
    payload, signature = signer().issue("u1", 1).split(".")
    other_payload = signer().issue("u2", 1).split(".")[0]
    assert signer().verify(f"{other_payload}.{signature}", "u2") is None


def test_a_pid_older_than_the_window_or_from_the_far_future_is_refused():
    pid = signer().issue("u1", 1)
    assert signer(NOW + 86400).verify(pid, "u1") is not None
    assert signer(NOW + 86401).verify(pid, "u1") is None
    assert signer(NOW - 3600).verify(pid, "u1") is None


def test_only_feed_events_end_with_a_string():
    assert guard_offsets(["receiveMessage", {"_id": "1"}, "1"]) == ["receiveMessage", {"_id": "1"}, "1"]
    assert guard_offsets(["userTyping", "u2"]) == ["userTyping", "u2", None]
    assert guard_offsets(["messagesRead", {"count": 1}]) == ["messagesRead", {"count": 1}]
    assert WirePacket(data=["userOnline", "u2"]).encode() == '2["userOnline","u2",null]'
