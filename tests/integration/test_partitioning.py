"""Migration 0013 partitions messages on a live database without losing or changing anything,
and messages keep being stored across partition boundaries.

The database is migrated through the previous schema and filled: messages stored by the
previous release's insert statements (frozen below: the store has moved on), marks, edits,
deletions, reactions, attachments and a group through the current store (those statements did
not change). Then 0013 is applied while a writer keeps storing messages as the previous
release does, and, once its statement stops working (the swap), as the current store does:
as during a rollout. While the migration's long step scans, the writer must keep committing.
"""

import asyncio
import dataclasses
import random

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.history.app import create_app
from services.history.app_keys import STORE
from services.history.group_store import GroupStore
from services.history.migrations import apply_migrations
from services.history.partitions import ensure_partitions, last_upper_bound
from services.history.store import MessageStore
from services.shared.errors import StoreUnavailable
from services.shared.models import StoreMessage
from services.shared.web import INTERNAL_APP
from tests.integration.conftest import history_settings, wait_schema_ready
from tests.integration.history_client import GATEWAY, Api, RecordingNotifier
from tests.support import eventually

PREVIOUS_SCHEMA = "0012"
USERS = [f"part-user-{n}" for n in range(5)]
WRITERS = ["part-writer-a", "part-writer-b"]
MESSAGES = 300
BULK = 200_000  # other users' messages, so that the migration's copy and scans take a while
SEED = 19

_FEED_LOCK = 0x70726C79_66656564

# --- the previous release's inserts, frozen (services/history/store.py at 9f02a0c) ------------

PREVIOUS_INSERT_MESSAGES = f"""
WITH feed_lock AS MATERIALIZED (
    SELECT pg_advisory_xact_lock({_FEED_LOCK})
), input AS MATERIALIZED (
    SELECT nextval('change_seq') AS id, i.n, i.sender_id, i.receiver_id, i.text, i.client_id, i.reply_to
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
         WITH ORDINALITY AS i(sender_id, receiver_id, text, client_id, reply_to, n)
    WHERE (SELECT true FROM feed_lock)
    ORDER BY i.n
), m AS (
    INSERT INTO messages (id, sender_id, receiver_id, text, client_id, reply_to_id)
    SELECT id, sender_id, receiver_id, text, client_id, reply_to FROM input ORDER BY sender_id, client_id, id
    ON CONFLICT ON CONSTRAINT messages_client_id_key DO NOTHING
    RETURNING id, sender_id, receiver_id, client_id
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
SELECT id, client_id FROM m
"""

PREVIOUS_INSERT_GROUP_MESSAGES = f"""
WITH feed_lock AS MATERIALIZED (
    SELECT pg_advisory_xact_lock({_FEED_LOCK})
), input AS MATERIALIZED (
    SELECT nextval('change_seq') AS id, i.n, i.sender_id, $1::bigint AS group_id, i.text, i.client_id
    FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS i(sender_id, text, client_id, n)
    WHERE (SELECT true FROM feed_lock)
    ORDER BY i.n
), counted AS (
    UPDATE groups g SET last_seq = g.last_seq + c.k, last_message_id = GREATEST(g.last_message_id, c.newest),
                        activity_id = GREATEST(g.activity_id, c.newest)
    FROM (SELECT group_id, count(*) AS k, max(id) AS newest FROM input GROUP BY group_id) AS c
    WHERE g.id = c.group_id
    RETURNING g.id, g.last_seq - c.k AS base
)
INSERT INTO messages (id, sender_id, group_id, group_seq, text, client_id)
SELECT i.id, i.sender_id, i.group_id, counted.base + row_number() OVER (ORDER BY i.id), i.text, i.client_id
FROM input i JOIN counted ON counted.id = i.group_id
ON CONFLICT ON CONSTRAINT messages_client_id_key DO NOTHING
RETURNING id
"""


async def previous_send(connection: asyncpg.Connection, batch: list[tuple]) -> dict[str, int]:
    """(sender, receiver, text, clientId, replyTo) each: the ids stored now, by clientId."""
    rows = await connection.fetch(PREVIOUS_INSERT_MESSAGES, *map(list, zip(*batch)))
    return {row["client_id"]: row["id"] for row in rows}


