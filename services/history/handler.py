"""What history does when a user changes their messages: store the change, then tell the clients.

Routes parse and answer; the store only stores; this decides who hears of a change. Every event
told here is in the change feed (issue 20) and carries its feed position as its last argument,
the offset a socket recovers from: `messageDeleted`, `messageEdited`, `messagesRead` and
`reactionUpdated` (the last two as rows of feed_events: see feed_events.py).
"""

from ..shared.batching import Batcher
from ..shared.keys import user_room
from ..shared.notify import ClientNotifier
from .group_store import GroupStore
from .store import MessageStore, ReactionOutcome

MAX_REACTIONS_PER_TRANSACTION = 256  # as a store call of sends (MAX_STORE_BATCH)


class HistoryHandler:
    def __init__(self, store: MessageStore, groups: GroupStore, notifier: ClientNotifier, edit_window_seconds: float):
        self._store = store
        self._groups = groups
        self._notifier = notifier
        self._edit_window_seconds = edit_window_seconds
        # The reactions that arrive while one transaction of them is under way share the next.
        self._reactions: Batcher[tuple[str, int, str, bool], ReactionOutcome] = Batcher(
            store.set_reactions, max_batch=MAX_REACTIONS_PER_TRANSACTION)

    async def close(self) -> None:
        """Every reaction submitted is stored (and answered) before the pool closes."""
        await self._reactions.close()

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
        count, up_to, receipt = await self._store.mark_read(reader_id, partner_id)
        if receipt is not None:
            await self._notifier.emit_to_user(receipt.event, receipt.data(), partner_id)
        return count, up_to

    async def delete_message(self, me: str, message_id: int) -> dict:
        """Deletes my own message; both sides hear `messageDeleted` (once, when I wrote to myself),
        or every member of its group now, in one emit. The event's last argument is the
        deletion's position in the change feed: a socket's recovery offset (see `replay`)."""
        deleted, seq = await self._store.delete_message(me, message_id)
        await self._tell_conversation("messageDeleted", (deleted, str(seq)), deleted)
        return deleted

    async def edit_message(self, me: str, message_id: int, text: str) -> dict:
        """Edits my own message within EDIT_WINDOW_SECONDS; its conversation hears `messageEdited {message}`
        (then the edit's feed position: its offset).

        The event is one emit, so its message's `reactions[].me` is the editor's: an edit never
        changes reactions, and clients keep the reactions they hold (documented in README)."""
        message, seq = await self._store.edit_message(me, message_id, text, self._edit_window_seconds)
        conversation = {"sender": message["sender"]["_id"], "receiver": (message["receiver"] or {}).get("_id")}
        if "groupId" in message:
            conversation["groupId"] = message["groupId"]
        await self._tell_conversation("messageEdited", ({"message": message}, str(seq)), conversation)
        return message

    async def set_reaction(self, me: str, message_id: int, emoji: str, add: bool) -> list[dict]:
        """Adds or removes my reaction; when that changed anything, the conversation hears
        `reactionUpdated` (counts without `me`: see models.ReactionUpdated). Answers my view of them."""
        outcome = await self._reactions.submit((me, message_id, emoji, add))
        if outcome.update is not None:
            await self._tell_conversation(outcome.update.event, outcome.update.data(), outcome.conversation)
        return outcome.reactions

    async def replay(self, me: str, after: int, limit: int) -> tuple[list[list], bool]:
        """What my sockets heard live after feed position `after`, as they heard it: `[event, data,
        offset]` in feed order (at most `limit` changes), and whether more follow.

        A message to me is `receiveMessage`, mine is `messageSent` (one to myself, both, as the
        gateway emits them); a deletion is `messageDeleted`; an edit is `messageEdited` with the
        message as it stands now; a receipt, a group change or a reaction is the event and payload
        emitted live (feed_events.py). The gateway replays these to a socket that recovers its
        connection (services/gateway/recovery.py) and after a pub/sub outage (catchup.py)."""
        [replayed] = await self.replay_many([(me, after)], limit)
        return replayed

    async def replay_many(self, requests: list[tuple[str, int]], limit: int) -> list[tuple[list[list], bool]]:
        """`replay` for each (user, position), in order, read together (`MessageStore.feeds`)."""
        feeds = await self._store.feeds(requests, limit)
        return [_replayed(me, changes, has_more, events_pruned)
                for (me, _), (changes, has_more, events_pruned) in zip(requests, feeds, strict=True)]


def _replayed(me: str, changes: list, has_more: bool, events_pruned: bool) -> tuple[list[list], bool]:
    """A feed read as `replay` answers it: the events my sockets heard, and whether more follow."""
    if events_pruned:
        return [], True  # a replay with holes is no recovery: the client is told to sync
    events: list[list] = []
    for position, kind, body in changes:
        offset = str(position)
        if kind == "deletion":
            events.append(["messageDeleted", body, offset])
            continue
        if kind == "edit":
            events.append(["messageEdited", {"message": body}, offset])
            continue
        if kind == "event":
            events.append([body.event, body.payload, offset])
            continue
        receiver = body["receiver"]
        if body["sender"]["_id"] != me or (receiver is not None and receiver["_id"] == me):
            events.append(["receiveMessage", body, offset])
        if body["sender"]["_id"] == me:
            events.append(["messageSent", body, offset])
    return events, has_more
