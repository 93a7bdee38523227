"""What history does when a user changes their messages: store the change, then tell the clients.

Routes parse and answer; the store only stores; this decides who hears of a change.
"""

from ..shared.keys import user_room
from ..shared.notify import ClientNotifier
from .group_store import GroupStore
from .models import messages_read_json
from .store import MessageStore


class HistoryHandler:
    def __init__(self, store: MessageStore, groups: GroupStore, notifier: ClientNotifier):
        self._store = store
        self._groups = groups
        self._notifier = notifier

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
        event = (deleted, str(seq))
        if "groupId" in deleted:
            members = await self._groups.member_ids(int(deleted["groupId"]))
            await self._notifier.emit_to_rooms("messageDeleted", event, [user_room(user_id) for user_id in members])
            return deleted
        for user_id in dict.fromkeys((deleted["sender"], deleted["receiver"])):
            await self._notifier.emit_to_user("messageDeleted", event, user_id)
        return deleted

    async def replay(self, me: str, after: int, limit: int) -> tuple[list[list], bool]:
        """What my sockets heard live after feed position `after`, as they heard it: `[event, data,
        offset]` in feed order (at most `limit` changes), and whether more follow.

        A message to me is `receiveMessage`, mine is `messageSent` (one to myself, both, as the
        gateway emits them); a deletion is `messageDeleted`. The gateway replays these to a
        socket that recovers its connection (services/gateway/recovery.py)."""
        changes, has_more = await self._store.feed(me, after, limit)
        events: list[list] = []
        for position, kind, body in changes:
            offset = str(position)
            if kind == "deletion":
                events.append(["messageDeleted", body, offset])
                continue
            receiver = body["receiver"]
            if body["sender"]["_id"] != me or (receiver is not None and receiver["_id"] == me):
                events.append(["receiveMessage", body, offset])
            if body["sender"]["_id"] == me:
                events.append(["messageSent", body, offset])
        return events, has_more