async def fill(connection: asyncpg.Connection, store: MessageStore, groups: GroupStore) -> dict:
    """A history to migrate: what the test resends, replies to, edits and deletes afterwards."""
    rng = random.Random(SEED)
    for user_id in USERS + WRITERS:
        await connection.execute("INSERT INTO users (id, user_name, name) VALUES ($1, $1, $1)", user_id)
    stored: dict[str, int] = {}
    while len(stored) < MESSAGES:
        batch = []
        for _ in range(rng.randint(1, 8)):
            sender, receiver = rng.choice(USERS), rng.choice(USERS)
            reply_to = None
            if stored and rng.random() < 0.1:
                # Replies only within a pair: pick one of this pair's messages if it has one.
                pair = [i for c, i in stored.items() if c.startswith(f"{sender}>{receiver}|")]
                reply_to = pair[-1] if pair else None
            batch.append((sender, receiver, f"word{rng.randint(0, 20)} note {len(stored)}",
                          f"{sender}>{receiver}|{len(stored)}-{len(batch)}", reply_to))
        stored |= await previous_send(connection, batch)
        if rng.random() < 0.3:
            await store.mark_read(rng.choice(USERS), rng.choice(USERS))
    # Deleted and checked by no trigger (their users exist), so that no index but the btrees
    # takes them and the fill stays quick; the migration copies and scans them all the same.
    await connection.execute("SET session_replication_role = replica")
    await connection.execute(
        "INSERT INTO messages (sender_id, receiver_id, text, client_id, deleted_at)"
        " SELECT $1, $2, '', 'bulk-' || n, now() FROM generate_series(1, $3::int) AS n", *WRITERS, BULK)
    await connection.execute("RESET session_replication_role")
    group, _ = await groups.create_group(USERS[0], "before", "", USERS[1:3])
    group_id = int(group["_id"])
    for n in range(12):
        await connection.fetch(PREVIOUS_INSERT_GROUP_MESSAGES, group_id, [USERS[n % 3]], [f"group word{n}"], [f"g-{n}"])
    ids = sorted(stored.values())
    for message_id in rng.sample(ids, 20):
        row = await connection.fetchrow("SELECT sender_id, deleted_at FROM messages WHERE id = $1", message_id)
        await store.delete_message(row["sender_id"], message_id)
    standing = [i for i in ids if await connection.fetchval("SELECT deleted_at IS NULL FROM messages WHERE id = $1", i)]
    for message_id in rng.sample(standing, 10):
        sender = await connection.fetchval("SELECT sender_id FROM messages WHERE id = $1", message_id)
        await store.edit_message(sender, message_id, f"edited {message_id}", 900)
    for message_id in rng.sample(standing, 10):
        sender = await connection.fetchval("SELECT sender_id FROM messages WHERE id = $1", message_id)
        await store.set_reactions([(sender, message_id, "👍", True)])
    # An upload sent with a message (the media service writes the row; sending links it).
    with_attachment = standing[-1]
    uploader = await connection.fetchval("SELECT sender_id FROM messages WHERE id = $1", with_attachment)
    await connection.execute(
        "INSERT INTO attachments (id, uploader_id, name, size, content_type, storage_key, message_id, position)"
        " VALUES ($1, $2, 'a.txt', 3, 'text/plain', 'k', $3, 0)", "a" * 32, uploader, with_attachment)
    await connection.execute("INSERT INTO attachments (id, uploader_id, name, size, content_type, storage_key)"
                             " VALUES ($1, $2, 'b.txt', 3, 'text/plain', 'k2')", "b" * 32, USERS[0])
    return {"stored": stored, "group_id": group_id, "standing": standing, "with_attachment": with_attachment}


async def read_everything(store: MessageStore, groups: GroupStore, group_id: int) -> dict:
    """Every read route, for every filled user: what must not change."""
    reads = {}
    for me in USERS:
        reads[me, "conversations"] = await store.list_conversations(me, None, 100)
        reads[me, "sync"] = await store.sync(me, 0, 1000)
        reads[me, "search"] = await store.search(me, "word3", None, 100)
        for partner in USERS:
            reads[me, partner] = await store.fetch_page(me, partner, None, 500)
    for member in USERS[:3]:
        reads[member, "group"] = await groups.fetch_page(member, group_id, None, 100)
    return reads


