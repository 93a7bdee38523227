"""Receipts, group changes and reactions as change-feed events (issue 20; migration 0008).

Messages, deletions and edits are in the feed by their own tables. The other events history
emits live are rows of `feed_events`, each exactly as it was emitted: `messagesRead` (to the
sender of the messages read), `groupRead`, `groupUpdated`, `memberAdded`, `memberRemoved` (to
the group's members, and the removed member) and `reactionUpdated` (to the message's
conversation). So a socket that recovers its connection, or is caught up after a pub/sub
outage, is given them in feed order, exactly once, and `sync` answers them (`events`).

- A row is appended in the transaction of the change it tells, which claims its position
  before drawing it (`store.CLAIM_FEED_POSITIONS`, migration 0012): a reader stops at the
  settled head, so it never skips an event that commits after a later one (as for message ids).
- The live emit carries the row's position as its last argument (`FeedEvent.data`), as
  `messageDeleted` does: the socket's recovery offset.
- A user's feed reads their own rows (`audience_user`, `audience_partner`) and the rows of the
  groups they are a member of NOW: a non-member never reads a group's events; a removed member
  reads their own `memberRemoved` (it names them as `audience_user`), and nothing after it.

- Rows are kept FEED_EVENTS_RETENTION_SECONDS (30 days: far past a recovery's window, one day),
  then pruned oldest first (`prune`), and `feed_pruning.pruned_through` says up to where: a
  reader from before it is told (sync's `eventsPruned`; a recovering socket gets a normal
  connection instead of a replay with holes). Messages carry their reactions as they stand, and
  the conversation list the read marks and members, so a client that syncs from that far back
  reloads them.

Known limit: like group messages, a group's events from before a member joined are in their
feed when their cursor is older than the joining (replay may give them a few events they
never heard live; never another group's).
"""

import json
from typing import NamedTuple

import asyncpg

from ..shared.fast_json import dumps


class FeedEvent(NamedTuple):
    """An event appended to the feed: its position, name and payload."""

    seq: int
    event: str
    payload: dict

    def data(self) -> tuple[dict, str]:
        """The live emit's arguments: the payload, then its feed offset."""
        return self.payload, str(self.seq)


async def append_event(connection: asyncpg.Connection, event: str, payload: dict, *, user: str | None = None,
                       partner: str | None = None, group: int | None = None) -> FeedEvent:
    """Appends one event for `user` (and `partner`, the other 1:1 party) or the members of
    `group`. The caller's transaction claimed its position first (store.CLAIM_FEED_POSITIONS)."""
    if partner == user:
        partner = None
    seq = await connection.fetchval(_APPEND, user, partner, group, event, dumps(payload))
    return FeedEvent(seq, event, payload)


async def events_after_each(connection: asyncpg.Connection, users: list[str], afters: list[int],
                            limit: int) -> list[list[FeedEvent]]:
    """For each (user, position) of the two lists: the user's events after it, in order, at most
    `limit`; one statement for all (store.for_each_request)."""
    found: list[list[FeedEvent]] = [[] for _ in users]
    for row in await connection.fetch(for_each_request(_EVENTS_AFTER), users, afters, limit):
        found[row["req"] - 1].append(FeedEvent(row["seq"], row["event"], json.loads(row["payload"])))
    return found


def for_each_request(query: str) -> str:
    """`query`, a statement of one user ($1), a feed position ($2) and a limit ($3), made a
    statement of a list of users ($1) and a list of positions ($2): the query runs for each pair
    (a LATERAL join, so each keeps its own index walks), and each row says its pair's number in
    `req`, from 1. What many recovering sockets ask together costs one statement, not one each."""
    body = query.replace("$1", "each_request.me").replace("$2", "each_request.after")
    return ("SELECT each_request.req, request_rows.* FROM unnest($1::text[], $2::bigint[])"
            " WITH ORDINALITY AS each_request(me, after, req)"
            f" CROSS JOIN LATERAL ({body}) AS request_rows")


async def pruned_through(connection: asyncpg.Connection) -> int:
    """The newest position pruned: events at or below it may be gone."""
    return await connection.fetchval("SELECT pruned_through FROM feed_pruning")


async def prune(connection: asyncpg.Connection, older_than_seconds: float, batch: int) -> int:
    """Deletes at most `batch` of the oldest events, those older than `older_than_seconds`, and
    raises `pruned_through`; how many went. One pruner at a time (another returns 0 at once)."""
    async with connection.transaction():
        if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", PRUNE_LOCK_KEY):
            return 0
        return await connection.fetchval(_PRUNE, older_than_seconds, batch)


PRUNE_LOCK_KEY = 0x7061_726C_6579_0020  # "parley" + 20: any history process pruning the feed

_APPEND = """
INSERT INTO feed_events (audience_user, audience_partner, audience_group, event, payload)
VALUES ($1, $2, $3, $4, $5::json) RETURNING seq
"""

# One range scan of each audience index (mine, as a user, as a partner) and of each of my
# groups' (group_members_user_idx, then feed_events_group_idx): UNION drops a row read twice.
_EVENTS_AFTER = """
(SELECT seq, event, payload::text FROM feed_events WHERE audience_user = $1 AND seq > $2 ORDER BY seq LIMIT $3)
UNION
(SELECT seq, event, payload::text FROM feed_events WHERE audience_partner = $1 AND seq > $2 ORDER BY seq LIMIT $3)
UNION
(SELECT e.* FROM group_members gm CROSS JOIN LATERAL (
    SELECT seq, event, payload::text FROM feed_events WHERE audience_group = gm.group_id AND seq > $2
    ORDER BY seq LIMIT $3
 ) AS e WHERE gm.user_id = $1)
ORDER BY seq LIMIT $3
"""

# The oldest `batch` rows by position (the primary key's first pages), those of them old enough:
# positions are drawn in about the order of `created_at`, so no index on time is needed, and an
# idle pass reads one page. The watermark moves in the same statement.
_PRUNE = """
WITH gone AS (
    DELETE FROM feed_events WHERE seq IN (SELECT seq FROM feed_events ORDER BY seq LIMIT $2)
        AND created_at < now() - make_interval(secs => $1)
    RETURNING seq
), raised AS (
    UPDATE feed_pruning SET pruned_through = GREATEST(pruned_through, (SELECT max(seq) FROM gone))
    WHERE EXISTS (SELECT 1 FROM gone)
)
SELECT count(*) FROM gone
"""
