"""All SQL of the history service. Returns JSON-ready dicts in the guide's wire shape, built by .models."""

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import NamedTuple

import asyncpg

from ..shared.batching import Batcher
from ..shared.errors import (ErrorCode, Forbidden, InvalidField, NotAMember, NotFound, ParleyError, StoreUnavailable,
                             UnknownUser)
from ..shared.limits import MAX_REACTIONS_PER_USER, REPLY_QUOTE_LENGTH
from ..shared.models import StoreMessage
from ..shared.postgres import pooled_connection
from .errors import EditWindowClosed, TooManyReactions, unknown_group
from .feed_events import FeedEvent, append_event, events_after_each, for_each_request, prune, pruned_through
from .partitions import Partitions, keep_partitions_ahead
from .read_replica import ReadReplica
from .models import (
    UserProfile,
    attach,
    conversation_json,
    deletion_json,
    message_json,
    messages_read_json,
    profile_json,
    reaction_updated_json,
    reactions_json,
)

log = logging.getLogger(__name__)


# A message's attachments come with it (a probe of attachments_message_idx); null when it has none.
ATTACHMENTS_OF_M = """(
    SELECT json_agg(json_build_object('id', a.id, 'name', a.name, 'size', a.size, 'content_type', a.content_type,
                                      'width', a.width, 'height', a.height, 'has_thumbnail', a.thumbnail_key IS NOT NULL)
                    ORDER BY a.position)
    FROM attachments a WHERE a.message_id = m.id
)"""
MESSAGE_COLUMNS = f"""
    m.id, m.sender_id, m.receiver_id, m.group_id, m.text, m.client_id, m.is_read, m.read_at, m.created_at, m.updated_at,
    m.reply_to_id, m.edited_at, m.call_kind, m.call_status, m.call_duration_seconds,
    s.user_name AS s_user_name, s.name AS s_name, s.profile_image AS s_profile_image,
    r.user_name AS r_user_name, r.name AS r_name, r.profile_image AS r_profile_image,
    q.sender_id AS q_sender_id, left(q.text, {REPLY_QUOTE_LENGTH}) AS q_text, q.deleted_at AS q_deleted_at,
    {ATTACHMENTS_OF_M} AS attachments
"""
# LEFT JOIN for the receiver: a group message has none. The replied message (q) is joined by
# its primary key, so a reply's quote is read, never stored twice: it shows an edit of the
# original, and "deleted" once the original is gone (models.reply_quote_json).
PROFILE_JOINS = (
    "JOIN users s ON s.id = m.sender_id LEFT JOIN users r ON r.id = m.receiver_id"
    " LEFT JOIN messages q ON q.id = m.reply_to_id"
)
# The columns an INSERT ... RETURNING hands to the final SELECT's joins.
RETURNED_COLUMNS = ("id, sender_id, receiver_id, group_id, text, client_id, is_read, read_at, created_at, updated_at,"
                    " reply_to_id, edited_at, call_kind, call_status, call_duration_seconds")


class Stored(NamedTuple):
    """A message the batch store answers with: created now or earlier, and who else gets it."""

    message: dict
    created: bool
    recipients: list[str] | None  # a group message created now: its other members at insert time


class ReactionOutcome(NamedTuple):
    """A reaction set or removed: the message's conversation (`deletion_json`'s shape: sender,
    receiver, groupId), its reactions as the reactor sees them now, and, when anything changed,
    the conversation's `reactionUpdated` as appended to the change feed."""

    conversation: dict
    reactions: list[dict]
    update: FeedEvent | None


