"""The gateway's own payloads: the chat events a client sends over Socket.IO."""

from pydantic import Field

from ..shared.models import ClientId, MessageText, UserId, WireModel


class SendMessage(WireModel):
    """Socket event `sendMessage`: `{"receiverId": "u2", "text": "hi", "clientId": "c-1"}`."""

    receiver_id: UserId = Field(alias="receiverId")
    text: MessageText
    client_id: ClientId | None = Field(default=None, alias="clientId")


class MarkRead(WireModel):
    """Socket event `markRead`: `{"userId": "u1"}` (the partner whose messages I have read)."""

    user_id: UserId = Field(alias="userId")
