"""The gateway's own payloads: the chat events a client sends over Socket.IO."""

from pydantic import Field, model_validator

from ..shared.errors import InvalidField
from ..shared.models import ClientId, GroupId, MessageText, UserId, WireModel


class SendMessage(WireModel):
    """Socket event `sendMessage`: `{"receiverId": "u2", "text": "hi", "clientId": "c-1"}`, or to a
    group `{"groupId": "17", "text": "hi"}`: exactly one of the two."""

    receiver_id: UserId | None = Field(default=None, alias="receiverId")
    group_id: GroupId | None = Field(default=None, alias="groupId")
    text: MessageText
    client_id: ClientId | None = Field(default=None, alias="clientId")

    @model_validator(mode="after")
    def one_conversation(self) -> "SendMessage":
        # Named for the guide's field: its client, which knows no groups, reads `invalid_receiverId`.
        if (self.receiver_id is None) == (self.group_id is None):
            raise InvalidField("receiverId", "give exactly one of receiverId (a person) and groupId (a group)")
        return self


class MarkRead(WireModel):
    """Socket event `markRead`: `{"userId": "u1"}` (the partner whose messages I have read)."""

    user_id: UserId = Field(alias="userId")
