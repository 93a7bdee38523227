"""Wire models: one pydantic model per payload, with the guide's JSON names as aliases."""

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from .limits import GROUP_ID_RULE, MAX_USER_ID_LENGTH, USER_ID_RULE, valid_group_id, valid_user_id

MAX_TEXT_LENGTH = 4000


def no_nul(value: str) -> str:
    """Postgres text cannot hold U+0000: refuse it here, naming the field, not as a store error."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def Text(min_length: int = 0, max_length: int = 64):  # noqa: N802 - a type factory
    return Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length), AfterValidator(no_nul)
    ]


def user_id_shape(value: str) -> str:
    if not valid_user_id(value):
        raise ValueError(USER_ID_RULE)
    return value


UserId = Annotated[Text(1, MAX_USER_ID_LENGTH), AfterValidator(user_id_shape)]


def group_id_shape(value: str) -> str:
    if not valid_group_id(value):
        raise ValueError(GROUP_ID_RULE)
    return value


GroupId = Annotated[str, AfterValidator(group_id_shape)]
ClientId = Text(1, 64)
MessageText = Text(1, MAX_TEXT_LENGTH)


class WireModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class SendMessage(WireModel):
    """Socket event `sendMessage`: `{"receiverId": "u2", "text": "hi", "clientId": "c-1"}`."""

    receiver_id: UserId = Field(alias="receiverId")
    text: MessageText
    client_id: ClientId | None = Field(default=None, alias="clientId")


class StoreMessage(WireModel):
    """Internal `POST /internal/messages`: `{"senderId": "u1", "receiverId": "u2", "text": "hi"}`,
    or to a group: `{"senderId": "u1", "groupId": "17", "text": "hi"}` (exactly one of the two)."""

    sender_id: UserId = Field(alias="senderId")
    receiver_id: UserId | None = Field(default=None, alias="receiverId")
    group_id: GroupId | None = Field(default=None, alias="groupId")
    text: MessageText
    client_id: ClientId | None = Field(default=None, alias="clientId")

    @model_validator(mode="after")
    def one_conversation(self) -> "StoreMessage":
        if (self.receiver_id is None) == (self.group_id is None):
            raise ValueError("exactly one of receiverId and groupId is required")
        return self


MAX_STORE_BATCH = 256


class StoreMessages(WireModel):
    """Internal `POST /internal/messages/batch`: `{"messages": [StoreMessage, ...]}`, stored in one commit."""

    messages: list[StoreMessage] = Field(min_length=1, max_length=MAX_STORE_BATCH)


class MarkRead(WireModel):
    """Socket event `markRead`: `{"userId": "u1"}` (the partner whose messages I have read)."""

    user_id: UserId = Field(alias="userId")


class InternalMarkRead(WireModel):
    """Internal `POST /internal/read`: `{"readerId": "u2", "partnerId": "u1"}`."""

    reader_id: UserId = Field(alias="readerId")
    partner_id: UserId = Field(alias="partnerId")


class UserProfile(WireModel):
    """A profile as the guide shows it: `{"_id": "u1", "userName": "ada", "name": "Ada", "profileImage": ""}`."""

    id: UserId = Field(alias="_id")
    user_name: Text(1, 64) = Field(alias="userName")
    name: Text(0, 128) = ""
    profile_image: Text(0, 2048) = Field(default="", alias="profileImage")


class MessageOut(WireModel):
    """A message as the guide's client reads it, plus `clientId` and `readAt`.

    `{"_id": "42", "sender": {"_id": "u1", "userName": "ada", ...}, "receiver": {...},
      "text": "hi", "isRead": false, "createdAt": "2026-11-24T10:00:00Z", "updatedAt": ...,
      "clientId": "c-1", "readAt": null}`
    """

    id: str = Field(alias="_id")
    sender: UserProfile
    receiver: UserProfile
    text: str
    is_read: bool = Field(alias="isRead")
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")
    client_id: str | None = Field(default=None, alias="clientId")
    read_at: datetime | None = Field(default=None, alias="readAt")


class MessagesRead(WireModel):
    """Server event `messagesRead`, to the sender: `{"readerId": "u2", "count": 3, "upTo": "42"}`."""

    reader_id: str = Field(alias="readerId")
    count: int
    up_to: str | None = Field(alias="upTo")


class MessageDeleted(WireModel):
    """Server event `messageDeleted`, to both sides: `{"_id": "42", "sender": "u1", "receiver": "u2"}`."""

    id: str = Field(alias="_id")
    sender: str
    receiver: str


def dump(model: BaseModel) -> dict:
    """The JSON-ready dict of a wire model, with its wire (alias) names."""
    return model.model_dump(mode="json", by_alias=True)


SocketId = Text(1, 64)
MAX_SOCKETS_PER_CALL = 100_000


class PresenceEvents(WireModel):
    """Internal `POST /internal/presence/events`, a gateway's batch of socket changes:
    `{"nodeId": "gateway-a", "connected": [["sid1", "u1"]], "disconnected": [["sid0", "u2"]]}`."""

    node_id: UserId = Field(alias="nodeId")
    connected: list[tuple[SocketId, UserId]] = Field(default_factory=list, max_length=MAX_SOCKETS_PER_CALL)
    disconnected: list[tuple[SocketId, UserId]] = Field(default_factory=list, max_length=MAX_SOCKETS_PER_CALL)


class NodeSockets(WireModel):
    """Internal `PUT /internal/presence/nodes/{nodeId}`: every socket the node holds now,
    `{"sockets": [["sid1", "u1"], ["sid2", "u1"]]}`."""

    sockets: list[tuple[SocketId, UserId]] = Field(max_length=MAX_SOCKETS_PER_CALL)


class Heartbeat(WireModel):
    """Internal `POST /internal/presence/heartbeat`: `{"nodeId": "gateway-a"}`."""

    node_id: UserId = Field(alias="nodeId")


class PartnersQuery(WireModel):
    """Internal `POST /internal/partners`: `{"userIds": ["u1", "u2"]}` (at most 10,000)."""

    user_ids: list[UserId] = Field(alias="userIds", max_length=10_000)