class MessageStore:
    def __init__(self, pool: asyncpg.Pool, replica: ReadReplica | None = None):
        """`replica`: where the read routes read when DATABASE_READ_URL is set (read_replica.py)."""
        self._pool = pool
        self._replica = replica
        # False until this process has seen the migrations applied; queries wait for it.
        self.schema_ready = False
        # Feed reads that arrive together share one wait for the claims in flight (`settled_head`).
        self._settled_heads: Batcher[None, int] = Batcher(self._settle, max_batch=MAX_SETTLE_WAITERS)

    async def close(self) -> None:
        await self._settled_heads.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if not self.schema_ready:
            raise StoreUnavailable("The message store is starting, try again shortly")
        async with pooled_connection(self._pool, "message store") as connection:
            yield connection

    def connection(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        """A pooled connection once the schema is current (the group store shares the pool)."""
        return self._connection()

    @contextlib.asynccontextmanager
    async def read_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """For a read route: the replica's connection once it has every commit made before this
        call, else the primary's (read_replica.py); the primary's when there is no replica."""
        if self._replica is None or not self.schema_ready:
            async with self._connection() as connection:
                yield connection
            return
        async with self._replica.connection(self._connection) as connection:
            yield connection

    async def ping(self) -> None:
        async with self._connection() as connection:
            await connection.fetchval("SELECT 1", timeout=2)

    # --- users -------------------------------------------------------------------------------

    async def upsert_user(self, profile: UserProfile) -> dict:
        async with self._connection() as connection:
            try:
                row = await connection.fetchrow(
                    """
                    INSERT INTO users (id, user_name, name, profile_image) VALUES ($1, $2, $3, $4)
                    ON CONFLICT (id) DO UPDATE SET user_name = EXCLUDED.user_name, name = EXCLUDED.name,
                        profile_image = EXCLUDED.profile_image, updated_at = now()
                    RETURNING id, user_name, name, profile_image
                    """,
                    profile.id,
                    profile.user_name,
                    profile.name,
                    profile.profile_image,
                )
            except asyncpg.UniqueViolationError:
                raise ParleyError(
                    f"The user name {profile.user_name!r} is taken", code="invalid_userName", status=409
                ) from None
        return profile_json(row)

    async def find_user(self, *, user_id: str | None = None, user_name: str | None = None) -> dict:
        async with self._connection() as connection:
            if user_id is not None:
                row = await connection.fetchrow(
                    "SELECT id, user_name, name, profile_image FROM users WHERE id = $1", user_id
                )
            else:
                row = await connection.fetchrow(
                    "SELECT id, user_name, name, profile_image FROM users WHERE lower(user_name) = lower($1)",
                    user_name,
                )
        if row is None:
            raise UnknownUser("No such user")
        return profile_json(row)

    async def call_parties(self, caller_id: str, callee_id: str) -> dict:
        """Both profiles of a call (issue 17), refused as a 1:1 message with these two would be."""
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT id, user_name, name, profile_image FROM users WHERE id = ANY($1::text[])", [caller_id, callee_id]
            )
        found = {row["id"]: profile_json(row) for row in rows}
        if caller_id not in found:
            raise UnknownUser("Your profile is not known to the chat service", code=ErrorCode.UNKNOWN_SENDER)
        if callee_id not in found:
            raise UnknownUser("The receiver is not a known user", code=ErrorCode.UNKNOWN_RECEIVER)
        return {"caller": found[caller_id], "callee": found[callee_id]}

    async def list_users(self, limit: int) -> list[dict]:
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT id, user_name, name, profile_image FROM users ORDER BY user_name LIMIT $1", limit
            )
        return [profile_json(row) for row in rows]

    async def partner_ids(self, user_id: str) -> list[str]:
        """Everyone this user has a conversation or a group with: who cares about their presence."""
        async with self._connection() as connection:
            rows = await connection.fetch(_PARTNERS, user_id)
        return [row["partner_id"] for row in rows]

    async def partner_ids_of_many(self, user_ids: list[str]) -> dict[str, list[str]]:
        """Partners of each of these users, in one query (presence announces in batches)."""
        async with self._connection() as connection:
            rows = await connection.fetch(_PARTNERS_OF_MANY, user_ids)
        found = {row["owner_id"]: list(row["partners"]) for row in rows}
        return {user_id: found.get(user_id, []) for user_id in user_ids}

    # --- messages ----------------------------------------------------------------------------

    async def create_messages(self, messages: list[StoreMessage]) -> list[Stored | ParleyError]:
        """Stores messages sent at about the same time in one commit.

        For each, in order: the stored message with its profiles, whether this call created it
        (a repeated (sender, clientId) creates nothing and answers the message stored first) and,
        for a group message it created, the members to deliver it to (the sender excluded); or
        the error that refused it. A batch of 1:1 messages is one statement (insert, summary rows
        and profile join), so it costs one round trip and one commit; group messages add a
        transaction that claims its change-feed positions first and locks the groups' rows (see
        _INSERT_GROUP_MESSAGES). Batches of several history processes run in parallel: one that
        deadlocks with another (row locks taken in different orders) is rolled back whole and run
        again, up to DEADLOCK_RETRIES times.
        """
        async with self._connection() as connection, _unavailable_without_partition():
            for attempt in range(DEADLOCK_RETRIES + 1):
                try:
                    return await _create_messages(connection, messages)
                except asyncpg.DeadlockDetectedError:
                    if attempt == DEADLOCK_RETRIES:
                        raise
                    log.warning("a batch of %d messages deadlocked with another; running it again", len(messages))
        raise AssertionError("unreachable")

    async def _settle(self, waiting: list[None]) -> list[int]:
        async with self._connection() as connection:
            head = await settled_head(connection)
        return [head] * len(waiting)

    async def settled_head(self) -> int:
        """The newest change-feed position up to which every position is settled (committed or
        rolled back) as of this call: migration 0012's claims. A reader that stops at it never
        skips a position that commits later; waiting costs writers nothing. It is also the head a
        new socket starts from: told it after joining its rooms, the socket hears live every
        change after it."""
        if not self.schema_ready:
            raise StoreUnavailable("The message store is starting, try again shortly")
        return await self._settled_heads.submit(None)

    async def fetch_page(self, me: str, partner: str, before: int | None, limit: int) -> tuple[list[dict], bool]:
        """Up to `limit` messages before the cursor, oldest first, and whether older ones exist."""
        async with self.read_connection() as connection:
            rows = await connection.fetch(_CONVERSATION_PAGE, me, partner, before or _MAX_ID, limit + 1)
            page = await messages_json(connection, list(reversed(rows[:limit])), me)
        return page, len(rows) > limit

    async def list_conversations(self, me: str, before: int | None, limit: int) -> tuple[list[dict], str | None]:
        """A page of my conversations, newest activity first, and the cursor of the next page
        (None when this is the last): a position in the change feed, as message ids are."""
        async with self.read_connection() as connection:
            rows = await connection.fetch(_CONVERSATIONS, me, before or _MAX_ID, limit + 1)
        next_cursor = str(rows[limit - 1]["position"]) if len(rows) > limit else None
        return [conversation_json(row) for row in rows[:limit]], next_cursor

    async def mark_read(self, reader_id: str, partner_id: str) -> tuple[int, str | None, FeedEvent | None]:
        """Marks the partner's messages to the reader read: how many, the newest id, and (when
        any were) the partner's `messagesRead`, appended to the feed in the same transaction."""
        async with self._connection() as connection, connection.transaction():
            await connection.execute(CLAIM_FEED_POSITIONS)
            row = await connection.fetchrow(_MARK_READ, reader_id, partner_id)
            up_to = str(row["up_to"]) if row["up_to"] is not None else None
            receipt = None
            if row["count"]:
                receipt = await append_event(connection, "messagesRead",
                                             messages_read_json(reader_id, row["count"], up_to), user=partner_id)
        return row["count"], up_to, receipt

    async def sync(self, me: str, after: int, limit: int) -> dict:
        """Messages, edits, deletions and the other feed events after the cursor, in the order they happened.

        An edit is a change-feed event (issue 16): `edited` holds each message edited after the
        cursor once, as it stands now (its newest text). Receipts, group changes and reactions
        (feed_events.py) are `events`: `[{"event", "data"}]`, in feed order, each as it was
        emitted live (the messages carry their reactions as they are now, too).
        """
        changes, has_more, events_pruned = await self.feed(me, after, limit)
        edited = {body["_id"]: body for _, kind, body in changes if kind == "edit"}
        return {
            "messages": [body for _, kind, body in changes if kind == "message"],
            "edited": list(edited.values()),
            "deleted": [body for _, kind, body in changes if kind == "deletion"],
            "events": [{"event": body.event, "data": body.payload} for _, kind, body in changes if kind == "event"],
            "next": str(changes[-1][0] if changes else after),
            "hasMore": has_more,
            "eventsPruned": events_pruned,
        }

    async def feed(self, me: str, after: int, limit: int) -> tuple[list[tuple[int, str, dict]], bool, bool]:
        """My change feed after `after`: (position, "message", "edit", "deletion" or "event", its
        body), in position order (a message's id, an edit's, a deletion's or an event's seq: all
        drawn from `change_seq`), at most `limit` of them, whether more follow, and whether events
        after `after` may have been pruned (feed_events.py). A message (or
        an edited one) is as it stands now, with my view of its reactions; an event's body is a
        `FeedEvent` (a receipt, a group change, a reaction: feed_events.py). What `sync` pages and
        what a recovering socket replays.

        It stops at the settled head (`settled_head`, asked before the read): a position above it
        may still have a smaller one committing. What committed above it since is left out, as
        if it had committed after the read (a connected socket hears it live, sync gets it next)."""
        [found] = await self.feeds([(me, after)], limit)
        return found

    async def feeds(self, requests: list[tuple[str, int]], limit: int) -> list[tuple[list[tuple[int, str, dict]], bool, bool]]:
        """`feed` for each (user, position) of `requests`, in order, with one statement of each
        kind for them all (feed_events.for_each_request): the recovering sockets of a restarted
        node arrive together, and each alone cost history and Postgres seven statements."""
        settled = await self.settled_head()
        users, afters = [me for me, _ in requests], [after for _, after in requests]
        async with self.read_connection() as connection:
            messages = await _rows_each(connection, _SYNC_MESSAGES_EACH, users, afters, limit + 1)
            deletions = await _rows_each(connection, _SYNC_DELETIONS_EACH, users, afters, limit + 1)
            edits = await _rows_each(connection, _SYNC_EDITS_EACH, users, afters, limit + 1)
            others = await events_after_each(connection, users, afters, limit + 1)
            # Read after the events: a prune that took some of them is seen here.
            pruned = await pruned_through(connection)
            taken_each, more_each = [], []
            for n in range(len(requests)):
                events = sorted(
                    [(row["id"], "message", row) for row in messages[n]]
                    + [(row["seq"], "deletion", row) for row in deletions[n]]
                    + [(row["seq"], "edit", row) for row in edits[n]] + [(event.seq, "event", event) for event in others[n]],
                    key=lambda event: event[0],
                )
                # Each source is read in position order: what lies above `settled` is at its end.
                events = [event for event in events if event[0] <= settled]
                taken_each.append(events[:limit])
                more_each.append(len(events) > limit)
            shown = [[row for _, kind, row in taken if kind in ("message", "edit")] for taken in taken_each]
            reactions = await _reactions_each(
                connection, [(users[n], list(dict.fromkeys(row["id"] for row in rows))) for n, rows in enumerate(shown)])
        found = []
        for n, taken in enumerate(taken_each):
            by_id = {message["_id"]: message for message in (message_json(row, reactions[n].get(row["id"])) for row in shown[n])}
            changes = [(position, kind, _change_body(kind, row, by_id)) for position, kind, row in taken]
            found.append((changes, more_each[n], afters[n] < pruned))
        return found

    async def keep_partitions_ahead(self, width: int) -> Partitions | None:
        """Partitions of messages for the next `width` ids at least (partitions.py)."""
        return await keep_partitions_ahead(self._pool, width)

    async def prune_feed_events(self, older_than_seconds: float, batch: int) -> int:
        """Prunes a batch of old feed events (feed_events.py); how many went."""
        async with self._connection() as connection:
            return await prune(connection, older_than_seconds, batch)

    async def search(self, me: str, query: str, before: int | None, limit: int) -> tuple[list[dict], bool]:
        async with self.read_connection() as connection:
            rows = await connection.fetch(_SEARCH, me, query, before or _MAX_ID, limit + 1)
            found = await messages_json(connection, rows[:limit], me)
        return found, len(rows) > limit

    async def delete_message(self, me: str, message_id: int) -> tuple[dict, int]:
        """Deletes my own message; the summary rows of both sides (or the group's last message)
        forget it in the same transaction. Someone who cannot see the message is told it does not
        exist. Returns the deletion and its position in the change feed."""
        async with self._connection() as connection, connection.transaction():
            await connection.execute(CLAIM_FEED_POSITIONS)
            row = await connection.fetchrow(_MESSAGE_TO_DELETE, message_id, me)
            visible = row is not None and (row["member"] if row["group_id"] else me in (row["sender_id"], row["receiver_id"]))
            if not visible:
                raise NotFound("No such message")
            if row["sender_id"] != me:
                raise Forbidden("Only the sender can delete a message")
            sender_id, receiver_id, group_id = row["sender_id"], row["receiver_id"], row["group_id"]
            seq = await connection.fetchval(_DELETE_MESSAGE, message_id, sender_id, receiver_id, group_id)
            if group_id is not None:
                await connection.execute(_REPOINT_GROUP, message_id, group_id)
            else:
                if not row["is_read"] and sender_id != receiver_id:
                    await connection.execute(_FORGET_UNREAD, sender_id, receiver_id)
                await connection.execute(_REPOINT_SUMMARIES, message_id, sender_id, receiver_id)
            # The media service's sweeper removes their bytes, then their rows.
            await connection.execute(_DELETE_ATTACHMENTS, message_id)
        return deletion_json(message_id, sender_id, receiver_id, group_id), seq

    async def edit_message(self, me: str, message_id: int, text: str, window_seconds: float) -> tuple[dict, int]:
        """Replaces the text of my own message sent less than `window_seconds` ago; the edit is a
        change-feed event (sync's `edited`), and search finds the new words (the word vector is
        generated from the text). Someone who cannot see the message is told it does not exist.
        Returns the message edited and the edit's position in the change feed."""
        async with self._connection() as connection, connection.transaction():
            await connection.execute(CLAIM_FEED_POSITIONS)
            row = await connection.fetchrow(_MESSAGE_TO_EDIT, message_id, me, window_seconds)
            if not _visible(row, me):
                raise NotFound("No such message")
            if row["sender_id"] != me:
                raise Forbidden("Only the sender can edit a message")
            if not row["editable"]:
                raise EditWindowClosed(f"A message can be edited for {window_seconds:g} seconds after it is sent")
            seq = await connection.fetchval(
                _EDIT_MESSAGE, message_id, text, row["sender_id"], row["receiver_id"], row["group_id"])
            [edited] = await messages_json(connection, [await connection.fetchrow(_MESSAGE_BY_ID, message_id)], me)
        return edited, seq

    async def set_reactions(self, requests: list[tuple[str, int, str, bool]]) -> list[ReactionOutcome | ParleyError]:
        """Several reactions, each (me, message id, emoji, add), in ONE transaction and in the
        order given: one commit for all, as a group commit of sends has (each its own commit, a
        WAL flush, once capped the system at a few hundred a second: bench/RESULTS.md,
        "Reactions"). Each is checked on its own (a savepoint): one refused (`NotFound`,
        `TooManyReactions`) leaves the others."""
        results: list[ReactionOutcome | ParleyError] = []
        async with self._connection() as connection, connection.transaction():
            await connection.execute(CLAIM_FEED_POSITIONS)
            # A user's reactions on one message change one transaction at a time, so their count
            # is read after any other change to it; all taken at once, in key order (no deadlock).
            await connection.execute(_LOCK_REACTORS, [r[0] for r in requests], [r[1] for r in requests])
            for me, message_id, emoji, add in requests:
                try:
                    async with connection.transaction():
                        results.append(await _set_reaction(connection, me, message_id, emoji, add))
                except (NotFound, TooManyReactions) as refused:
                    results.append(refused)
        return results