class Writer:
    """Sends as the previous release does until its statement fails (the swap), then as the
    current store does; each batch also resends the previous batch's first clientId."""

    def __init__(self, url: str, store: MessageStore):
        self.url, self.store = url, store
        self.acknowledged: dict[str, int] = {}
        self.previous_batches = self.current_batches = 0
        # Batches begun and committed while the migration's long step ran, and what they stored.
        self.inside_long_step = 0
        self.written_inside_long_step: dict[str, int] = {}
        self.stop = asyncio.Event()

    async def run(self) -> None:
        connection = await asyncpg.connect(self.url)
        try:
            retry = None
            n = 0
            while not self.stop.is_set():
                batch = [(WRITERS[k % 2], WRITERS[(k + 1) % 2], f"live {n}-{k}", f"w-{n}-{k}", None) for k in range(3)]
                if retry is not None:
                    batch.append(retry)
                if self.current_batches == 0:
                    try:
                        steps_before = await connection.fetchval(_STEPS_DONE)
                        stored = await previous_send(connection, batch)
                        self.acknowledged |= stored
                        self.previous_batches += 1
                        if steps_before == _INSIDE_LONG_STEP == await connection.fetchval(_STEPS_DONE):
                            self.inside_long_step += 1
                            self.written_inside_long_step |= stored
                    except asyncpg.UndefinedObjectError:  # messages_client_id_key moved: the swap is done
                        self.current_batches = -1
                        continue
                else:
                    results = await self.store.create_messages([StoreMessage.model_validate(
                        {"senderId": s, "receiverId": r, "text": t, "clientId": c}) for s, r, t, c, _ in batch])
                    for (_, _, _, client_id, _), result in zip(batch, results):
                        if result.created:
                            self.acknowledged[client_id] = int(result.message["_id"])
                        else:  # the retry: answered with the message stored first
                            assert int(result.message["_id"]) == self.acknowledged[client_id]
                    self.current_batches = max(self.current_batches, 0) + 1
                retry = batch[0]
                n += 1
                await asyncio.sleep(0)  # a yield (no wait): the migration runs meanwhile
        finally:
            await connection.close()


# Steps of 0013 committed: {step 1} while the long step 2 runs.
_STEPS_DONE = "SELECT array_agg(version ORDER BY version) FROM schema_migrations WHERE version LIKE '0013%'"
_INSIDE_LONG_STEP = ["0013_partition_messages step 1"]


