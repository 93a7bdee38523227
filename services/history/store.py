"""All SQL of the history service. Returns JSON-ready dicts in the guide's wire shape, built by .models."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg

from ..shared.errors import ErrorCode, Forbidden, NotFound, ParleyError, StoreUnavailable, UnknownUser
from ..shared.models import StoreMessage
from .models import UserProfile, conversation_json, deletion_json, message_json, profile_json

log = logging.getLogger(__name__)

# Failures that mean "Postgres is not reachable right now", as opposed to a bad query.
UNAVAILABLE_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
)

MESSAGE_COLUMNS = """
    m.id, m.sender_id, m.receiver_id, m.text, m.client_id, m.is_read, m.read_at, m.created_at, m.updated_at,
    s.user_name AS s_user_name, s.name AS s_name, s.profile_image AS s_profile_image,
    r.user_name AS r_user_name, r.name AS r_name, r.profile_image AS r_profile_image
"""
PROFILE_JOINS = "JOIN users s ON s.id = m.sender_id JOIN users r ON r.id = m.receiver_id"


class MessageStore:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool
        # False until this process has seen the migrations applied; queries wait for it.
        self.schema_ready = False

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if not self.schema_ready:
            raise StoreUnavailable("The message store is starting, try again shortly")
        try:
            async with self._pool.acquire(timeout=5) as connection:
                yield connection
        except UNAVAILABLE_ERRORS as exc:
            log.warning("postgres unavailable: %r", exc)
            raise StoreUnavailable("The message store is unavailable, try again shortly") from None

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

    async def list_users(self, limit: int) -> list[dict]:
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT id, user_name, name, profile_image FROM users ORDER BY user_name LIMIT $1", limit
            )
        return [profile_json(row) for row in rows]

    async def partner_ids(self, user_id: str) -> list[str]:
        """Everyone this user has a conversation with: who cares about their presence."""
        async with self._connection() as connection:
            rows = await connection.fetch("SELECT partner_id FROM conversations WHERE owner_id = $1", user_id)
        return [row["partner_id"] for row in rows]

    async def partner_ids_of_many(self, user_ids: list[str]) -> dict[str, list[str]]:
        """Partners of each of these users, in one query (presence announces in batches)."""
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT owner_id, array_agg(partner_id) AS partners FROM conversations"
                " WHERE owner_id = ANY($1::text[]) GROUP BY owner_id",
                user_ids,
            )
        found = {row["owner_id"]: list(row["partners"]) for row in rows}
        return {user_id: found.get(user_id, []) for user_id in user_ids}

    # --- messages ----------------------------------------------------------------------------

    async def create_messages(self, messages: list[StoreMessage]) -> list[tuple[dict, bool] | UnknownUser]:
        """Stores messages sent at about the same time in one statement and one commit.

        For each, in order: the stored message with both profiles and whether this call created
        it (a repeated (sender, clientId) creates nothing and answers the message stored first),
        or the `UnknownUser` error that refused it. Insert, the summary rows and the profile
        join are one statement, so a batch costs one round trip and one commit.
        """
        columns = [[getattr(m, name) for m in messages] for name in ("sender_id", "receiver_id", "text", "client_id")]
        async with self._connection() as connection:
            rows = await connection.fetch(_INSERT_MESSAGES, *columns)
            created = {row["n"]: message_json(row) for row in rows}
            missing = [message for n, message in enumerate(messages, start=1) if n not in created]
            earlier = await _messages_by_client_id(connection, missing) if missing else {}
            refused = [message for message in missing if (message.sender_id, message.client_id) not in earlier]
            known_users = await _known_users(connection, refused) if refused else set()
        results: list[tuple[dict, bool] | UnknownUser] = []
        for n, message in enumerate(messages, start=1):
            if n in created:
                results.append((created[n], True))
            elif (message.sender_id, message.client_id) in earlier:
                results.append((earlier[message.sender_id, message.client_id], False))
            elif message.sender_id not in known_users:
                results.append(
                    UnknownUser("Your profile is not known to the chat service", code=ErrorCode.UNKNOWN_SENDER))
            else:
                results.append(UnknownUser("The receiver is not a known user", code=ErrorCode.UNKNOWN_RECEIVER))
        return results

    async def fetch_page(self, me: str, partner: str, before: int | None, limit: int) -> tuple[list[dict], bool]:
        """Up to `limit` messages before the cursor, oldest first, and whether older ones exist."""
        async with self._connection() as connection:
            rows = await connection.fetch(_CONVERSATION_PAGE, me, partner, before or _MAX_ID, limit + 1)
        has_more = len(rows) > limit
        return [message_json(row) for row in reversed(rows[:limit])], has_more

    async def list_conversations(self, me: str, before: int | None, limit: int) -> tuple[list[dict], bool]:
        async with self._connection() as connection:
            rows = await connection.fetch(_CONVERSATIONS, me, before or _MAX_ID, limit + 1)
        has_more = len(rows) > limit
        return [conversation_json(row) for row in rows[:limit]], has_more

    async def mark_read(self, reader_id: str, partner_id: str) -> tuple[int, str | None]:
        """Marks the partner's messages to the reader read: how many, and the newest id."""
        async with self._connection() as connection:
            row = await connection.fetchrow(_MARK_READ, reader_id, partner_id)
        up_to = row["up_to"]
        return row["count"], (str(up_to) if up_to is not None else None)

    async def sync(self, me: str, after: int, limit: int) -> dict:
        """Messages and deletions after the cursor, in the order they happened."""
        async with self._connection() as connection:
            messages = await connection.fetch(_SYNC_MESSAGES, me, after, limit + 1)
            deletions = await connection.fetch(_SYNC_DELETIONS, me, after, limit + 1)
        events = sorted(
            [(row["id"], "message", row) for row in messages] + [(row["seq"], "deletion", row) for row in deletions],
            key=lambda event: event[0],
        )
        taken = events[:limit]
        next_cursor = taken[-1][0] if taken else after
        return {
            "messages": [message_json(row) for _, kind, row in taken if kind == "message"],
            "deleted": [
                deletion_json(row["message_id"], row["sender_id"], row["receiver_id"])
                for _, kind, row in taken
                if kind == "deletion"
            ],
            "next": str(next_cursor),
            "hasMore": len(events) > limit,
        }

    async def search(self, me: str, query: str, before: int | None, limit: int) -> tuple[list[dict], bool]:
        async with self._connection() as connection:
            rows = await connection.fetch(_SEARCH, me, query, before or _MAX_ID, limit + 1)
        return [message_json(row) for row in rows[:limit]], len(rows) > limit

    async def delete_message(self, me: str, message_id: int) -> dict:
        """Deletes my own message; the summary rows of both sides forget it in the same transaction."""
        async with self._connection() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", CHANGE_FEED_LOCK_KEY)
            row = await connection.fetchrow(
                "SELECT sender_id, receiver_id, is_read FROM messages WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
                message_id,
            )
            if row is None or me not in (row["sender_id"], row["receiver_id"]):
                raise NotFound("No such message")
            if row["sender_id"] != me:
                raise Forbidden("Only the sender can delete a message")
            sender_id, receiver_id = row["sender_id"], row["receiver_id"]
            await connection.execute(_DELETE_MESSAGE, message_id, sender_id, receiver_id)
            if not row["is_read"] and sender_id != receiver_id:
                await connection.execute(_FORGET_UNREAD, sender_id, receiver_id)
            await connection.execute(_REPOINT_SUMMARIES, message_id, sender_id, receiver_id)
        return deletion_json(message_id, sender_id, receiver_id)


