"""History's payloads: each model (the OpenAPI schema, and the parser of what history is sent)
next to the one function that builds that payload from a stored row.

The builders write dicts by hand rather than through pydantic: a page of 200 messages is built on
every scroll, and a model dump would cost more than the query. tests/unit/test_models.py checks
that each builder's output validates against its model, with exactly the model's fields.
"""

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field

from ..shared import fast_json
from ..shared.attachments import AttachmentOut, attachment_json
from ..shared.limits import MAX_USER_NAME_LENGTH
from ..shared.models import CallSummary, MessageText, Text, UserId, WireModel

MAX_NAME_LENGTH = 128
MAX_PROFILE_IMAGE_LENGTH = 2048  # a URL

Row = Any  # an asyncpg.Record, or any mapping with the same column names


class UserProfile(WireModel):
    """A profile as the guide shows it: `{"_id": "u1", "userName": "ada", "name": "Ada", "profileImage": ""}`."""

    id: UserId = Field(alias="_id")
    user_name: Text(1, MAX_USER_NAME_LENGTH) = Field(alias="userName")
    name: Text(0, MAX_NAME_LENGTH) = ""
    profile_image: Text(0, MAX_PROFILE_IMAGE_LENGTH) = Field(default="", alias="profileImage")


class ReactionOut(WireModel):
    """One emoji on a message, for the reader: `{"emoji": "👍", "count": 3, "me": true}`."""

    emoji: str
    count: int
    me: bool


class ReplyQuote(WireModel):
    """What a reply quotes: `{"_id": "41", "sender": "u2", "text": "the first 200 characters"}`;
    `text` is "deleted" once the original is deleted."""

    id: str = Field(alias="_id")
    sender: str
    text: str


class MessageOut(WireModel):
    """A message as the guide's client reads it, plus `clientId`, `readAt` and issue 16's
    `reactions` (relative to the reader), `replyTo` (a quote, or null) and `editedAt`.

    `{"_id": "42", "sender": {"_id": "u1", "userName": "ada", ...}, "receiver": {...},
      "text": "hi", "isRead": false, "createdAt": "2026-11-24T10:00:00.000Z", "updatedAt": ...,
      "clientId": "c-1", "readAt": null, "reactions": [{"emoji": "👍", "count": 1, "me": false}],
      "replyTo": {"_id": "41", "sender": "u2", "text": "lunch?"}, "editedAt": null}`
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
    reactions: list[ReactionOut] = Field(default_factory=list)
    reply_to: ReplyQuote | None = Field(default=None, alias="replyTo")
    edited_at: datetime | None = Field(default=None, alias="editedAt")
    # Present when the message carries attachments (issue 16), in the order they were sent.
    attachments: list[AttachmentOut] | None = None
    # Present on the message a call leaves (issue 17): `"type": "call"` and what happened.
    type: Literal["call"] | None = None
    call: CallSummary | None = None


class ReactionCount(WireModel):
    """One emoji in `reactionUpdated`, the same for every member: `{"emoji": "👍", "count": 3}`."""

    emoji: str
    count: int


class ReactionUpdated(WireModel):
    """Server event `reactionUpdated`, to every member of the conversation, on every node, in ONE emit:
    `{"messageId": "42", "reactions": [{"emoji": "👍", "count": 2}], "userId": "u2", "emoji": "👍", "added": true}`.

    One emit cannot carry a per-recipient `me`: a client keeps its own `me` per emoji from the
    message it loaded and flips it when `userId` is its own user (`added` says which way).
    """

    message_id: str = Field(alias="messageId")
    reactions: list[ReactionCount]
    user_id: str = Field(alias="userId")
    emoji: str
    added: bool


class GroupMessageOut(MessageOut):
    """A group message: the 1:1 object with `receiver: null` and the group's id (issue 15).
    `isRead` stays false and `readAt` null: group receipts are `groupRead` and members' `readUpTo`.

    `{"_id": "43", "sender": {...}, "receiver": null, "groupId": "17", "text": "hi all", ...}`
    """

    receiver: None
    group_id: str = Field(alias="groupId")


class EditMessage(WireModel):
    """`PUT /api/messages/{messageId}`: `{"text": "the corrected text"}`."""

    text: MessageText


class MessageEdited(WireModel):
    """Server event `messageEdited`, to the conversation's members: `{"message": MessageOut}`."""

    message: MessageOut | GroupMessageOut


class MessagesRead(WireModel):
    """Server event `messagesRead`, to the sender: `{"readerId": "u2", "count": 3, "upTo": "42"}`."""

    reader_id: str = Field(alias="readerId")
    count: int
    up_to: str | None = Field(alias="upTo")


def iso(moment: datetime | None) -> str | None:
    """JavaScript's `Date.toJSON()` shape, as the guide's Mongo server sent it (UTC, ms, "Z")."""
    if moment is None:
        return None
    if moment.utcoffset():
        moment = moment.astimezone(timezone.utc)
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def profile_json(row: Row, id_column: str = "id", prefix: str = "") -> dict:
    """A `UserProfile`, from the `users` columns of a row (joined ones carry a prefix: `s_user_name`)."""
    return {
        "_id": row[id_column],
        "userName": row[prefix + "user_name"],
        "name": row[prefix + "name"],
        "profileImage": row[prefix + "profile_image"],
    }


