"""The gateway's own payloads: the chat events a client sends over Socket.IO."""

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from ..shared.limits import (CALL_ID_RULE, MAX_CANDIDATE_LENGTH, MAX_SDP_LENGTH, MAX_SDP_MID_LENGTH,
                             MAX_SDP_MLINE_INDEX, MAX_UFRAG_LENGTH, valid_call_id)
from ..shared.models import CallKind, ClientId, Emoji, MessageContent, MessageId, UserId, WireModel, no_nul


class SendMessage(MessageContent):
    """Socket event `sendMessage`: `{"receiverId": "u2", "text": "hi", "clientId": "c-1"}`, or to a
    group `{"groupId": "17", "text": "hi"}`: exactly one of the two; `"attachmentIds": [...]` adds
    the sender's uploads (then the text may be empty)."""

    client_id: ClientId | None = Field(default=None, alias="clientId")
    # The message this one replies to (issue 16): in the same conversation, visible to the sender.
    reply_to: MessageId | None = Field(default=None, alias="replyTo")


class MarkRead(WireModel):
    """Socket event `markRead`: `{"userId": "u1"}` (the partner whose messages I have read)."""

    user_id: UserId = Field(alias="userId")


class Reaction(WireModel):
    """Socket events `react` and `unreact`: `{"messageId": "42", "emoji": "👍"}`."""

    message_id: MessageId = Field(alias="messageId")
    emoji: Emoji


# --- calls (issue 17) ---

def call_id_shape(value: str) -> str:
    if not valid_call_id(value):
        raise ValueError(CALL_ID_RULE)
    return value


CallId = Annotated[str, AfterValidator(call_id_shape)]
# The SDP text of an offer or an answer (not trimmed: SDP lines end with CRLF, kept as sent).
Sdp = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SDP_LENGTH), AfterValidator(no_nul)]


class CallUser(WireModel):
    """Socket event `callUser`: `{"to": "u2", "kind": "video", "sdp": "v=0\\r\\n..."}` (the offer)."""

    to: UserId
    kind: CallKind
    sdp: Sdp


class AnswerCall(WireModel):
    """Socket event `answerCall`: `{"callId": "...", "sdp": "v=0\\r\\n..."}` (the answer)."""

    call_id: CallId = Field(alias="callId")
    sdp: Sdp


class CallRef(WireModel):
    """Socket events `rejectCall` and `endCall`: `{"callId": "..."}`."""

    call_id: CallId = Field(alias="callId")


class Candidate(WireModel):
    """An ICE candidate as `RTCIceCandidate.toJSON()` gives it: `{"candidate": "candidate:1 1 udp ...",
    "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}` (an empty `candidate` ends the
    trickle). Relayed as parsed: other fields are dropped, never passed on."""

    candidate: Annotated[str, StringConstraints(max_length=MAX_CANDIDATE_LENGTH), AfterValidator(no_nul)]
    sdp_mid: Annotated[str, StringConstraints(max_length=MAX_SDP_MID_LENGTH), AfterValidator(no_nul)] | None = Field(
        default=None, alias="sdpMid")
    sdp_m_line_index: int | None = Field(default=None, alias="sdpMLineIndex", ge=0, le=MAX_SDP_MLINE_INDEX)
    username_fragment: Annotated[str, StringConstraints(max_length=MAX_UFRAG_LENGTH),
                                 AfterValidator(no_nul)] | None = Field(default=None, alias="usernameFragment")


class IceCandidate(WireModel):
    """Socket event `iceCandidate`: `{"callId": "...", "candidate": Candidate}`."""

    call_id: CallId = Field(alias="callId")
    candidate: Candidate


class CallEnded(WireModel):
    """Server event `callEnded`, to every socket of both parties: `{"callId": "...", "reason": "missed"}`."""

    call_id: CallId = Field(alias="callId")
    reason: Literal["rejected", "ended", "missed", "busy", "lost", "offline"]