async def _set_reaction(connection: asyncpg.Connection, me: str, message_id: int, emoji: str,
                        add: bool) -> ReactionOutcome:
    """Adds (or removes) my `emoji` on a message I can see, under the caller's lock on (me, message).
    Refused with `too_many_reactions` past MAX_REACTIONS_PER_USER emoji."""
    row = await connection.fetchrow(_VISIBLE_MESSAGE, message_id, me)
    if not _visible(row, me):
        raise NotFound("No such message")
    if add:
        outcome = await connection.fetchval(_ADD_REACTION, message_id, me, emoji, MAX_REACTIONS_PER_USER)
        if outcome == "full":
            raise TooManyReactions(f"At most {MAX_REACTIONS_PER_USER} different reactions on one message")
        changed = outcome == "added"
    else:
        changed = await connection.fetchval(_REMOVE_REACTION, message_id, me, emoji) is not None
    mine = (await _reactions_of(connection, [message_id], me)).get(message_id, [])
    update = None
    if changed:
        payload = reaction_updated_json(message_id, mine, me, emoji, add)
        if row["group_id"] is not None:
            update = await append_event(connection, "reactionUpdated", payload, group=row["group_id"])
        else:
            update = await append_event(connection, "reactionUpdated", payload,
                                        user=row["sender_id"], partner=row["receiver_id"])
    conversation = deletion_json(message_id, row["sender_id"], row["receiver_id"], row["group_id"])
    return ReactionOutcome(conversation, mine, update)


@contextlib.asynccontextmanager
async def _unavailable_without_partition() -> AsyncIterator[None]:
    """An id past the last partition of messages (partitions.py) refuses the batch with a 503:
    retried by the gateway and the client, it is stored once history has created the partition."""
    try:
        yield
    except asyncpg.CheckViolationError as exc:
        if "no partition of relation" not in str(exc):
            raise
        log.error("no partition of messages for the next ids (%s): see parley_history_message_partition_headroom_ids",
                  exc)
        raise StoreUnavailable("The message store has no room for new messages yet, try again shortly") from None


def _change_body(kind: str, row, by_id: dict[str, dict]) -> object:
    """A feed change's body (see `MessageStore.feed`)."""
    if kind == "deletion":
        return deletion_json(row["message_id"], row["sender_id"], row["receiver_id"], row["group_id"])
    if kind == "event":
        return row
    return by_id[str(row["id"])]


