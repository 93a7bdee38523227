"""Migration 0005 (groups) moves a database filled by the previous schema without loss.

The database is migrated through 0004 and filled by the statements the 0004-era store ran
(frozen below: the store itself has moved on), with sends, retried clientIds, self-messages,
reads and deletions. Every message, summary row and deletion is compared before and after
0005, and the current store must read the same pages and unread counts from the result.
"""

import asyncio
import random

import asyncpg

from services.history.migrations import apply_migrations
from services.history.store import MessageStore

PREVIOUS_SCHEMA = "0004"
USERS = [f"mig-user-{n}" for n in range(6)]
MESSAGES = 400
SEED = 15

_FEED_LOCK = 0x70726C79_66656564

# --- the 0004-era store's statements, frozen (services/history/store.py at f48d7f7) ----------

OLD_INSERT_MESSAGES = f"""
WITH feed_lock AS MATERIALIZED (
    SELECT pg_advisory_xact_lock({_FEED_LOCK})
), input AS MATERIALIZED (
    SELECT nextval('change_seq') AS id, i.n, i.sender_id, i.receiver_id, i.text, i.client_id
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS i(sender_id, receiver_id, text, client_id, n)
    WHERE (SELECT true FROM feed_lock)
      AND EXISTS (SELECT 1 FROM users WHERE id = i.sender_id) AND EXISTS (SELECT 1 FROM users WHERE id = i.receiver_id)
    ORDER BY i.n
), m AS (
    INSERT INTO messages (id, sender_id, receiver_id, text, client_id)
    SELECT id, sender_id, receiver_id, text, client_id FROM input ORDER BY sender_id, client_id, id
    ON CONFLICT ON CONSTRAINT messages_client_id_key DO NOTHING
    RETURNING id, sender_id, receiver_id
), summary AS (
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
SELECT m.id FROM m
"""

OLD_MARK_READ = """
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

OLD_DELETE_MESSAGE = """
WITH gone AS (
    UPDATE messages SET deleted_at = now(), updated_at = now(), text = '' WHERE id = $1
)
INSERT INTO message_deletions (message_id, sender_id, receiver_id) VALUES ($1, $2, $3)
"""

OLD_FORGET_UNREAD = """
UPDATE conversations SET unread_count = GREATEST(unread_count - 1, 0) WHERE owner_id = $2 AND partner_id = $1
"""

OLD_REPOINT_SUMMARIES = """
UPDATE conversations c SET last_message_id = GREATEST(
    (SELECT max(id) FROM messages WHERE sender_id = c.owner_id AND receiver_id = c.partner_id AND deleted_at IS NULL),
    (SELECT max(id) FROM messages WHERE sender_id = c.partner_id AND receiver_id = c.owner_id AND deleted_at IS NULL)
)
WHERE ((owner_id = $2 AND partner_id = $3) OR (owner_id = $3 AND partner_id = $2)) AND last_message_id = $1
"""


async def old_delete(connection: asyncpg.Connection, message_id: int) -> None:
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _FEED_LOCK)
        row = await connection.fetchrow(
            "SELECT sender_id, receiver_id, is_read FROM messages WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
            message_id,
        )
        sender_id, receiver_id = row["sender_id"], row["receiver_id"]
        await connection.execute(OLD_DELETE_MESSAGE, message_id, sender_id, receiver_id)
        if not row["is_read"] and sender_id != receiver_id:
            await connection.execute(OLD_FORGET_UNREAD, sender_id, receiver_id)
        await connection.execute(OLD_REPOINT_SUMMARIES, message_id, sender_id, receiver_id)


async def fill_as_the_previous_store(connection: asyncpg.Connection) -> None:
    rng = random.Random(SEED)
    for n, user_id in enumerate(USERS):
        await connection.execute(
            "INSERT INTO users (id, user_name, name, profile_image) VALUES ($1, $2, $3, $4)",
            user_id, f"mig{n}", f"User {n}", f"https://img.example/{n}.png" if n % 2 else "",
        )
    sent = 0
    while sent < MESSAGES:
        batch = []
        for _ in range(rng.randint(1, 12)):
            sender, receiver = rng.choice(USERS), rng.choice(USERS)  # self-messages included
            client_id = f"c-{sent}" if rng.random() < 0.7 else None
            batch.append((sender, receiver, f"word{rng.randint(0, 30)} hello {sent}", client_id))
            sent += 1
        if rng.random() < 0.2:
            batch.append(batch[0])  # a retried clientId (or a second copy without one)
        await connection.fetch(OLD_INSERT_MESSAGES, *map(list, zip(*batch)))
        if rng.random() < 0.3:
            await connection.fetch(OLD_MARK_READ, rng.choice(USERS), rng.choice(USERS))
    ids = [row["id"] for row in await connection.fetch("SELECT id FROM messages ORDER BY id")]
    for message_id in rng.sample(ids, len(ids) // 8):
        await old_delete(connection, message_id)


async def snapshot(connection: asyncpg.Connection) -> dict:
    """Every row the previous schema held, in the previous schema's columns."""
    return {
        "users": await connection.fetch("SELECT * FROM users ORDER BY id"),
        "messages": [tuple(row) for row in await connection.fetch(
            "SELECT id, sender_id, receiver_id, text, client_id, is_read, read_at, created_at, updated_at,"
            " deleted_at, search::text FROM messages ORDER BY id")],
        "conversations": [tuple(row) for row in await connection.fetch(
            "SELECT owner_id, partner_id, last_message_id, unread_count FROM conversations ORDER BY 1, 2")],
        "deletions": [tuple(row) for row in await connection.fetch(
            "SELECT seq, message_id, sender_id, receiver_id, deleted_at FROM message_deletions ORDER BY seq")],
        "next_id": await connection.fetchval("SELECT last_value FROM change_seq"),
    }


