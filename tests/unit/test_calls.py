"""Calls (issue 17), the pure parts: TURN credentials and the ICE servers answer, what a call's
message says, and the payload models' refusals."""

import base64
import hashlib
import hmac

import pytest

from services.gateway.call_store import EndedCall
from services.gateway.calls import call_text
from services.gateway.ice_servers import ice_servers_for, turn_credentials
from services.gateway.models import CallUser, IceCandidate
from services.gateway.settings import GatewaySettings
from services.shared.errors import InvalidField, parse_model
from services.shared.models import StoreMessage

SECRET = "turn-shared-secret-for-the-unit-test-0123456789"


def test_turn_credentials_are_the_turn_rest_apis():
    username, credential = turn_credentials(SECRET, "u1", 1_800_000_000)
    assert username == "1800000000:u1"
    expected = hmac.new(SECRET.encode(), b"1800000000:u1", hashlib.sha1).digest()
    assert base64.b64decode(credential) == expected and len(expected) == 20


def test_ice_servers_leave_out_what_is_not_configured():
    assert ice_servers_for(GatewaySettings(), "u1", 1000.0) == {"iceServers": []}
    stun_only = GatewaySettings(stun_urls="stun:a.example:3478")
    assert ice_servers_for(stun_only, "u1", 1000.0) == {"iceServers": [{"urls": ["stun:a.example:3478"]}]}
    no_secret = GatewaySettings(turn_urls="turn:a.example:3478")
    assert ice_servers_for(no_secret, "u1", 1000.0) == {"iceServers": []}
    both = GatewaySettings(stun_urls="stun:a.example:3478",
                           turn_urls="turn:a.example:3478?transport=udp, turn:a.example:3478?transport=tcp",
                           turn_secret=SECRET, turn_credential_seconds=600)
    stun, turn = ice_servers_for(both, "u1", 1000.9)["iceServers"]
    assert turn["urls"] == ["turn:a.example:3478?transport=udp", "turn:a.example:3478?transport=tcp"]
    assert (turn["username"], turn["credential"]) == turn_credentials(SECRET, "u1", 1600)


def test_turn_secret_is_checked_only_once_turn_is_configured():
    assert "TURN_SECRET" not in GatewaySettings().secret_settings()
    assert GatewaySettings(turn_urls="turn:a.example:3478").secret_settings()["TURN_SECRET"] == ""


def ended(reason: str, answered_at: int | None, ended_at: int = 65_400) -> EndedCall:
    return EndedCall("c" * 32, reason, "u1", "u2", "video", answered_at, ended_at)


@pytest.mark.parametrize(("call", "status", "duration", "text"), [
    (ended("ended", 0), "ended", 65, "Video call (1:05)"),
    (ended("lost", 60_000), "lost", 5, "Video call (0:05, connection lost)"),
    (ended("ended", None), "missed", 0, "Missed video call"),  # the caller hung up before an answer
    (ended("missed", None), "missed", 0, "Missed video call"),
    (ended("rejected", None), "rejected", 0, "Declined video call"),
    (ended("busy", None), "busy", 0, "Missed video call (busy)"),
    (ended("offline", None), "offline", 0, "Missed video call (offline)"),
    (ended("lost", None), "lost", 0, "Missed video call (connection lost)"),
])
def test_a_calls_message_says_what_happened(call, status, duration, text):
    assert (call.status, call.duration_seconds, call_text(call)) == (status, duration, text)


@pytest.mark.parametrize(("payload", "code"), [
    ({"to": "u2", "kind": "video", "sdp": "x" * (16 * 1024 + 1)}, "invalid_sdp"),
    ({"to": "u2", "kind": "screen", "sdp": "v=0"}, "invalid_kind"),
    ({"to": " u2", "kind": "audio", "sdp": "v=0"}, "invalid_to"),
])
def test_call_user_refuses_with_a_code_naming_the_field(payload, code):
    with pytest.raises(InvalidField) as refused:
        parse_model(CallUser, payload)
    assert refused.value.code == code


def test_a_candidate_is_relayed_with_its_known_fields_only():
    parsed = parse_model(IceCandidate, {"callId": "a" * 32, "candidate": {"candidate": "candidate:1", "sdpMid": "0",
                                                                          "sdpMLineIndex": 0, "evil": "<x>"}})
    assert parsed.candidate.model_dump(by_alias=True, exclude_none=True) == {
        "candidate": "candidate:1", "sdpMid": "0", "sdpMLineIndex": 0}


def test_a_call_message_belongs_to_a_one_to_one_conversation():
    call = {"kind": "audio", "status": "ended", "durationSeconds": 3}
    assert parse_model(StoreMessage, {"senderId": "u1", "receiverId": "u2", "text": "Audio call (0:03)",
                                      "call": call}).call.duration_seconds == 3
    with pytest.raises(InvalidField) as refused:
        parse_model(StoreMessage, {"senderId": "u1", "groupId": "17", "text": "Audio call", "call": call})
    assert refused.value.code == "invalid_call"