DELETED_QUOTE = "deleted"  # a reply's quote once the original is deleted (deletion clears its text)


def message_json(row: Row, reactions: list[dict] | None = None) -> dict:
    """A `MessageOut`, from a row of `MESSAGE_COLUMNS` (the message, both profiles and the replied
    message joined) and its `reactions_json` for the reader; or a `GroupMessageOut` for a group's."""
    receiver = profile_json(row, "receiver_id", "r_") if row["receiver_id"] is not None else None
    message = _message(row, profile_json(row, "sender_id", "s_"), receiver, row.get("group_id"))
    message["reactions"] = reactions or []
    message["replyTo"] = reply_quote_json(row)
    message["editedAt"] = iso(row["edited_at"])
    attachments = row.get("attachments")
    if attachments:
        # json_agg arrives as JSON text (asyncpg decodes no json type by itself).
        message = attach(message, fast_json.loads(attachments) if isinstance(attachments, str) else attachments)
    return message


def reply_quote_json(row: Row) -> dict | None:
    """A `ReplyQuote` from the `q_` columns (the replied message, joined), or None for no reply."""
    if row["reply_to_id"] is None:
        return None
    text = DELETED_QUOTE if row["q_deleted_at"] is not None else row["q_text"]
    return {"_id": str(row["reply_to_id"]), "sender": row["q_sender_id"], "text": text}


def reactions_json(rows: list[Row]) -> list[dict]:
    """`ReactionOut`s of one message, from rows of (emoji, count, me) in the order first reacted."""
    return [{"emoji": row["emoji"], "count": row["count"], "me": row["me"]} for row in rows]


def reaction_updated_json(message_id: int, reactions: list[dict], user_id: str, emoji: str, added: bool) -> dict:
    """A `ReactionUpdated`: the counts without `me` (the same payload for every member)."""
    counts = [{"emoji": reaction["emoji"], "count": reaction["count"]} for reaction in reactions]
    return {"messageId": str(message_id), "reactions": counts, "userId": user_id, "emoji": emoji, "added": added}


def attach(message: dict, attachment_rows: list) -> dict:
    """The message with its `attachments` (rows in order: `id, name, size, content_type, width,
    height, has_thumbnail`); a message without any has no such key."""
    if attachment_rows:
        message["attachments"] = [attachment_json(row) for row in attachment_rows]
    return message


def last_message_json(row: Row, group_id: int | None = None) -> dict:
    """A conversation's last message, as in the guide's aggregate: sender and receiver as bare ids
    (and a group's id)."""
    return _message(row, row["sender_id"], row["receiver_id"], group_id)


def _message(row: Row, sender: object, receiver: object, group_id: int | None) -> dict:
    """The guide's message; a group's also carries `groupId` (a 1:1 message has no such key)."""
    message = {
        "_id": str(row["id"]),
        "sender": sender,
        "receiver": receiver,
        "text": row["text"],
        "isRead": row["is_read"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
        "clientId": row["client_id"],
        "readAt": iso(row["read_at"]),
    }
    if group_id is not None:
        message["groupId"] = str(group_id)
    if row.get("call_kind") is not None:  # a call's message (issue 17); any other has neither key
        message["type"] = "call"
        message["call"] = {"kind": row["call_kind"], "status": row["call_status"],
                           "durationSeconds": row["call_duration_seconds"]}
    return message


def conversation_json(row: Row) -> dict:
    """One entry of the conversation list: the partner's profile, the last message, my unread count;
    or a group's: `{"_id": {"_id", "name", "image", "memberCount"}, "group": true, ...}`."""
    if not row["is_group"]:
        return {
            "_id": profile_json(row, "partner_id", "p_"),
            "lastMessage": last_message_json(row),
            "unreadCount": row["unread_count"],
        }
    # In a group's row of the store's _CONVERSATIONS, p_name and p_profile_image hold its name and image.
    group = {"_id": str(row["group_id"]), "name": row["p_name"], "image": row["p_profile_image"],
             "memberCount": row["member_count"]}
    last = last_message_json(row, row["group_id"]) if row["id"] is not None else None  # no message yet
    return {"_id": group, "group": True, "lastMessage": last, "unreadCount": row["unread_count"]}


def deletion_json(message_id: int, sender_id: str, receiver_id: str | None, group_id: int | None = None) -> dict:
    """A deleted message, as `messageDeleted` and `sync` tell it: `{"_id": "42", "sender": "u1", "receiver": "u2"}`,
    or a group's: `{"_id": "43", "sender": "u1", "receiver": null, "groupId": "17"}`."""
    deleted = {"_id": str(message_id), "sender": sender_id, "receiver": receiver_id}
    if group_id is not None:
        deleted["groupId"] = str(group_id)
    return deleted


def messages_read_json(reader_id: str, count: int, up_to: str | None) -> dict:
    """A `MessagesRead`."""
    return {"readerId": reader_id, "count": count, "upTo": up_to}
