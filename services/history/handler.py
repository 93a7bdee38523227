"""What history does when a user changes their messages: store the change, then tell the clients.

Routes parse and answer; the store only stores; this decides who hears of a change.
"""

from ..shared.keys import user_room
from ..shared.notify import ClientNotifier
from .group_store import GroupStore
from .models import messages_read_json, reaction_updated_json
from .store import MessageStore


class HistoryHandler:
    def __init__(self, store: MessageStore, groups: GroupStore, notifier: ClientNotifier, edit_window_seconds: float):
        self._store = store
        self._groups = groups
        self._notifier = notifier
        self._edit_window_seconds = edit_window_seconds

    async def _tell_conversation(self, event: str, data: object, conversation: dict) -> None:
        """One emit to the user rooms of a message's conversation: both 1:1 parties (once, when
        I wrote to myself), or every member of its group now. `conversation` is `deletion_json`'s shape."""
        if "groupId" in conversation:
            members = await self._groups.member_ids(int(conversation["groupId"]))
        else:
            members = list(dict.fromkeys((conversation["sender"], conversation["receiver"])))
        await self._notifier.emit_to_rooms(event, data, [user_room(user_id) for user_id in members])

    async def mark_read(self, reader_id: str, partner_id: str) -> tuple[int, str | None]:
        """Marks the partner's messages to the reader read; the partner hears `messagesRead` if any were."""
        count, up_to = await self._store.mark_read(reader_id, partner_id)
        if count:
            await self._notifier.emit_to_user("messagesRead", messages_read_json(reader_id, count, up_to), partner_id)
        return count, up_to

    async def delete_message(self, me: str, message_id: int) -> dict:
        """Deletes my own message; both sides hear `messageDeleted` (once, when I wrote to myself),
        or every member of its group now, in one emit. The event's last argument is the
        deletion's position in the change feed: a socket's recovery offset (see `replay`)."""
        deleted, seq = await self._store.delete_message(me, message_id)
        await self._tell_conversation("messageDeleted", (deleted, str(seq)), deleted)
        return deleted

    async def edit_message(self, me: str, message_id: int, text: str) -> dict:
        """Edits my own message within EDIT_WINDOW_SECONDS; its conversation hears `messageEdited {message}`.

        The event is one emit, so its message's `reactions[].me` is the editor's: an edit never
        changes reactions, and clients keep the reactions they hold (documented in README)."""
        message = await self._store.edit_message(me, message_id, text, self._edit_window_seconds)
        conversation = {"sender": message["sender"]["_id"], "receiver": (message["receiver"] or {}).get("_id")}
        if "groupId" in message:
            conversation["groupId"] = message["groupId"]
        await self._tell_conversation("messageEdited", {"message": message}, conversation)
        return message

    async def set_reaction(self, me: str, message_id: int, emoji: str, add: bool) -> list[dict]:
        """Adds or removes my reaction; when that changed anything, the conversation hears
        `reactionUpdated` (counts without `me`: see models.ReactionUpdated). Answers my view of them."""
        conversation, reactions, changed = await self._store.set_reaction(me, message_id, emoji, add)
        if changed:
            update = reaction_updated_json(message_id, reactions, me, emoji, add)
            await self._tell_conversation("reactionUpdated", update, conversation)
        return reactions

    async def replay(self, me: str, after: int, limit: int) -> tuple[list[list], bool]:
        """What my sockets heard live after feed position `after`, as they heard it: `[event, data,
        offset]` in feed order (at most `limit` changes), and whether more follow.

        A message to me is `receiveMessage`, mine is `messageSent` (one to myself, both, as the
        gateway emits them); a deletion is `messageDeleted`; an edit is `messageEdited` with the
        message as it stands now. The gateway replays these to a socket that recovers its
        connection (services/gateway/recovery.py)."""
        changes, has_more = await self._store.feed(me, after, limit)
        events: list[list] = []
        for position, kind, body in changes:
            offset = str(position)
            if kind == "deletion":
                events.append(["messageDeleted", body, offset])
                continue
            if kind == "edit":
                events.append(["messageEdited", {"message": body}, offset])
                continue
            receiver = body["receiver"]
            if body["sender"]["_id"] != me or (receiver is not None and receiver["_id"] == me):
                events.append(["receiveMessage", body, offset])
            if body["sender"]["_id"] == me:
                events.append(["messageSent", body, offset])
        return events, has_more