async def read_through_current_store(url: str) -> tuple[dict, dict]:
    """Unread counts and last messages of every conversation list, and every pair's message ids."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        store = MessageStore(pool)
        store.schema_ready = True
        lists, pages = {}, {}
        for me in USERS:
            conversations, _ = await store.list_conversations(me, None, 500)
            lists[me] = [(c["_id"]["_id"], c["lastMessage"]["_id"], c["unreadCount"]) for c in conversations]
            for partner in USERS:
                page, _ = await store.fetch_page(me, partner, None, 200)
                pages[me, partner] = [m["_id"] for m in page]
        return lists, pages
    finally:
        await pool.close()


def expected_reads(before: dict) -> tuple[dict, dict]:
    """What the 0004 data says each list and page must show."""
    lists = {me: [] for me in USERS}
    for owner, partner, last_id, unread in sorted(before["conversations"], key=lambda row: -(row[2] or 0)):
        if last_id is not None:
            lists[owner].append((partner, str(last_id), unread))
    pages = {}
    for me in USERS:
        for partner in USERS:
            pages[me, partner] = [
                str(row[0]) for row in before["messages"]
                if row[9] is None and {(row[1], row[2])} & {(me, partner), (partner, me)}
            ][-200:]
    return lists, pages


def test_groups_migration_keeps_every_message_and_unread_count(own_database):
    url = own_database.url

    async def migrate_a_filled_database():
        connection = await asyncpg.connect(url)
        try:
            applied = await apply_migrations(connection, through=PREVIOUS_SCHEMA)
            assert applied[-1].startswith(PREVIOUS_SCHEMA) and not any(v.startswith("0005") for v in applied)
            await fill_as_the_previous_store(connection)
            before = await snapshot(connection)
            applied = await apply_migrations(connection)
            after = await snapshot(connection)
            new_columns = await connection.fetchval(
                "SELECT count(*) FROM messages WHERE group_id IS NOT NULL OR group_seq IS NOT NULL")
        finally:
            await connection.close()
        return applied, before, after, new_columns, await read_through_current_store(url)

    applied, before, after, new_columns, (lists, pages) = asyncio.run(migrate_a_filled_database())

    assert applied[0].startswith("0005")
    # The fill really exercised what could be lost: deletions, reads, unread counts, retries.
    assert before["deletions"] and any(row[5] for row in before["messages"])
    assert any(row[3] > 0 for row in before["conversations"])
    for table in ("users", "messages", "conversations", "deletions", "next_id"):
        assert after[table] == before[table], f"{table} changed in migration 0005"
    assert new_columns == 0
    expected_lists, expected_pages = expected_reads(before)
    assert lists == expected_lists
    assert pages == expected_pages