def _visible(row, me: str) -> bool:
    """A row of _MESSAGE_TO_EDIT / _VISIBLE_MESSAGE that `me` may see: a 1:1 party, or a member of its group now."""
    return row is not None and (row["member"] if row["group_id"] else me in (row["sender_id"], row["receiver_id"]))


async def messages_json(connection: asyncpg.Connection, rows: list, reader: str) -> list[dict]:
    """Message objects of rows of MESSAGE_COLUMNS, each with its reactions as `reader` sees them
    (one more query for the whole page: one primary-key range scan per message)."""
    reactions = await _reactions_of(connection, [row["id"] for row in rows], reader) if rows else {}
    return [message_json(row, reactions.get(row["id"])) for row in rows]


async def _rows_each(connection: asyncpg.Connection, query: str, users: list[str], afters: list[int], limit: int) -> list[list]:
    """The rows of a `for_each_request` statement, by request."""
    found: list[list] = [[] for _ in users]
    for row in await connection.fetch(query, users, afters, limit):
        found[row["req"] - 1].append(row)
    return found


async def _reactions_each(connection: asyncpg.Connection, pages: list[tuple[str, list[int]]]) -> list[dict[int, list[dict]]]:
    """For each (reader, distinct message ids): the messages' reactions as that reader sees them,
    by id (`messages_json`'s, for many readers in one statement)."""
    found: list[dict[int, list[dict]]] = [{} for _ in pages]
    numbers = [n for n, (_, ids) in enumerate(pages, 1) for _ in ids]
    if not numbers:
        return found
    readers = [reader for reader, ids in pages for _ in ids]
    message_ids = [message_id for _, ids in pages for message_id in ids]
    grouped: dict[tuple[int, int], list] = {}
    for row in await connection.fetch(_REACTIONS_EACH, numbers, readers, message_ids):
        grouped.setdefault((row["req"], row["message_id"]), []).append(row)
    for (number, message_id), rows in grouped.items():
        found[number - 1][message_id] = reactions_json(rows)
    return found


async def _reactions_of(connection: asyncpg.Connection, message_ids: list[int], reader: str) -> dict[int, list[dict]]:
    rows = await connection.fetch(_REACTIONS_OF, message_ids, reader)
    grouped: dict[int, list] = {}
    for row in rows:
        grouped.setdefault(row["message_id"], []).append(row)
    return {message_id: reactions_json(found) for message_id, found in grouped.items()}


async def _messages_by_client_id(connection: asyncpg.Connection, messages: list[StoreMessage]) -> dict:
    """Messages already stored under these (sender, clientId) pairs, by pair."""
    pairs = [m for m in messages if m.client_id is not None]
    if not pairs:
        return {}
    rows = await connection.fetch(
        f"SELECT {MESSAGE_COLUMNS} FROM message_client_ids k JOIN messages m ON m.id = k.message_id {PROFILE_JOINS}"
        " WHERE (k.sender_id, k.client_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
        [m.sender_id for m in pairs],
        [m.client_id for m in pairs],
    )
    # Each is answered to its own sender: their reactions on a retried message are theirs.
    return {(row["sender_id"], row["client_id"]): (await messages_json(connection, [row], row["sender_id"]))[0]
            for row in rows}


async def _attachment_refusals(connection: asyncpg.Connection, messages: list[StoreMessage]) -> dict[int, ParleyError]:
    """Messages whose attachments are not all the sender's own unsent uploads, keyed by `id(message)`.

    An attachment already linked to the message stored under the same (sender, clientId) counts as
    unsent: that is a retry, answered with the message stored first. The rows are locked (the
    caller's transaction), so two messages racing for one upload cannot both take it.
    """
    carrying = [m for m in messages if m.attachment_ids]
    if not carrying:
        return {}
    rows = await connection.fetch(
        _USABLE_ATTACHMENTS,
        [attachment_id for m in carrying for attachment_id in m.attachment_ids],
        [m.sender_id for m in carrying for _ in m.attachment_ids],
        [m.client_id for m in carrying for _ in m.attachment_ids],
    )
    usable = {(row["uploader_id"], row["id"]) for row in rows}
    claimed: set[str] = set()
    refusals: dict[int, ParleyError] = {}
    for message in carrying:
        ids = message.attachment_ids
        if any((message.sender_id, i) not in usable or i in claimed for i in ids):
            refusals[id(message)] = ParleyError(
                "attachmentIds: each must be one of your own uploads, not yet sent", code="invalid_attachmentIds"
            )
        else:
            claimed.update(ids)
    return refusals


async def _link_attachments(connection: asyncpg.Connection, messages: list[StoreMessage], created: dict[int, dict]) -> None:
    """Links the created messages' attachments to them, and puts them in their message objects."""
    linked = [(n, messages[n]) for n in created if messages[n].attachment_ids]
    if not linked:
        return
    ids, message_ids, positions = [], [], []
    for n, message in linked:
        for position, attachment_id in enumerate(message.attachment_ids):
            ids.append(attachment_id)
            message_ids.append(int(created[n]["_id"]))
            positions.append(position)
    rows = await connection.fetch(_LINK_ATTACHMENTS, ids, message_ids, positions)
    by_message: dict[int, list] = {}
    for row in rows:
        by_message.setdefault(row["message_id"], []).append(row)
    for rows_of_one in by_message.values():
        rows_of_one.sort(key=lambda row: row["position"])
    for n, _ in linked:
        created[n] = attach(created[n], by_message.get(int(created[n]["_id"]), []))


async def settled_head(connection: asyncpg.Connection) -> int:
    """The change feed's settled head now (migration 0012), asked on `connection` (the primary)."""
    return await connection.fetchval(_SETTLED_HEAD, SETTLE_MAX_WAIT_SECONDS)


async def _create_messages(connection: asyncpg.Connection, messages: list[StoreMessage]) -> list[Stored | ParleyError]:
    """`MessageStore.create_messages` on one connection: one attempt."""
    created: dict[int, dict] = {}
    recipients: dict[int, list[str]] = {}
    refusals: dict[int, ParleyError] = {}
    if not any(m.group_id is not None or m.attachment_ids for m in messages):
        created = await _insert_direct(connection, list(enumerate(messages)))
    else:
        async with connection.transaction():
            await connection.execute(CLAIM_FEED_POSITIONS)
            refusals = await _attachment_refusals(connection, messages)
            admitted = [(n, m) for n, m in enumerate(messages) if id(m) not in refusals]
            direct = [(n, m) for n, m in admitted if m.group_id is None]
            grouped = [(n, m) for n, m in admitted if m.group_id is not None]
            created = await _insert_direct(connection, direct) if direct else {}
            if grouped:
                await connection.execute(_LOCK_GROUPS, sorted({int(m.group_id) for _, m in grouped}))
                created |= await _insert_grouped(connection, grouped)
            await _link_attachments(connection, messages, created)
            recipients = await _group_recipients(connection, created)
    missing = [message for n, message in enumerate(messages) if n not in created and id(message) not in refusals]
    earlier = await _messages_by_client_id(connection, missing) if missing else {}
    refused = [message for message in missing if (message.sender_id, message.client_id) not in earlier]
    refusals |= await _refusals(connection, refused) if refused else {}
    results: list[Stored | ParleyError] = []
    for n, message in enumerate(messages):
        if n in created:
            results.append(Stored(created[n], True, recipients.get(n)))
        elif (message.sender_id, message.client_id) in earlier:
            results.append(Stored(earlier[message.sender_id, message.client_id], False, None))
        else:
            results.append(refusals[id(message)])
    return results