async def _messages_by_client_id(connection: asyncpg.Connection, messages: list[StoreMessage]) -> dict:
    """Messages already stored under these (sender, clientId) pairs, by pair."""
    pairs = [m for m in messages if m.client_id is not None]
    if not pairs:
        return {}
    rows = await connection.fetch(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m {PROFILE_JOINS}"
        " WHERE (m.sender_id, m.client_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
        [m.sender_id for m in pairs],
        [m.client_id for m in pairs],
    )
    return {(row["sender_id"], row["client_id"]): message_json(row) for row in rows}


async def _known_users(connection: asyncpg.Connection, messages: list[StoreMessage]) -> set[str]:
    ids = sorted({m.sender_id for m in messages} | {m.receiver_id for m in messages})
    return {row["id"] for row in await connection.fetch("SELECT id FROM users WHERE id = ANY($1::text[])", ids)}


_MAX_ID = 2**63 - 1

# Every transaction that draws from `change_seq` (messages, deletions) holds this lock from
# before it draws until it has committed, so ids become visible in id order: `sync?after=<id>`
# can never miss a smaller id committed later. Group commit keeps the cost down: the gateways
# send one batch at a time each, and a batch takes the lock once.
CHANGE_FEED_LOCK_KEY = 0x70726C79_66656564  # "prly" "feed"

