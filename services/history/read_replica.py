"""Reads from a streaming replica, never stale (issue 19): `DATABASE_READ_URL`.

The read routes (a conversation's pages, the conversation list, search, sync and the replay a
recovering socket gets) are served from a streaming replica once it has replayed every commit
made before the read began, so nobody reads stale: not the sender right after their send, nor
the receiver right after a message reached them live, nor a socket replaying its feed.

- "Before the read began" is the primary's WAL position then (`pg_current_wal_lsn()`): every
  commit that has returned to anyone lies at or below it. Reads that arrive together share one
  such query (a `Batcher`), so at any load the primary answers about one tiny query per batch,
  while the replica runs the reads' scans.
- The replica is asked whether it has replayed that far (`pg_last_wal_replay_lsn()`), on the
  connection the read then uses; a replica a little behind is asked again every
  REPLAY_POLL_SECONDS, and one still behind after `READ_REPLICA_MAX_WAIT_SECONDS` (or out of
  reach) leaves the read to the primary. Either way the answer is as fresh as the primary's.
- `parley_history_reads_total{source}` counts where reads went (`replica`, `primary`).

Writes, and reads that authorise a write (a group's members before a send), stay on the primary.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from prometheus_client import Counter

from ..shared.batching import Batcher
from ..shared.postgres import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

REPLAY_POLL_SECONDS = 0.002
ACQUIRE_TIMEOUT_SECONDS = 1.0
MAX_POSITION_READS_PER_CALL = 1000


class ReadReplica:
    def __init__(self, primary: asyncpg.Pool, replica: asyncpg.Pool, max_wait_seconds: float, reads: Counter):
        self._primary = primary
        self._replica = replica
        self._max_wait = max_wait_seconds
        self._reads = reads
        self._positions: Batcher[None, int] = Batcher(self._primary_positions, max_batch=MAX_POSITION_READS_PER_CALL)
        self._unreachable = False  # logged once per outage

    @contextlib.asynccontextmanager
    async def connection(self, primary_connection) -> AsyncIterator[asyncpg.Connection]:
        """A connection that sees every commit made before this call: the replica's when it has
        caught up in time, else one from `primary_connection()` (the caller's pooled context)."""
        connection = await self._caught_up_replica_connection()
        if connection is None:
            self._reads.labels("primary").inc()
            async with primary_connection() as connection:
                yield connection
            return
        self._reads.labels("replica").inc()
        try:
            yield connection
        finally:
            await self._replica.release(connection)

    async def _caught_up_replica_connection(self) -> asyncpg.Connection | None:
        try:
            target = await self._positions.submit(None)
            connection = await self._replica.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS)
        except UNAVAILABLE_ERRORS as exc:
            self._out_of_reach(exc)
            return None
        try:
            deadline = asyncio.get_running_loop().time() + self._max_wait
            while not await connection.fetchval("SELECT pg_last_wal_replay_lsn() >= $1", target):
                if asyncio.get_running_loop().time() >= deadline:
                    await self._replica.release(connection)
                    return None
                await asyncio.sleep(REPLAY_POLL_SECONDS)
        except UNAVAILABLE_ERRORS as exc:
            await self._replica.release(connection)
            self._out_of_reach(exc)
            return None
        if self._unreachable:
            self._unreachable = False
            log.info("read replica answers again")
        return connection

    async def _primary_positions(self, waiting: list[None]) -> list[int]:
        async with self._primary.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
            position = await connection.fetchval("SELECT pg_current_wal_lsn()")  # asyncpg: an int
        return [position] * len(waiting)

    def _out_of_reach(self, exc: BaseException) -> None:
        if not self._unreachable:
            self._unreachable = True
            log.warning("read replica out of reach (%r): reads go to the primary", exc)

    async def close(self) -> None:
        await self._positions.close()