async def _insert_direct(connection: asyncpg.Connection, direct: list[tuple[int, StoreMessage]]) -> dict[int, dict]:
    """The 1:1 messages this statement created, by their index in the batch."""
    columns = [[getattr(m, name) for _, m in direct] for name in ("sender_id", "receiver_id", "text", "client_id")]
    calls = [[m.call and getattr(m.call, name) for _, m in direct] for name in ("kind", "status", "duration_seconds")]
    rows = await connection.fetch(_INSERT_MESSAGES, *columns, _reply_ids(direct), *calls)
    return {direct[row["n"] - 1][0]: message_json(row) for row in rows}


async def _insert_grouped(connection: asyncpg.Connection, grouped: list[tuple[int, StoreMessage]]) -> dict[int, dict]:
    """The group messages this statement created (the caller claimed its positions and locked
    the groups' rows), by index."""
    rows = await connection.fetch(
        _INSERT_GROUP_MESSAGES,
        [m.sender_id for _, m in grouped],
        [int(m.group_id) for _, m in grouped],
        [m.text for _, m in grouped],
        [m.client_id for _, m in grouped],
        _reply_ids(grouped),
    )
    return {grouped[row["n"] - 1][0]: message_json(row) for row in rows}


def _reply_ids(messages: list[tuple[int, StoreMessage]]) -> list[int | None]:
    return [int(m.reply_to) if m.reply_to is not None else None for _, m in messages]


async def _group_recipients(connection: asyncpg.Connection, created: dict[int, dict]) -> dict[int, list[str]]:
    """For each created group message, the group's other members now (in this transaction)."""
    group_ids = sorted({int(message["groupId"]) for message in created.values() if message.get("groupId")})
    if not group_ids:
        return {}
    members = {row["group_id"]: row["members"] for row in await connection.fetch(_MEMBERS_OF_GROUPS, group_ids)}
    return {
        n: [user_id for user_id in members.get(int(message["groupId"]), []) if user_id != message["sender"]["_id"]]
        for n, message in created.items()
        if message.get("groupId")
    }


async def _refusals(connection: asyncpg.Connection, messages: list[StoreMessage]) -> dict[int, ParleyError]:
    """Why each message was not stored, keyed by `id(message)`: an unknown sender, receiver or
    group, a sender who is not a member of the group, or a `replyTo` outside the conversation."""
    user_ids = sorted({m.sender_id for m in messages} | {m.receiver_id for m in messages if m.receiver_id})
    group_ids = sorted({int(m.group_id) for m in messages if m.group_id is not None})
    known = await connection.fetchrow(_KNOWN_USERS_AND_GROUPS, user_ids, group_ids)
    users, groups = set(known["users"]), set(known["groups"])
    grouped = [m for m in messages if m.group_id is not None]
    memberships = {(row["group_id"], row["user_id"]) for row in await connection.fetch(
        _MEMBERSHIPS, [int(m.group_id) for m in grouped], [m.sender_id for m in grouped])} if grouped else set()
    refusals: dict[int, ParleyError] = {}
    for message in messages:
        if message.sender_id not in users:
            error: ParleyError = UnknownUser(
                "Your profile is not known to the chat service", code=ErrorCode.UNKNOWN_SENDER)
        elif message.group_id is None and message.receiver_id not in users:
            error = UnknownUser("The receiver is not a known user", code=ErrorCode.UNKNOWN_RECEIVER)
        elif message.group_id is not None and int(message.group_id) not in groups:
            error = unknown_group()
        elif message.group_id is not None and (int(message.group_id), message.sender_id) not in memberships:
            error = NotAMember()
        else:  # everything else holds: the replied message is not one of this conversation's
            error = InvalidField("replyTo", "must be a message of this conversation that is not deleted")
        refusals[id(message)] = error
    return refusals


_MAX_ID = 2**63 - 1

# Every transaction that draws from `change_seq` (messages, deletions, edits, feed_events) first
# claims (migration 0012): a shared lock keyed by the next position, held to its end. Claims never
# wait for each other, so writers run in parallel; a reader that must not skip a position that
# commits later stops at `settled_head` (it waits out the claims below the sequence's head).
CLAIM_FEED_POSITIONS = "SELECT parley_feed_claim()"
_SETTLED_HEAD = "SELECT parley_feed_settled(make_interval(secs => $1))"
# How long a feed read waits for the claims in flight below the head: a claim lasts one
# transaction (milliseconds); past this, the read stops below the oldest one (still settled).
SETTLE_MAX_WAIT_SECONDS = 2.0
MAX_SETTLE_WAITERS = 1000
# A batch that deadlocked with another history process's (and was rolled back whole) runs again.
DEADLOCK_RETRIES = 3

# Ids are drawn in the input's order before the insert, so each row maps back to its input (n).
# A message whose sender or receiver is unknown is left out (and explained by the caller)
# rather than failing the whole batch on the foreign key. The claim is a one-time filter,
# taken before the first id is drawn (in a transaction that claimed already, it claims again: harmless).
_INSERT_MESSAGES = f"""
WITH feed_claim AS MATERIALIZED (
    SELECT parley_feed_claim()
), input AS MATERIALIZED (
    SELECT nextval('change_seq') AS id, i.n, i.sender_id, i.receiver_id, i.text, i.client_id, i.reply_to,
           i.call_kind, i.call_status, i.call_duration_seconds
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::int[])
         WITH ORDINALITY AS i(sender_id, receiver_id, text, client_id, reply_to, call_kind, call_status,
                              call_duration_seconds, n)
    WHERE (SELECT true FROM feed_claim)
      AND EXISTS (SELECT 1 FROM users WHERE id = i.sender_id) AND EXISTS (SELECT 1 FROM users WHERE id = i.receiver_id)
      -- A reply quotes a message of the same pair, either way, still standing (a primary-key probe).
      AND (i.reply_to IS NULL OR EXISTS (
          SELECT 1 FROM messages x WHERE x.id = i.reply_to AND x.deleted_at IS NULL AND x.group_id IS NULL
          AND ((x.sender_id = i.sender_id AND x.receiver_id = i.receiver_id)
               OR (x.sender_id = i.receiver_id AND x.receiver_id = i.sender_id))))
    ORDER BY i.n
), claimed AS (
    -- The (sender, clientId) pairs this statement stores first (the first copy of a pair repeated
    -- in the batch): a pair stored before, or by a batch committing meanwhile, claims nothing.
    -- In (sender, clientId) order, so two batches holding the same retries wait, not deadlock.
    INSERT INTO message_client_ids (sender_id, client_id, message_id)
    SELECT sender_id, client_id, id FROM input WHERE client_id IS NOT NULL ORDER BY sender_id, client_id, id
    ON CONFLICT DO NOTHING
    RETURNING message_id
), m AS (
    INSERT INTO messages (id, sender_id, receiver_id, text, client_id, reply_to_id, call_kind, call_status,
                          call_duration_seconds)
    SELECT id, sender_id, receiver_id, text, client_id, reply_to, call_kind, call_status, call_duration_seconds
    FROM input WHERE client_id IS NULL OR id IN (SELECT message_id FROM claimed)
    RETURNING {RETURNED_COLUMNS}
), summary AS (
    -- One row per (owner, partner), in key order, so concurrent batches lock them in the same order.
    INSERT INTO conversations AS c (owner_id, partner_id, last_message_id, unread_count)
    SELECT owner_id, partner_id, max(id), sum(unread)::int FROM (
        SELECT sender_id AS owner_id, receiver_id AS partner_id, id, 0 AS unread FROM m
        UNION ALL
        SELECT receiver_id, sender_id, id, 1 FROM m WHERE receiver_id <> sender_id
    ) AS sides GROUP BY owner_id, partner_id ORDER BY owner_id, partner_id
    ON CONFLICT (owner_id, partner_id) DO UPDATE
        SET last_message_id = GREATEST(c.last_message_id, EXCLUDED.last_message_id),
            unread_count = c.unread_count + EXCLUDED.unread_count
)
SELECT input.n, {MESSAGE_COLUMNS} FROM m JOIN input ON input.id = m.id {PROFILE_JOINS}
"""

