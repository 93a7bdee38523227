"""Applies `migrations/NNNN_*.sql` in order, once each, under an advisory lock.

Several replicas may start together: the lock makes one apply while the others wait, then
find nothing left to do. A released migration file is never edited; a change is a new file.

A file runs in one transaction, unless lines `-- commit` cut it into steps: each step is then
a transaction of its own, recorded as done when it commits (`<version> step <n>`), so a long
scan can run under a weak lock between short steps that take strong ones (0013). A step that
gave up waiting for a lock (its own `SET LOCAL lock_timeout`) is tried again from its start:
waiting long for an exclusive lock would stop every query queued behind it.
"""

import asyncio
import logging
import re
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

# Any constant unique to Parley: the advisory lock key that serialises migrations.
MIGRATION_LOCK_KEY = 0x7061726C6579  # "parley"

# Not the pool's command timeout (seconds): building an index on a large table, or waiting while
# another replica does, takes longer, and a migration cut off there would be retried forever.
# A day: 0013's long step copies a row per message sent with a clientId (hours at billions).
MIGRATION_TIMEOUT_SECONDS = 86400

STEP_SEPARATOR = re.compile(r"^-- commit$", re.MULTILINE)
# A step whose lock wait timed out is tried again this often, this long apart, before giving up.
LOCK_RETRIES = 60
LOCK_RETRY_SECONDS = 1.0


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("services.history") / "migrations"
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text()) for name in names]


async def apply_migrations(connection: asyncpg.Connection, through: str | None = None) -> list[str]:
    """The versions this call applied (empty when the schema was already current).

    `through` ("0004") stops after that number: a test fills a database of an older schema.
    """
    applied_now = []
    timeout = MIGRATION_TIMEOUT_SECONDS
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY, timeout=timeout)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
            timeout=timeout,
        )
        done = {row["version"] for row in await connection.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if through is not None and version.split("_")[0] > through:
                break
            if version in done:
                continue
            steps = STEP_SEPARATOR.split(sql)
            for number, step in enumerate(steps, start=1):
                step_version = version if number == len(steps) else f"{version} step {number}"
                if step_version not in done:
                    await _apply_step(connection, step, step_version)
            log.info("applied migration %s", version)
            applied_now.append(version)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


async def _apply_step(connection: asyncpg.Connection, sql: str, version: str) -> None:
    for attempt in range(LOCK_RETRIES):
        try:
            async with connection.transaction():
                await connection.execute(sql, timeout=MIGRATION_TIMEOUT_SECONDS)
                await connection.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            return
        except asyncpg.LockNotAvailableError:
            if attempt == LOCK_RETRIES - 1:
                raise
            log.warning("migration %s waited too long for a lock, trying again", version)
            await asyncio.sleep(LOCK_RETRY_SECONDS)
