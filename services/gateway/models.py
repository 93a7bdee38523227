"""The gateway's own payloads: the chat events a client sends over Socket.IO."""

from pydantic import Field

from ..shared.models import ClientId, Emoji, MessageContent, MessageId, UserId, WireModel


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