# Two index range scans (one per direction) merged, rather than one scan over an OR.
_CONVERSATION_PAGE = f"""
SELECT {MESSAGE_COLUMNS} FROM (
    (SELECT * FROM messages WHERE sender_id = $1 AND receiver_id = $2 AND id < $3 AND deleted_at IS NULL
     ORDER BY id DESC LIMIT $4)
    UNION ALL
    (SELECT * FROM messages WHERE sender_id = $2 AND receiver_id = $1 AND id < $3 AND deleted_at IS NULL
     AND $1 <> $2 ORDER BY id DESC LIMIT $4)
) AS m {PROFILE_JOINS}
ORDER BY m.id DESC LIMIT $4
"""

# Two indexed range scans merged newest first: my 1:1 summary rows (conversations_recent_idx)
# and my groups (group_members_user_idx, each group by its key, sorted by its last message: the
# cost grows with how many groups I am in, never with messages). Messages are reached by key
# only. Member counts are taken for the page's groups alone, after the LIMIT.
_CONVERSATIONS = """
SELECT page.*, m.*, CASE WHEN page.is_group THEN (SELECT count(*) FROM group_members WHERE group_id = page.group_id)
               END AS member_count
FROM (
    (SELECT false AS is_group, c.partner_id, NULL::bigint AS group_id, c.unread_count,
            p.user_name AS p_user_name, p.name AS p_name, p.profile_image AS p_profile_image, c.last_message_id,
            c.last_message_id AS position
     FROM conversations c JOIN users p ON p.id = c.partner_id
     WHERE c.owner_id = $1 AND c.last_message_id IS NOT NULL AND c.last_message_id < $2
     ORDER BY c.last_message_id DESC LIMIT $3)
    UNION ALL
    (SELECT true, NULL, g.id, GREATEST(g.last_seq - gm.read_seq, 0)::int, NULL, g.name, g.image, g.last_message_id,
            g.activity_id
     FROM group_members gm JOIN groups g ON g.id = gm.group_id
     WHERE gm.user_id = $1 AND g.activity_id < $2
     ORDER BY g.activity_id DESC LIMIT $3)
    ORDER BY position DESC LIMIT $3
) AS page
LEFT JOIN LATERAL (
    -- A group without messages yet has none: its entry's lastMessage is null.
    SELECT m.id, m.sender_id, m.receiver_id, m.text, m.client_id, m.is_read, m.read_at,
           m.created_at, m.updated_at, m.call_kind, m.call_status, m.call_duration_seconds
    FROM messages m WHERE m.id = page.last_message_id
) AS m ON true
ORDER BY page.position DESC
"""

# The summary is decremented by what this statement marked, not reset to zero, so a message
# inserted concurrently (and not marked here) stays counted.
_MARK_READ = """
WITH marked AS (
    UPDATE messages SET is_read = true, read_at = now(), updated_at = now()
    WHERE receiver_id = $1 AND sender_id = $2 AND NOT is_read AND deleted_at IS NULL
    RETURNING id
), summary AS (
    UPDATE conversations SET unread_count = GREATEST(unread_count - (SELECT count(*) FROM marked), 0)
    WHERE owner_id = $1 AND partner_id = $2
)
SELECT count(*)::int AS count, max(id) AS up_to FROM marked
"""

# Sync, search and the conversation list read 1:1 rows by user as before (the sender side
# leaves group rows out) and group rows per group I am a member of NOW: one range scan of
# messages_group_idx (or its word index) per group, reached through group_members_user_idx.
# A removed member's groups are simply no longer among mine.
_SYNC_MESSAGES = f"""
SELECT {MESSAGE_COLUMNS} FROM (
    (SELECT * FROM messages WHERE sender_id = $1 AND group_id IS NULL AND id > $2 AND deleted_at IS NULL
     ORDER BY id LIMIT $3)
    UNION
    (SELECT * FROM messages WHERE receiver_id = $1 AND id > $2 AND deleted_at IS NULL ORDER BY id LIMIT $3)
    UNION ALL
    (SELECT g.* FROM group_members gm CROSS JOIN LATERAL (
        SELECT * FROM messages WHERE group_id = gm.group_id AND id > $2 AND deleted_at IS NULL ORDER BY id LIMIT $3
     ) AS g WHERE gm.user_id = $1)
) AS m {PROFILE_JOINS}
ORDER BY m.id LIMIT $3
"""

_SYNC_MESSAGES_EACH = for_each_request(_SYNC_MESSAGES)

_SYNC_DELETIONS = """
(SELECT seq, message_id, sender_id, receiver_id, group_id FROM message_deletions
 WHERE sender_id = $1 AND group_id IS NULL AND seq > $2 ORDER BY seq LIMIT $3)
UNION
(SELECT seq, message_id, sender_id, receiver_id, group_id FROM message_deletions WHERE receiver_id = $1 AND seq > $2
 ORDER BY seq LIMIT $3)
UNION ALL
(SELECT d.* FROM group_members gm CROSS JOIN LATERAL (
    SELECT seq, message_id, sender_id, receiver_id, group_id FROM message_deletions
    WHERE group_id = gm.group_id AND seq > $2 ORDER BY seq LIMIT $3
 ) AS d WHERE gm.user_id = $1)
ORDER BY seq LIMIT $3
"""

_SYNC_DELETIONS_EACH = for_each_request(_SYNC_DELETIONS)

# One probe of each per-user word index (sent, received) and of each of my groups' word index, merged newest first.
# Ordered by `id + 0`, which no index provides: otherwise, on messages partitioned by id (0013), the generic plan
# walks the user's (user, id) btree of each partition backwards testing every message, which reads a user's
# whole history when the words are rare (10,000,000 messages: 275 ms instead of 20 ms, bench/RESULTS.md).
_SEARCH = f"""
SELECT {MESSAGE_COLUMNS} FROM (
    (SELECT * FROM messages WHERE sender_id = $1 AND group_id IS NULL AND search @@ websearch_to_tsquery('simple', $2)
     AND deleted_at IS NULL AND id < $3 ORDER BY id + 0 DESC LIMIT $4)
    UNION ALL
    (SELECT * FROM messages WHERE receiver_id = $1 AND sender_id <> $1 AND search @@ websearch_to_tsquery('simple', $2)
     AND deleted_at IS NULL AND id < $3 ORDER BY id + 0 DESC LIMIT $4)
    UNION ALL
    (SELECT g.* FROM group_members gm CROSS JOIN LATERAL (
        SELECT * FROM messages WHERE group_id = gm.group_id AND search @@ websearch_to_tsquery('simple', $2)
        AND deleted_at IS NULL AND id < $3 ORDER BY id + 0 DESC LIMIT $4
     ) AS g WHERE gm.user_id = $1)
) AS m {PROFILE_JOINS}
ORDER BY m.id DESC LIMIT $4
"""

