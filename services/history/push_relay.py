"""The notification relay (issue 18): from the committed message log to the Redis job stream.

Why history, and why a relay rather than an append next to each send: a job must exist for
every stored message, whatever crashes. An append by the gateway after the store's answer, or
by history after its commit, is lost when that process dies between the two, and while Redis
is down (sends are still stored and acknowledged then). So the relay derives jobs from what
Postgres committed, and keeps its progress in Postgres:

- It reads the messages after `push_relay.relayed_through` (its stream's row) in id order, up to
  the change feed's settled head (store.settled_head: no smaller id can still commit), works out who
  gets a notification (recipients with a push subscription, not muting the conversation, with
  no visible socket now), appends one job per recipient with the stream id
  `<message id>-<n>`, and moves the cursor in the same transaction. A crash before the commit
  makes the next pass append the same ids again, which Redis refuses (an id not above the
  stream's last): no duplicate.
- It also records `done_below`: every job of a message below it was acknowledged by a notifier
  (from the consumer group's pending list and last-delivered id). When Redis comes back
  without its data (its `epoch` key is gone), the jobs and the pending list went with it: the
  relay appends again from `done_below`. Pushes sent after the last record are sent again (at
  least once, never lost).
- One replica relays a stream at a time: the cursor row is taken FOR UPDATE SKIP LOCKED; the others
  skip the pass. A store call wakes the replica that made it; every replica also looks every
  PUSH_RELAY_POLL_SECONDS. Redis or Postgres down: the pass fails, and the next retries.

Cost: one indexed range read of the new messages and one join for their recipients per pass
(a pass takes up to PUSH_RELAY_BATCH messages), one Redis pipeline for visibility and one for
the appends. A message to people who are looking, or who never subscribed, appends nothing.
"""

import asyncio
import logging
import time
import uuid

import asyncpg
from redis.exceptions import RedisError, ResponseError

from ..shared.errors import StoreUnavailable
from ..shared.keys import PUSH_CONSUMER_GROUP, push_epoch_key, push_stream_key, visible_sockets_key
from ..shared.redis_client import connect, key_prefix
from ..shared.push import ensure_group
from ..shared.postgres import UNAVAILABLE_ERRORS, pooled_connection
from ..shared.tasks import cancel_and_wait
from .store import settled_head

log = logging.getLogger(__name__)

RETRY_SECONDS = (0.2, 0.5, 1, 2, 5)
# While sends keep coming, passes start at least this far apart, so each takes more messages
# (a pass commits once: a WAL flush with synchronous_commit on) for at most this much delay.
MIN_PASS_INTERVAL_SECONDS = 0.05

_ADD_CURSOR = """
INSERT INTO push_relay (stream, relayed_through, done_below)
SELECT $1::text, coalesce(max(id), 0), coalesce(max(id), 0) + 1 FROM messages
ON CONFLICT (stream) DO NOTHING
"""
_TAKE_CURSOR = "SELECT relayed_through, done_below, epoch FROM push_relay WHERE stream = $1 FOR UPDATE SKIP LOCKED"
_NEXT_MESSAGES = """
SELECT count(*) AS n, max(id) AS last FROM (
    SELECT id FROM messages WHERE id > $1 AND id <= $3 ORDER BY id LIMIT $2
) AS next_messages
"""
# Who of each message's recipients may get a notification: subscribed, not muting it. The text
# is left out for a recipient who hides it, so it never reaches Redis.
_JOBS = """
WITH batch AS MATERIALIZED (
    SELECT id, sender_id, receiver_id, group_id, left(text, 200) AS text, created_at
    FROM messages WHERE id > $1 AND id <= $2 AND deleted_at IS NULL
), recipients AS (
    SELECT b.id, b.receiver_id AS user_id, 'user:' || b.sender_id AS conversation, b.sender_id, b.group_id,
           b.text, b.created_at
    FROM batch b WHERE b.receiver_id IS NOT NULL AND b.receiver_id <> b.sender_id
    UNION ALL
    SELECT b.id, m.user_id, 'group:' || b.group_id, b.sender_id, b.group_id, b.text, b.created_at
    FROM batch b JOIN group_members m ON m.group_id = b.group_id
    WHERE b.group_id IS NOT NULL AND m.user_id <> b.sender_id
)
SELECT r.id, r.user_id, r.conversation, r.sender_id, s.name AS sender_name, s.user_name AS sender_user_name,
       s.profile_image AS sender_image, g.name AS group_name,
       CASE WHEN coalesce(ns.hide_text, false) THEN NULL ELSE r.text END AS text,
       (extract(epoch FROM r.created_at) * 1000)::bigint AS created_ms
FROM recipients r
JOIN users s ON s.id = r.sender_id
LEFT JOIN groups g ON g.id = r.group_id
LEFT JOIN notification_settings ns ON ns.user_id = r.user_id
WHERE EXISTS (SELECT 1 FROM push_subscriptions p WHERE p.user_id = r.user_id)
  AND NOT EXISTS (SELECT 1 FROM conversation_mutes mu
                  WHERE mu.user_id = r.user_id AND mu.conversation = r.conversation
                    AND (mu.until IS NULL OR mu.until > now()))
ORDER BY r.id, r.user_id
"""
_SAVE = "UPDATE push_relay SET relayed_through = $2, done_below = $3, epoch = $4 WHERE stream = $1"


