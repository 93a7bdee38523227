"""Wire models two services share: the field types every payload is made of, and the internal calls.

Each service keeps the models only it reads or writes (history: profiles and messages; the
gateway: its socket events). What stays here is shared for one of two reasons:
- the field types (`UserId`, `MessageText`, ...): every service's payloads are built from them, so
  an id or a text is refused the same way, with a code naming the field, wherever it arrives;
- the body of each internal call (`StoreMessages`, `InternalMarkRead`, `PartnersQuery`,
  `PresenceEvents`, `NodeSockets`, `Heartbeat`): the contract between a caller and its callee,
  which neither may import from the other. The callee parses with it, the OpenAPI document
  publishes it, and the caller's requests are checked against it by the integration and e2e tests.
"""

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .emoji import EMOJI_RULE, is_emoji
from .errors import InvalidField
from .limits import (
    ATTACHMENT_ID_RULE,
    CALL_KINDS,
    GROUP_ID_RULE,
    MAX_ATTACHMENTS_PER_MESSAGE,
    MAX_CLIENT_ID_LENGTH,
    MAX_NODE_ID_LENGTH,
    MAX_SOCKET_ID_LENGTH,
    MAX_SOCKETS_PER_CALL,
    MAX_REPLAY_EVENTS,
    MAX_REPLAYS_PER_CALL,
    MAX_STORE_BATCH,
    MAX_TEXT_LENGTH,
    MAX_USER_ID_LENGTH,
    MAX_USERS_PER_PARTNERS_QUERY,
    MESSAGE_ID_RULE,
    USER_ID_RULE,
    valid_attachment_id,
    valid_group_id,
    valid_message_id,
    valid_user_id,
)