# Clears the text (so it leaves search too) and records the deletion for sync.
_DELETE_MESSAGE = """
WITH gone AS (
    UPDATE messages SET deleted_at = now(), updated_at = now(), text = '' WHERE id = $1
)
INSERT INTO message_deletions (message_id, sender_id, receiver_id, group_id) VALUES ($1, $2, $3, $4)
RETURNING seq
"""

# The message, locked, and whether I am a member of its group now (a primary-key probe). FOR NO
# KEY UPDATE, not FOR UPDATE: it orders an edit and a deletion of the message, and leaves the
# rows whose foreign keys name it (reactions, attachments: KEY SHARE) free to be written meanwhile,
# by transactions that may hold the group's row, which the deletion takes next.
_MESSAGE_TO_DELETE = """
SELECT m.sender_id, m.receiver_id, m.group_id, m.is_read,
       EXISTS (SELECT 1 FROM group_members gm WHERE gm.group_id = m.group_id AND gm.user_id = $2) AS member
FROM messages m WHERE m.id = $1 AND m.deleted_at IS NULL FOR NO KEY UPDATE OF m
"""

# The group's last message moves to the newest still standing, if it was the one deleted: a
# backward walk of messages_group_idx. (Its unread counters keep counting it: issue 15's design.)
_REPOINT_GROUP = """
UPDATE groups SET last_message_id = (
    SELECT max(id) FROM messages WHERE group_id = $2 AND deleted_at IS NULL
) WHERE id = $2 AND last_message_id = $1
"""

# A deleted unread message no longer counts for the receiver.
_FORGET_UNREAD = """
UPDATE conversations SET unread_count = GREATEST(unread_count - 1, 0) WHERE owner_id = $2 AND partner_id = $1
"""

# Both summary rows that pointed at the deleted message move to the newest message still standing.
_REPOINT_SUMMARIES = """
UPDATE conversations c SET last_message_id = GREATEST(
    (SELECT max(id) FROM messages WHERE sender_id = c.owner_id AND receiver_id = c.partner_id AND deleted_at IS NULL),
    (SELECT max(id) FROM messages WHERE sender_id = c.partner_id AND receiver_id = c.owner_id AND deleted_at IS NULL)
)
WHERE ((owner_id = $2 AND partner_id = $3) OR (owner_id = $3 AND partner_id = $2)) AND last_message_id = $1
"""

# Run after _LOCK_GROUPS, in a statement of its own: its snapshot then holds every message of
# these groups committed before, so `NOT EXISTS` finds each earlier (sender, clientId) and only new
# messages draw a group sequence number (the unread counters subtract these; a gap would count
# a message no one can read). A sender who is not a member now stores nothing. Each group's row
# is updated once per batch, whatever its members: last_seq and last_message_id move, and the
# messages take last_seq + 1, + 2, ... in id order. Sending reads the group for the sender.
_INSERT_GROUP_MESSAGES = f"""
WITH input AS MATERIALIZED (
    SELECT i.n, i.sender_id, i.group_id, i.text, i.client_id, i.reply_to
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[])
         WITH ORDINALITY AS i(sender_id, group_id, text, client_id, reply_to, n)
    WHERE EXISTS (SELECT 1 FROM group_members gm WHERE gm.group_id = i.group_id AND gm.user_id = i.sender_id)
      -- A reply quotes a message of the same group still standing (a primary-key probe).
      AND (i.reply_to IS NULL OR EXISTS (
          SELECT 1 FROM messages x WHERE x.id = i.reply_to AND x.group_id = i.group_id AND x.deleted_at IS NULL))
      AND (i.client_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM message_client_ids x WHERE x.sender_id = i.sender_id AND x.client_id = i.client_id))
), numbered AS MATERIALIZED (
    -- A clientId repeated within the batch: its first copy only.
    SELECT nextval('change_seq') AS id, i.n, i.sender_id, i.group_id, i.text, i.client_id, i.reply_to FROM input i
    WHERE i.client_id IS NULL
       OR i.n = (SELECT min(j.n) FROM input j WHERE j.sender_id = i.sender_id AND j.client_id = i.client_id)
    ORDER BY i.n
), counted AS (
    UPDATE groups g SET last_seq = g.last_seq + c.k, last_message_id = GREATEST(g.last_message_id, c.newest),
                        activity_id = GREATEST(g.activity_id, c.newest)
    FROM (SELECT group_id, count(*) AS k, max(id) AS newest FROM numbered GROUP BY group_id) AS c
    WHERE g.id = c.group_id
    RETURNING g.id, g.last_seq - c.k AS base
), claimed AS (
    -- Conflicts only with a batch that committed the same (sender, clientId) meanwhile in another
    -- conversation (this group's row lock orders its own batches): that message is not stored twice.
    INSERT INTO message_client_ids (sender_id, client_id, message_id)
    SELECT sender_id, client_id, id FROM numbered WHERE client_id IS NOT NULL ORDER BY sender_id, client_id
    ON CONFLICT DO NOTHING
    RETURNING message_id
), m AS (
    INSERT INTO messages (id, sender_id, group_id, group_seq, text, client_id, reply_to_id)
    SELECT nb.id, nb.sender_id, nb.group_id, counted.base + row_number() OVER (PARTITION BY nb.group_id ORDER BY nb.id),
           nb.text, nb.client_id, nb.reply_to
    FROM numbered nb JOIN counted ON counted.id = nb.group_id
    WHERE nb.client_id IS NULL OR nb.id IN (SELECT message_id FROM claimed)
    RETURNING group_seq, {RETURNED_COLUMNS}
), sender_read AS (
    UPDATE group_members gm SET read_seq = GREATEST(gm.read_seq, s.seq), read_up_to = GREATEST(gm.read_up_to, s.id)
    FROM (SELECT group_id, sender_id, max(group_seq) AS seq, max(id) AS id FROM m GROUP BY group_id, sender_id) AS s
    WHERE gm.group_id = s.group_id AND gm.user_id = s.sender_id
)
SELECT numbered.n, {MESSAGE_COLUMNS} FROM m JOIN numbered ON numbered.id = m.id {PROFILE_JOINS}
"""

# The groups a batch sends to, locked in id order (no deadlock between batches): their messages,
# sequence numbers and members change one batch (or membership change) at a time.
_LOCK_GROUPS = "SELECT 1 FROM groups WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE"

# One transaction-level lock per (reactor, message), taken in key order: the two-int form of
# advisory locks, which the change-feed claims (bigint keys) never meet.
_LOCK_REACTORS = """
SELECT pg_advisory_xact_lock(k.reactions_class, k.key)
FROM (SELECT DISTINCT 1886545010 AS reactions_class, hashtext(i.user_id || '/' || i.message_id) AS key
      FROM unnest($1::text[], $2::bigint[]) AS i(user_id, message_id)) AS k
ORDER BY k.key
"""

# The members of each group, by primary key range (who a new group message goes to).
_MEMBERS_OF_GROUPS = """
SELECT group_id, array_agg(user_id) AS members FROM group_members WHERE group_id = ANY($1::bigint[]) GROUP BY group_id
"""