# Ids are drawn in the input's order before the insert, so each row maps back to its input (n).
# A message whose sender or receiver is unknown is left out (and explained by the caller)
# rather than failing the whole batch on the foreign key. The lock is a one-time filter,
# taken before the first id is drawn.
_INSERT_MESSAGES = f"""
WITH feed_lock AS MATERIALIZED (
    SELECT pg_advisory_xact_lock({CHANGE_FEED_LOCK_KEY})
), input AS MATERIALIZED (
    SELECT nextval('change_seq') AS id, i.n, i.sender_id, i.receiver_id, i.text, i.client_id
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS i(sender_id, receiver_id, text, client_id, n)
    WHERE (SELECT true FROM feed_lock)
      AND EXISTS (SELECT 1 FROM users WHERE id = i.sender_id) AND EXISTS (SELECT 1 FROM users WHERE id = i.receiver_id)
    ORDER BY i.n
), m AS (
    -- In (sender, clientId) order, so two batches holding the same retries wait, not deadlock.
    INSERT INTO messages (id, sender_id, receiver_id, text, client_id)
    SELECT id, sender_id, receiver_id, text, client_id FROM input ORDER BY sender_id, client_id, id
    ON CONFLICT ON CONSTRAINT messages_client_id_key DO NOTHING
    RETURNING id, sender_id, receiver_id, text, client_id, is_read, read_at, created_at, updated_at
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

_CONVERSATIONS = """
SELECT c.partner_id, c.unread_count,
       p.user_name AS p_user_name, p.name AS p_name, p.profile_image AS p_profile_image,
       m.id, m.sender_id, m.receiver_id, m.text, m.client_id, m.is_read, m.read_at, m.created_at, m.updated_at
FROM conversations c
JOIN users p ON p.id = c.partner_id
JOIN messages m ON m.id = c.last_message_id
WHERE c.owner_id = $1 AND c.last_message_id IS NOT NULL AND c.last_message_id < $2
ORDER BY c.last_message_id DESC
LIMIT $3
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

_SYNC_MESSAGES = f"""
SELECT {MESSAGE_COLUMNS} FROM (
    (SELECT * FROM messages WHERE sender_id = $1 AND id > $2 AND deleted_at IS NULL ORDER BY id LIMIT $3)
    UNION
    (SELECT * FROM messages WHERE receiver_id = $1 AND id > $2 AND deleted_at IS NULL ORDER BY id LIMIT $3)
) AS m {PROFILE_JOINS}
ORDER BY m.id LIMIT $3
"""

_SYNC_DELETIONS = """
(SELECT seq, message_id, sender_id, receiver_id FROM message_deletions WHERE sender_id = $1 AND seq > $2
 ORDER BY seq LIMIT $3)
UNION
(SELECT seq, message_id, sender_id, receiver_id FROM message_deletions WHERE receiver_id = $1 AND seq > $2
 ORDER BY seq LIMIT $3)
ORDER BY seq LIMIT $3
"""

# One probe of each per-user word index (sent, received), merged newest first.
_SEARCH = f"""
SELECT {MESSAGE_COLUMNS} FROM (
    (SELECT * FROM messages WHERE sender_id = $1 AND search @@ websearch_to_tsquery('simple', $2)
     AND deleted_at IS NULL AND id < $3 ORDER BY id DESC LIMIT $4)
    UNION ALL
    (SELECT * FROM messages WHERE receiver_id = $1 AND sender_id <> $1 AND search @@ websearch_to_tsquery('simple', $2)
     AND deleted_at IS NULL AND id < $3 ORDER BY id DESC LIMIT $4)
) AS m {PROFILE_JOINS}
ORDER BY m.id DESC LIMIT $4
"""

# Clears the text (so it leaves search too) and records the deletion for sync.
_DELETE_MESSAGE = """
WITH gone AS (
    UPDATE messages SET deleted_at = now(), updated_at = now(), text = '' WHERE id = $1
)
INSERT INTO message_deletions (message_id, sender_id, receiver_id) VALUES ($1, $2, $3)
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