def job_fields(row) -> dict[str, str]:
    """A job as the stream holds it (all strings; `t` absent when the recipient hides text)."""
    fields = {
        "m": str(row["id"]), "u": row["user_id"], "c": row["conversation"], "s": row["sender_id"],
        "n": row["sender_name"] or row["sender_user_name"], "i": row["sender_image"] or "",
        "at": str(row["created_ms"]),
    }
    if row["group_name"] is not None:
        fields["g"] = row["group_name"]
    if row["text"] is not None:
        fields["t"] = row["text"]
    return fields


class PushRelay:
    def __init__(self, pool: asyncpg.Pool, redis_url: str, prefix: str, *, max_jobs: int, batch: int,
                 poll_seconds: float):
        self._pool = pool
        self._redis = connect(redis_url, socket_timeout=5, socket_connect_timeout=2)
        self._prefix = prefix  # the cursor's row in Postgres
        self._keys = key_prefix(redis_url, prefix)
        self._stream = push_stream_key(self._keys)
        self._max_jobs = max_jobs
        self._batch = batch
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.jobs_appended = 0  # read by history's metrics

    async def add_cursor(self, connection: asyncpg.Connection) -> None:
        """The stream's row, from the newest message now, if it has none: called after the
        migrations and before history stores anything, so no message falls before it."""
        await connection.execute(_ADD_CURSOR, self._prefix)

    def wake(self) -> None:
        """New messages were committed: relay them now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        await cancel_and_wait([self._task])
        await asyncio.wait_for(self._redis.aclose(), timeout=2)

    async def _run(self) -> None:
        failures, last_failure = 0, None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                while await self.relay_once() >= self._batch:
                    pass  # a backlog: the next pass at once
                await asyncio.sleep(MIN_PASS_INTERVAL_SECONDS)
                failures, last_failure = 0, None
            except (RedisError, StoreUnavailable, asyncpg.PostgresError, *UNAVAILABLE_ERRORS) as exc:
                # Once per kind of failure in a row; migrations not applied yet is not one (history
                # starts before they are).
                if type(exc) is not last_failure and not isinstance(exc, asyncpg.UndefinedTableError):
                    log.warning("notification relay paused: %r", exc)
                last_failure = type(exc)
                await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1
            except Exception:
                # A bug, but the relay must not die of it silently (its task's error would be seen
                # by nobody, and no job appended again): said loudly, and the next pass tries again.
                log.exception("notification relay pass failed")
                await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1

    async def relay_once(self) -> int:
        """One pass: the jobs of up to PUSH_RELAY_BATCH new messages. Answers how many messages
        it took (0 also when another replica holds the cursor)."""
        async with pooled_connection(self._pool, "message store") as connection, connection.transaction():
            cursor = await connection.fetchrow(_TAKE_CURSOR, self._prefix)
            if cursor is None:
                return 0  # another replica relays now
            relayed, done_below, epoch = cursor["relayed_through"], cursor["done_below"], cursor["epoch"]
            stored_epoch = await self._redis.get(push_epoch_key(self._keys))
            if stored_epoch is None or stored_epoch.decode() != epoch:
                if epoch:
                    log.warning("the job stream is gone (Redis lost its data): appending again from message %d",
                                done_below)
                    relayed = min(relayed, done_below - 1)
                epoch = uuid.uuid4().hex
                await ensure_group(self._redis, self._stream)
                await self._redis.set(push_epoch_key(self._keys), epoch)
            else:
                done_below = await self._done_below(relayed)
            taken = await connection.fetchrow(_NEXT_MESSAGES, relayed, self._batch, await settled_head(connection))
            last = taken["last"] if taken["n"] else relayed
            if taken["n"]:
                rows = await connection.fetch(_JOBS, relayed, last)
                looking = await self._looking(rows)
                await self._append([row for row in rows if row["user_id"] not in looking])
            if (last, done_below, epoch) != (cursor["relayed_through"], cursor["done_below"], cursor["epoch"]):
                await connection.execute(_SAVE, self._prefix, last, done_below, epoch)
            return taken["n"]

    async def _looking(self, rows) -> set[str]:
        """Of these recipients, those with a socket whose page is visible now."""
        users = list(dict.fromkeys(row["user_id"] for row in rows))
        if not users:
            return set()
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.zcount(visible_sockets_key(self._keys, user), now, "+inf")
            counts = await pipe.execute()
        return {user for user, count in zip(users, counts) if count}

    async def _append(self, rows) -> None:
        if not rows:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            numbers: dict[int, int] = {}
            for row in rows:
                number = numbers[row["id"]] = numbers.get(row["id"], -1) + 1
                pipe.xadd(self._stream, job_fields(row), id=f"{row['id']}-{number}",
                          maxlen=self._max_jobs, approximate=True)
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, ResponseError) and "equal or smaller" in str(result):
                continue  # appended by an earlier pass that crashed before moving the cursor
            if isinstance(result, Exception):
                raise result
            self.jobs_appended += 1

    async def _done_below(self, relayed: int) -> int:
        """The smallest message id with a job no notifier has acknowledged (relayed + 1 when none)."""
        candidates = []
        groups = await self._redis.xinfo_groups(self._stream)
        group = next((g for g in groups if _text(g["name"]) == PUSH_CONSUMER_GROUP), None)
        if group is None:
            return relayed + 1
        if group["pending"]:
            summary = await self._redis.xpending(self._stream, PUSH_CONSUMER_GROUP)
            if summary["min"] is not None:  # None: acknowledged between the two reads
                candidates.append(_text(summary["min"]))
        undelivered = await self._redis.xrange(self._stream, "(" + _text(group["last-delivered-id"]), "+", count=1)
        if undelivered:
            candidates.append(_text(undelivered[0][0]))
        if not candidates:
            return relayed + 1
        return min(int(entry_id.split("-")[0]) for entry_id in candidates)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
