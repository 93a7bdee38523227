"""All SQL of the media service.

Media connects to history's database with a pool of its own. History owns the schema (migration
0007 created `attachments`); media writes only that table (an upload's row, the sweeper's
removals) and reads `messages` and `group_members` only to decide who may download.
"""

import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg

from ..shared.postgres import pooled_connection

log = logging.getLogger(__name__)

# Media starts while history may still be migrating: the table not there yet is "not ready".
SCHEMA_NOT_READY = (asyncpg.UndefinedTableError,)

ATTACHMENT_COLUMNS = (
    "id, uploader_id, name, size, content_type, width, height, storage_key, thumbnail_key, thumbnail_size, message_id, "
    "thumbnail_key IS NOT NULL AS has_thumbnail"
)


class AttachmentStore:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with pooled_connection(self._pool, "attachment store", SCHEMA_NOT_READY) as connection:
            yield connection

    async def ping(self) -> None:
        async with self._connection() as connection:
            await connection.fetchval("SELECT count(*) FROM (SELECT 1 FROM attachments LIMIT 1) AS one", timeout=2)

    async def add(self, row: dict) -> asyncpg.Record:
        async with self._connection() as connection:
            return await connection.fetchrow(
                f"""INSERT INTO attachments (id, uploader_id, name, size, content_type, width, height, storage_key,
                                            thumbnail_key, thumbnail_size)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {ATTACHMENT_COLUMNS}""",
                row["id"], row["uploader_id"], row["name"], row["size"], row["content_type"], row["width"],
                row["height"], row["storage_key"], row["thumbnail_key"], row["thumbnail_size"],
            )

    async def visible(self, attachment_id: str, user_id: str) -> asyncpg.Record | None:
        """The attachment if this user may fetch it: its uploader before it is sent, afterwards a
        member of its message's conversation (the sender, the receiver, or a member of the group
        now); None otherwise, and for one that does not exist or whose message was deleted."""
        async with self._connection() as connection:
            return await connection.fetchrow(_VISIBLE, attachment_id, user_id)

    async def get(self, attachment_id: str) -> asyncpg.Record | None:
        async with self._connection() as connection:
            return await connection.fetchrow(
                f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE id = $1 AND deleted_at IS NULL", attachment_id
            )

    async def expired(self, unsent_seconds: float, limit: int) -> list[asyncpg.Record]:
        """Uploads never sent within `unsent_seconds`, and those whose message was deleted."""
        async with self._connection() as connection:
            return await connection.fetch(_EXPIRED, unsent_seconds, limit)

    async def remove(self, attachment_id: str) -> None:
        async with self._connection() as connection:
            await connection.execute("DELETE FROM attachments WHERE id = $1", attachment_id)


_VISIBLE = f"""
SELECT {ATTACHMENT_COLUMNS} FROM attachments a
WHERE a.id = $1 AND a.deleted_at IS NULL AND (
    (a.message_id IS NULL AND a.uploader_id = $2)
    OR EXISTS (
        SELECT 1 FROM messages m WHERE m.id = a.message_id AND m.deleted_at IS NULL AND (
            m.sender_id = $2 OR m.receiver_id = $2
            OR EXISTS (SELECT 1 FROM group_members gm WHERE gm.group_id = m.group_id AND gm.user_id = $2)
        )
    )
)
"""

_EXPIRED = f"""
(SELECT {ATTACHMENT_COLUMNS} FROM attachments
 WHERE message_id IS NULL AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2)
UNION ALL
(SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE deleted_at IS NOT NULL ORDER BY deleted_at LIMIT $2)
"""