def no_nul(value: str) -> str:
    """Postgres text cannot hold U+0000: refuse it here, naming the field, not as a store error."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def Text(min_length: int, max_length: int):  # noqa: N802 - a type factory
    return Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length), AfterValidator(no_nul)
    ]


def user_id_shape(value: str) -> str:
    if not valid_user_id(value):
        raise ValueError(USER_ID_RULE)
    return value


# Not a `Text`: that trims whitespace, and " ada" must be refused, not read as "ada".
UserId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_USER_ID_LENGTH), AfterValidator(user_id_shape)]
# A node id goes into Redis keys next to user ids, and is held to the same shape.
NodeId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NODE_ID_LENGTH), AfterValidator(user_id_shape)]
ClientId = Text(1, MAX_CLIENT_ID_LENGTH)
SocketId = Text(1, MAX_SOCKET_ID_LENGTH)


def group_id_shape(value: str) -> str:
    if not valid_group_id(value):
        raise ValueError(GROUP_ID_RULE)
    return value


GroupId = Annotated[str, AfterValidator(group_id_shape)]


def message_id_shape(value: str) -> str:
    if not valid_message_id(value):
        raise ValueError(MESSAGE_ID_RULE)
    return value


def emoji_shape(value: str) -> str:
    if not is_emoji(value):
        raise ValueError(EMOJI_RULE)
    return value


MessageId = Annotated[str, AfterValidator(message_id_shape)]
Emoji = Annotated[str, AfterValidator(emoji_shape)]
MessageText = Text(1, MAX_TEXT_LENGTH)
# A message's text may be empty when it carries attachments (MessageContent checks that).
OptionalText = Text(0, MAX_TEXT_LENGTH)


def attachment_id_shape(value: str) -> str:
    if not valid_attachment_id(value):
        raise ValueError(ATTACHMENT_ID_RULE)
    return value


AttachmentId = Annotated[str, AfterValidator(attachment_id_shape)]


class WireModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class OneConversation(WireModel):
    """Where a message goes: a person (`receiverId`) or a group (`groupId`), exactly one."""

    receiver_id: UserId | None = Field(default=None, alias="receiverId")
    group_id: GroupId | None = Field(default=None, alias="groupId")

    @model_validator(mode="after")
    def one_conversation(self) -> "OneConversation":
        # Named for the guide's field: its client, which knows no groups, reads `invalid_receiverId`.
        if (self.receiver_id is None) == (self.group_id is None):
            raise InvalidField("receiverId", "give exactly one of receiverId (a person) and groupId (a group)")
        return self


class MessageContent(OneConversation):
    """What a message says: text, attachments (ids of the sender's uploads, issue 16), or both.

    Text may be empty only when there is an attachment; the ids are distinct. The socket event
    (`sendMessage`) and the internal store call read the same rules from here. (Field validators,
    so that an error names its field wherever the model sits: `invalid_messages.0.text`.)
    """

    attachment_ids: list[AttachmentId] = Field(
        default_factory=list, alias="attachmentIds", max_length=MAX_ATTACHMENTS_PER_MESSAGE
    )
    text: OptionalText = Field(default="", validate_default=True)

    @field_validator("attachment_ids")
    @classmethod
    def distinct(cls, ids: list[str]) -> list[str]:
        if len(set(ids)) != len(ids):
            raise ValueError("must not repeat an attachment")
        return ids

    @field_validator("text")
    @classmethod
    def says_something(cls, text: str, info: ValidationInfo) -> str:
        if not text and not info.data.get("attachment_ids"):
            raise ValueError("must not be empty (unless the message has attachments)")
        return text


# --- gateway -> history ----------------------------------------------------------------------


CallKind = Literal[CALL_KINDS]
# How a call ended, as its message keeps it (issue 17): `callEnded`'s reason, except that a call
# its caller hung up before any answer is "missed" (the callee's view of it).
CallStatus = Literal["ended", "rejected", "missed", "busy", "lost", "offline"]


class CallSummary(WireModel):
    """What a call message says about its call: `{"kind": "video", "status": "ended", "durationSeconds": 42}`
    (0 for a call never answered)."""

    kind: CallKind
    status: CallStatus
    duration_seconds: int = Field(alias="durationSeconds", ge=0, le=2**31 - 1)


class StoreMessage(MessageContent):
    """Internal `POST /internal/messages`: `{"senderId": "u1", "receiverId": "u2", "text": "hi"}`,
    or to a group: `{"senderId": "u1", "groupId": "17", "text": "hi"}` (exactly one of the two),
    with `"attachmentIds": [...]` when it carries uploads. A gateway that ends a call stores its
    message with `"call": CallSummary` (1:1 only; the socket's `sendMessage` cannot say it)."""

    sender_id: UserId = Field(alias="senderId")
    client_id: ClientId | None = Field(default=None, alias="clientId")
    reply_to: MessageId | None = Field(default=None, alias="replyTo")
    call: CallSummary | None = None

    @model_validator(mode="after")
    def calls_are_one_to_one(self) -> "StoreMessage":
        if self.call is not None and self.group_id is not None:
            raise InvalidField("call", "a call message belongs to a 1:1 conversation")
        return self


class StoreMessages(WireModel):
    """Internal `POST /internal/messages/batch`: `{"messages": [StoreMessage, ...]}`, stored in one commit."""

    messages: list[StoreMessage] = Field(min_length=1, max_length=MAX_STORE_BATCH)


class ReplayRequest(WireModel):
    """One recovering socket's replay: its user, and the feed position its client has."""

    user_id: UserId = Field(alias="userId")
    after: MessageId


class ReplayRequests(WireModel):
    """Internal `POST /internal/replay`: `{"requests": [{"userId", "after"}, ...], "limit": 1000}`,
    answered `{"results": [{"events", "hasMore"}, ...]}` in order (one read for them all)."""

    requests: list[ReplayRequest] = Field(min_length=1, max_length=MAX_REPLAYS_PER_CALL)
    limit: int = Field(ge=1, le=MAX_REPLAY_EVENTS)


class InternalMarkRead(WireModel):
    """Internal `POST /internal/read`: `{"readerId": "u2", "partnerId": "u1"}`."""

    reader_id: UserId = Field(alias="readerId")
    partner_id: UserId = Field(alias="partnerId")


class InternalReaction(WireModel):
    """Internal `POST /internal/reactions`, a socket's `react` / `unreact`:
    `{"userId": "u2", "messageId": "42", "emoji": "👍", "add": true}` (`add: false` removes it)."""

    user_id: UserId = Field(alias="userId")
    message_id: MessageId = Field(alias="messageId")
    emoji: Emoji
    add: bool


class CallParties(WireModel):
    """Internal `POST /internal/calls/parties`: `{"callerId": "u1", "calleeId": "u2"}`; answers both
    profiles `{"caller": {...}, "callee": {...}}` when the caller may call the callee: the rule a
    1:1 message follows (both are known users), else `unknown_sender` / `unknown_receiver`."""

    caller_id: UserId = Field(alias="callerId")
    callee_id: UserId = Field(alias="calleeId")


# --- presence -> history ---------------------------------------------------------------------


class PartnersQuery(WireModel):
    """Internal `POST /internal/partners`: `{"userIds": ["u1", "u2"]}` (at most 10,000)."""

    user_ids: list[UserId] = Field(alias="userIds", max_length=MAX_USERS_PER_PARTNERS_QUERY)


# --- gateway -> presence ---------------------------------------------------------------------


class PresenceEvents(WireModel):
    """Internal `POST /internal/presence/events`, a gateway's batch of socket changes:
    `{"nodeId": "gateway-a", "connected": [["sid1", "u1"]], "disconnected": [["sid0", "u2"]]}`."""

    node_id: NodeId = Field(alias="nodeId")
    connected: list[tuple[SocketId, UserId]] = Field(default_factory=list, max_length=MAX_SOCKETS_PER_CALL)
    disconnected: list[tuple[SocketId, UserId]] = Field(default_factory=list, max_length=MAX_SOCKETS_PER_CALL)


class NodeSockets(WireModel):
    """Internal `PUT /internal/presence/nodes/{nodeId}`: every socket the node holds now,
    `{"sockets": [["sid1", "u1"], ["sid2", "u1"]]}`."""

    sockets: list[tuple[SocketId, UserId]] = Field(max_length=MAX_SOCKETS_PER_CALL)


class Heartbeat(WireModel):
    """Internal `POST /internal/presence/heartbeat`: `{"nodeId": "gateway-a"}`."""

    node_id: NodeId = Field(alias="nodeId")