async def test_partitioning_a_live_database_keeps_every_message_and_read(own_database):
    url = own_database.url
    connection = await asyncpg.connect(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        applied = await apply_migrations(connection, through=PREVIOUS_SCHEMA)
        assert not any(version.startswith("0013") for version in applied)
        store = MessageStore(pool)
        store.schema_ready = True  # the read, mark, edit, delete and react statements predate 0013
        groups = GroupStore(store, 10)
        filled = await fill(connection, store, groups)
        before = await read_everything(store, groups, filled["group_id"])
        files = await connection.fetch(
            "SELECT relname, relfilenode FROM pg_class WHERE relname LIKE 'messages%' AND relkind IN ('r', 'i')")

        writer = Writer(url, store)
        writing = asyncio.create_task(writer.run())
        await eventually(lambda: _more_than(writer, 3), timeout=10)
        migration_connection = await asyncpg.connect(url)
        assert await apply_migrations(migration_connection) == ["0013_partition_messages"]
        await migration_connection.close()
        await eventually(lambda: _current_more_than(writer, 3), timeout=20)
        writer.stop.set()
        await writing

        # The long step (a copy and two scans of BULK + MESSAGES rows) let the writer commit
        # batch after batch, each begun and ended inside it.
        assert writer.inside_long_step >= 3
        written_during = writer.written_inside_long_step

        # Nothing rewritten: the old table and its indexes are the first partition's, as they were.
        renamed = dict(await connection.fetch(
            "SELECT relfilenode, relname FROM pg_class WHERE relfilenode = ANY($1::oid[])",
            [row["relfilenode"] for row in files]))
        assert {renamed[row["relfilenode"]] for row in files if row["relname"] != "messages_client_id_key"} == (
            {row["relname"].replace("messages", "messages_p0", 1) for row in files} - {"messages_p0_client_id_key"})
        assert await connection.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'messages'") == "p"
        # The partitioned table analyzed (autovacuum never does), the empty partitions after it not
        # (analyzed empty, a partition is planned as a free scan and pages sort whole conversations).
        assert await connection.fetchval("SELECT count(*) FROM pg_stats WHERE tablename = 'messages' AND inherited") > 0
        assert {row["reltuples"] for row in await connection.fetch(
            "SELECT c.reltuples FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'messages'::regclass AND c.relname <> 'messages_p0'")} == {-1}

        # Every message acknowledged is there once; every clientId names its message.
        assert writer.previous_batches > 8 and writer.current_batches > 3
        acknowledged = writer.acknowledged | filled["stored"]
        rows = await connection.fetch("SELECT client_id, id FROM messages WHERE client_id = ANY($1::text[])",
                                      list(acknowledged))
        assert dict((row["client_id"], row["id"]) for row in rows) == acknowledged and len(rows) == len(acknowledged)
        assert await connection.fetchval(
            "SELECT count(*) FROM messages m FULL JOIN message_client_ids k ON k.message_id = m.id"
            " WHERE m.client_id IS NOT NULL AND (k.message_id IS NULL OR k.sender_id <> m.sender_id"
            "  OR k.client_id <> m.client_id)") == 0
        invalid = await connection.fetch("SELECT conrelid::regclass::text, conname FROM pg_constraint"
                                         " WHERE NOT convalidated AND conname LIKE '%message_id_fkey'")
        assert invalid == []

        assert await read_everything(store, groups, filled["group_id"]) == before
        await _use_old_messages_after_the_migration(connection, store, filled, written_during)
        await _store_across_a_partition_boundary(connection, store, groups, filled["group_id"])
    finally:
        await pool.close()
        await connection.close()


async def _more_than(writer: Writer, batches: int) -> None:
    assert writer.previous_batches > batches


async def _current_more_than(writer: Writer, batches: int) -> None:
    assert writer.current_batches > batches


def send(sender: str, receiver: str, text: str, client_id: str | None = None, **more) -> StoreMessage:
    return StoreMessage.model_validate({"senderId": sender, "receiverId": receiver, "text": text,
                                        "clientId": client_id, **more})


async def _use_old_messages_after_the_migration(connection, store: MessageStore, filled: dict,
                                                written_during: dict[str, int]) -> None:
    ada, bob = USERS[0], USERS[1]
    # Resends of a message stored before the migration, and of one the previous release stored
    # while it ran (its clientId recorded by the migration's trigger), store nothing.
    client_id, old_id = next((c, i) for c, i in filled["stored"].items()
                             if i in filled["standing"] and c.startswith(f"{ada}>{bob}|"))
    during_client_id, during_id = next(iter(written_during.items()))
    sender, receiver = await connection.fetchrow("SELECT sender_id, receiver_id FROM messages WHERE id = $1", during_id)
    [again, again_during] = await store.create_messages(
        [send(ada, bob, "resent", client_id), send(sender, receiver, "resent", during_client_id)])
    assert (again.created, int(again.message["_id"])) == (False, old_id)
    assert (again_during.created, int(again_during.message["_id"])) == (False, during_id)

    # Replies to it, edits, reacts to and deletes it; the page and the feed tell each.
    [reply] = await store.create_messages([send(bob, ada, "a reply", "reply-1", replyTo=str(old_id))])
    assert reply.created and reply.message["replyTo"]["_id"] == str(old_id)
    edited, _ = await store.edit_message(ada, old_id, "edited after", 900)
    assert edited["text"] == "edited after"
    [reaction] = await store.set_reactions([(bob, old_id, "🎉", True)])
    assert reaction.update is not None
    page, _ = await store.fetch_page(bob, ada, None, 500)
    assert [m["text"] for m in page if m["_id"] == str(old_id)] == ["edited after"]
    assert page[-1]["replyTo"]["text"] == "edited after"
    cursor = int(reply.message["_id"]) - 1
    await store.delete_message(ada, old_id)
    synced = await store.sync(bob, cursor, 100)
    assert [m["_id"] for m in synced["messages"]] == [reply.message["_id"]]
    assert [d["_id"] for d in synced["deleted"]] == [str(old_id)]
    assert [m["_id"] for m in synced["edited"]] == []  # edited, then deleted: its deletion tells
    assert [e["event"] for e in synced["events"]] == ["reactionUpdated"]

    # The old message's upload reads with it; a new upload is sent with a new message.
    uploader = await connection.fetchval("SELECT sender_id FROM messages WHERE id = $1", filled["with_attachment"])
    [carrier] = await store.create_messages([StoreMessage.model_validate(
        {"senderId": ada, "receiverId": bob, "text": "file", "clientId": "file-1", "attachmentIds": ["b" * 32]})])
    assert [a["name"] for a in carrier.message["attachments"]] == ["b.txt"]
    found = await connection.fetchrow("SELECT sender_id, receiver_id FROM messages WHERE id = $1",
                                      filled["with_attachment"])
    other = found["receiver_id"] if found["sender_id"] == uploader else found["sender_id"]
    page, _ = await store.fetch_page(uploader, other, None, 500)
    [with_file] = [m for m in page if m["_id"] == str(filled["with_attachment"])]
    assert [a["name"] for a in with_file["attachments"]] == ["a.txt"]


async def _store_across_a_partition_boundary(connection, store: MessageStore, groups: GroupStore,
                                             group_id: int) -> None:
    """A batch whose ids run from one partition into the next is stored whole and reads in order."""
    ada, bob, cyd = USERS[:3]
    boundary = await connection.fetchval(
        "SELECT (regexp_match(pg_get_expr(relpartbound, oid), 'TO \\(''(\\d+)''\\)'))[1]::bigint"
        " FROM pg_class WHERE relname = 'messages_p0'")
    await connection.execute("SELECT setval('change_seq', $1)", boundary - 3)
    batch = [send(ada, bob, f"across {n}", f"across-{n}") for n in range(4)]
    batch += [StoreMessage.model_validate({"senderId": cyd, "groupId": str(group_id), "text": f"group across {n}",
                                           "clientId": f"g-across-{n}"}) for n in range(2)]
    results = await store.create_messages(batch)
    assert all(result.created for result in results)
    ids = [int(result.message["_id"]) for result in results]
    partitions = dict(await connection.fetch(
        "SELECT id, tableoid::regclass::text FROM messages WHERE id = ANY($1::bigint[])", ids))
    assert {partitions[i] for i in ids if i < boundary} == {"messages_p0"}
    assert {partitions[i] for i in ids if i >= boundary} == {f"messages_p{boundary}"}
    assert min(ids) < boundary <= max(ids)
    page, _ = await store.fetch_page(bob, ada, None, 4)
    assert [m["text"] for m in page] == [f"across {n}" for n in range(4)]
    group_page, _ = await groups.fetch_page(ada, group_id, None, 2)
    assert [m["text"] for m in group_page] == ["group across 0", "group across 1"]
    synced = await store.sync(bob, boundary - 10, 100)  # bob is a member of the group
    assert [m["text"] for m in synced["messages"]] == [f"across {n}" for n in range(4)] + [
        "group across 0", "group across 1"]
    # Resent across the boundary: nothing stored twice.
    again = await store.create_messages([send(ada, bob, "again", "across-3"), send(ada, bob, "again", "across-0")])
    assert [(r.created, int(r.message["_id"])) for r in again] == [(False, ids[3]), (False, ids[0])]


async def test_an_id_past_the_last_partition_is_refused_until_history_creates_it(own_database):
    url = own_database.url
    connection = await asyncpg.connect(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        await apply_migrations(connection)
        await connection.execute("INSERT INTO users (id, user_name) VALUES ('p-ada', 'p-ada'), ('p-bob', 'p-bob')")
        store = MessageStore(pool)
        store.schema_ready = True
        end = await last_upper_bound(connection)
        await connection.execute("SELECT setval('change_seq', $1)", end - 2)

        with pytest.raises(StoreUnavailable):
            await store.create_messages([send("p-ada", "p-bob", f"m{n}", f"past-{n}") for n in range(3)])
        assert await connection.fetchval("SELECT count(*) FROM messages") == 0  # the whole batch refused
        assert await connection.fetchval("SELECT count(*) FROM message_client_ids") == 0

        # The refused batch drew ids up to end + 1: partitions follow up to a partition's worth past it.
        done = await store.keep_partitions_ahead(1000)
        assert done.created == [f"messages_p{end}", f"messages_p{end + 1000}"] and done.headroom == 1999
        results = await store.create_messages([send("p-ada", "p-bob", f"m{n}", f"past-{n}") for n in range(3)])
        assert all(result.created for result in results)
        # The new partition has the parent's keys and indexes: a clientId is still unique, a
        # foreign key still holds, search still finds.
        assert not (await store.create_messages([send("p-ada", "p-bob", "again", "past-2")]))[0].created
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await connection.execute(f"INSERT INTO messages_p{end} (id, sender_id, receiver_id, text)"
                                     f" VALUES ({end + 500}, 'nobody', 'p-bob', 'x')")
        found, _ = await store.search("p-bob", "m1", None, 10)
        assert [m["text"] for m in found] == ["m1"]

        # One pass at a time: another process holding the lock makes this pass skip.
        other = await asyncpg.connect(url)
        try:
            await other.execute("SELECT pg_advisory_lock($1)", 0x7061_726C_6579_0019)
            assert await store.keep_partitions_ahead(1000) is None
        finally:
            await other.close()
        # Nothing to do when a partition's worth of ids is ahead; the next when it is not.
        assert (await store.keep_partitions_ahead(1000)).created == []
        await connection.execute("SELECT setval('change_seq', $1)", end + 1500)
        assert (await store.keep_partitions_ahead(1000)).created == [f"messages_p{end + 2000}"]
        assert await ensure_partitions(connection, end + 2999, 1000) == []
    finally:
        await pool.close()
        await connection.close()


def _metric(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


async def test_history_keeps_a_partition_of_ids_ahead_and_sends_wait_for_it(stores, own_database, monkeypatch):
    own = dataclasses.replace(stores, database_url=own_database.url)
    connection = await asyncpg.connect(own_database.url)
    recorder = RecordingNotifier(monkeypatch)
    try:
        # The keeper looks every 50 ms here (a minute by default), for 1,000-id partitions.
        app = create_app(history_settings(own, message_partition_ids=1000, message_partition_check_seconds=0.05))
        async with TestClient(TestServer(app)) as public, TestClient(TestServer(app[INTERNAL_APP])) as internal:
            await wait_schema_ready(app)
            api = Api(public, internal, recorder)
            ada, bob = await api.user(), await api.user()
            end = await last_upper_bound(connection)
            await connection.execute("SELECT setval('change_seq', $1)", end - 500)

            async def partition_ahead() -> None:
                metrics = await (await internal.get("/metrics")).text()
                assert _metric(metrics, "parley_history_message_partition_headroom_ids") >= 1000
                assert _metric(metrics, "parley_history_message_partitions_created_total") >= 1
            await eventually(partition_ahead, timeout=10)
            assert await last_upper_bound(connection) == end + 1000

            results = await api.store(*[{"senderId": ada.id, "receiverId": bob.id, "text": f"m{n}"} for n in range(3)])
            assert all(result["created"] for result in results)

        # A keeper that has not looked yet (an hour here): the send past the last partition is a
        # 503, and the same send (its clientId) is stored once the partition exists.
        app = create_app(history_settings(own, message_partition_ids=1000, message_partition_check_seconds=3600))
        async with TestClient(TestServer(app)) as public, TestClient(TestServer(app[INTERNAL_APP])) as internal:
            await wait_schema_ready(app)
            api = Api(public, internal, recorder)
            end = await last_upper_bound(connection)
            await connection.execute("SELECT setval('change_seq', $1)", end - 1)
            send = {"senderId": ada.id, "receiverId": bob.id, "text": "past the end", "clientId": "past-the-end"}
            answer = await internal.post("/internal/messages/batch", json={"messages": [send]}, headers=GATEWAY)
            assert (answer.status, (await answer.json())["code"]) == (503, "store_unavailable")
            await app[STORE].keep_partitions_ahead(1000)
            [result] = await api.store(send)
            assert result["created"] and int(result["message"]["_id"]) >= end
    finally:
        await connection.close()
