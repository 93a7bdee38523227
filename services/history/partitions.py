"""Creates the partitions of `messages` before the ids reach them (migration 0013).

`messages` is partitioned by RANGE of id, and ids are drawn from `change_seq` (messages,
deletions, edits, feed events, groups). There is no DEFAULT partition: a message whose id has
no partition is refused (a 503; the gateway and the client retry it, nothing acknowledged is
lost), so history keeps at least a whole partition of ids ahead of the sequence: at start,
before it serves, and then every MESSAGE_PARTITION_CHECK_SECONDS, one replica at a time.
A partition holds MESSAGE_PARTITION_IDS ids; changing it changes the partitions created from
then on, each starting where the last one ends.
"""

import logging
import re
from typing import NamedTuple

import asyncpg

log = logging.getLogger(__name__)

PARTITION_LOCK_KEY = 0x7061_726C_6579_0019  # "parley" + 19: any history process adding partitions
# Not the pool's command timeout: ANALYZE samples every partition (seconds to minutes, no lock that stops writes).
ANALYZE_TIMEOUT_SECONDS = 1800

# Each partition's upper bound (`FOR VALUES FROM (..) TO ('200000000')`).
_UPPER_BOUNDS = """
SELECT pg_get_expr(c.relpartbound, c.oid) AS bound
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'messages'::regclass
"""
_HEAD = "SELECT last_value FROM change_seq"
_UPPER = re.compile(r"TO \('?(\d+)'?\)")


class Partitions(NamedTuple):
    """What a pass found and did: the partitions it created and how many ids are left before
    the last partition ends (the sequence's head to its upper bound)."""

    created: list[str]
    headroom: int


async def ensure_partitions(connection: asyncpg.Connection, through: int, width: int = 100_000_000) -> list[str]:
    """Creates partitions of `width` ids after the last one until every id up to `through` has
    one; the names of those created. The caller holds PARTITION_LOCK_KEY, or is alone.

    A new partition is an empty table attached to `messages`: attaching takes SHARE UPDATE
    EXCLUSIVE on `messages` (reads and writes go on), where CREATE TABLE ... PARTITION OF
    would take ACCESS EXCLUSIVE; it gets the parent's indexes, constraints and foreign keys.
    """
    upper = await last_upper_bound(connection)
    created = []
    while upper <= through:
        name = f"messages_p{upper}"
        async with connection.transaction():
            await connection.execute("SET LOCAL lock_timeout = '5s'")
            await connection.execute(
                f"CREATE TABLE {name} (LIKE messages INCLUDING DEFAULTS INCLUDING GENERATED"
                " INCLUDING CONSTRAINTS INCLUDING STORAGE)")
            await connection.execute(
                f"ALTER TABLE messages ATTACH PARTITION {name} FOR VALUES FROM ({upper}) TO ({upper + width})")
        log.info("created partition %s of messages for ids %d to %d", name, upper, upper + width - 1)
        created.append(name)
        upper += width
    return created


async def last_upper_bound(connection: asyncpg.Connection) -> int:
    """The first id no partition takes."""
    bounds = [int(match[1]) for row in await connection.fetch(_UPPER_BOUNDS) if (match := _UPPER.search(row["bound"]))]
    return max(bounds)


async def keep_partitions_ahead(pool: asyncpg.Pool, width: int) -> Partitions | None:
    """One pass: partitions for the next `width` ids past the sequence's head at least. None
    when another history process is doing it (an advisory lock held for the pass)."""
    async with pool.acquire(timeout=5) as connection:
        if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", PARTITION_LOCK_KEY):
            return None
        try:
            head = await connection.fetchval(_HEAD)
            if await last_upper_bound(connection) <= head + width:
                # Autovacuum analyzes partitions, never the partitioned table, whose statistics
                # plan every join to messages by id: refreshed as partitions are added (a sample).
                # Before adding them: an empty partition analyzed is planned as a free sequential
                # scan, and a conversation page then sorts the whole conversation (0013).
                await connection.execute("ANALYZE messages", timeout=ANALYZE_TIMEOUT_SECONDS)
            created = await ensure_partitions(connection, head + width, width)
            return Partitions(created, await last_upper_bound(connection) - await connection.fetchval(_HEAD))
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", PARTITION_LOCK_KEY)