# Why messages were refused: which of these users and groups exist (probes by primary key).
_KNOWN_USERS_AND_GROUPS = """
SELECT ARRAY(SELECT id FROM users WHERE id = ANY($1::text[])) AS users,
       ARRAY(SELECT id FROM groups WHERE id = ANY($2::bigint[])) AS groups
"""

# 1:1 partners (my summary rows) and the co-members of my groups: group_members_user_idx for
# my groups, then each group's primary key range.
_PARTNERS = """
SELECT partner_id FROM conversations WHERE owner_id = $1
UNION
SELECT other.user_id FROM group_members mine JOIN group_members other ON other.group_id = mine.group_id
WHERE mine.user_id = $1 AND other.user_id <> $1
"""

_PARTNERS_OF_MANY = """
SELECT owner_id, array_agg(DISTINCT partner_id) AS partners FROM (
    SELECT owner_id, partner_id FROM conversations WHERE owner_id = ANY($1::text[])
    UNION ALL
    SELECT mine.user_id, other.user_id FROM group_members mine JOIN group_members other ON other.group_id = mine.group_id
    WHERE mine.user_id = ANY($1::text[]) AND other.user_id <> mine.user_id
) AS pairs GROUP BY owner_id
"""

# Who may learn a reaction set or removed, an edit, whom its conversation is: the message (not
# deleted) and whether I am a member of its group now (a primary-key probe each).
_VISIBLE_MESSAGE = """
SELECT m.sender_id, m.receiver_id, m.group_id,
       EXISTS (SELECT 1 FROM group_members gm WHERE gm.group_id = m.group_id AND gm.user_id = $2) AS member
FROM messages m WHERE m.id = $1 AND m.deleted_at IS NULL
"""

# _VISIBLE_MESSAGE, locked (an edit and a deletion of one message wait for each other; NO KEY, as
# for _MESSAGE_TO_DELETE), and whether it is still inside the edit window ($3 seconds), by the
# database's clock.
_MESSAGE_TO_EDIT = """
SELECT m.sender_id, m.receiver_id, m.group_id, now() - m.created_at <= make_interval(secs => $3) AS editable,
       EXISTS (SELECT 1 FROM group_members gm WHERE gm.group_id = m.group_id AND gm.user_id = $2) AS member
FROM messages m WHERE m.id = $1 AND m.deleted_at IS NULL FOR NO KEY UPDATE OF m
"""

# The new text (the word vector follows: it is generated from the text) and the edit recorded
# for sync, in one statement (the edit takes a change_seq number: the caller claimed it).
_EDIT_MESSAGE = """
WITH edited AS (
    UPDATE messages SET text = $2, edited_at = now(), updated_at = now() WHERE id = $1
)
INSERT INTO message_edits (message_id, sender_id, receiver_id, group_id) VALUES ($1, $3, $4, $5)
RETURNING seq
"""

_MESSAGE_BY_ID = f"SELECT {MESSAGE_COLUMNS} FROM messages m {PROFILE_JOINS} WHERE m.id = $1"

# Edits after the cursor, the message as it stands now: like _SYNC_DELETIONS, the three index
# range scans of message_edits (my 1:1 sent, received, each of my groups), then messages by key.
# A message edited and then deleted is left out: its deletion is in the feed.
_SYNC_EDITS = f"""
SELECT e.seq, {MESSAGE_COLUMNS} FROM (
    (SELECT seq, message_id FROM message_edits WHERE sender_id = $1 AND group_id IS NULL AND seq > $2
     ORDER BY seq LIMIT $3)
    UNION
    (SELECT seq, message_id FROM message_edits WHERE receiver_id = $1 AND seq > $2 ORDER BY seq LIMIT $3)
    UNION ALL
    (SELECT d.* FROM group_members gm CROSS JOIN LATERAL (
        SELECT seq, message_id FROM message_edits WHERE group_id = gm.group_id AND seq > $2 ORDER BY seq LIMIT $3
     ) AS d WHERE gm.user_id = $1)
    ORDER BY seq LIMIT $3
) AS e JOIN messages m ON m.id = e.message_id {PROFILE_JOINS}
WHERE m.deleted_at IS NULL
ORDER BY e.seq
"""

_SYNC_EDITS_EACH = for_each_request(_SYNC_EDITS)

# The reactions of a page of messages for its reader: a range scan of the primary key per
# message, counted per emoji, in the order each emoji was first put on the message.
_REACTIONS_OF = """
SELECT message_id, emoji, count(*)::int AS count, bool_or(user_id = $2) AS me
FROM message_reactions WHERE message_id = ANY($1::bigint[])
GROUP BY message_id, emoji ORDER BY message_id, min(created_at), emoji
"""

# _REACTIONS_OF for many (request number, reader, message id) at once.
_REACTIONS_EACH = """
SELECT p.req, r.message_id, r.emoji, count(*)::int AS count, bool_or(r.user_id = p.reader) AS me
FROM unnest($1::int[], $2::text[], $3::bigint[]) AS p(req, reader, message_id)
JOIN message_reactions r ON r.message_id = p.message_id
GROUP BY p.req, r.message_id, r.emoji ORDER BY p.req, r.message_id, min(r.created_at), r.emoji
"""

# 'exists' (already set: nothing to do), 'full' (the user's limit reached) or 'added'.
_ADD_REACTION = """
WITH mine AS (
    SELECT count(*) AS n, bool_or(emoji = $3) AS has FROM message_reactions WHERE message_id = $1 AND user_id = $2
), added AS (
    INSERT INTO message_reactions (message_id, user_id, emoji)
    SELECT $1, $2, $3 FROM mine WHERE NOT coalesce(mine.has, false) AND mine.n < $4
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT CASE WHEN coalesce(mine.has, false) THEN 'exists' WHEN EXISTS (SELECT 1 FROM added) THEN 'added' ELSE 'full' END
FROM mine
"""

_REMOVE_REACTION = "DELETE FROM message_reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3 RETURNING 1"

# Which of these (group, sender) pairs are memberships now (primary-key probes): why a group message was refused.
_MEMBERSHIPS = """
SELECT group_id, user_id FROM group_members
WHERE (group_id, user_id) IN (SELECT * FROM unnest($1::bigint[], $2::text[]))
"""
# The sender's own uploads among these, unsent (or sent by this very (sender, clientId): a
# retry), locked until the batch commits.
_USABLE_ATTACHMENTS = """
SELECT a.id, a.uploader_id FROM unnest($1::text[], $2::text[], $3::text[]) AS i(id, sender_id, client_id)
JOIN attachments a ON a.id = i.id AND a.uploader_id = i.sender_id AND a.deleted_at IS NULL
WHERE a.message_id IS NULL
   OR a.message_id = (
       SELECT x.message_id FROM message_client_ids x WHERE x.sender_id = i.sender_id AND x.client_id = i.client_id)
FOR UPDATE OF a
"""

_LINK_ATTACHMENTS = """
UPDATE attachments a SET message_id = i.message_id, position = i.position
FROM unnest($1::text[], $2::bigint[], $3::smallint[]) AS i(id, message_id, position)
WHERE a.id = i.id AND a.message_id IS NULL
RETURNING a.id, a.message_id, a.position, a.name, a.size, a.content_type, a.width, a.height,
          a.thumbnail_key IS NOT NULL AS has_thumbnail
"""

_DELETE_ATTACHMENTS = "UPDATE attachments SET deleted_at = now() WHERE message_id = $1 AND deleted_at IS NULL"
