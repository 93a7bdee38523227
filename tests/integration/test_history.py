"""History against real Postgres: summaries, paging, sync, idempotency, deletion, search, errors."""

import asyncio
import re

import asyncpg
import pytest

from services.history.migrations import MIGRATION_LOCK_KEY, apply_migrations
from services.history.store import _INSERT_MESSAGES
from tests.support import ADMIN_TOKEN, GATEWAY_TOKEN, eventually
from tests.tally import ATTACK


async def get_json(history, path, user, status=200):
    answer = await history.get(path, headers=user.auth_headers)
    assert answer.status == status, await answer.text()
    return await answer.json(), answer.headers


async def test_conversations_list_partners_newest_first_with_unread_counts(history, make_user, send):
    me, ada, grace = await make_user(), await make_user(), await make_user()
    await send(ada, me, "from ada 1")
    await send(grace, me, "from grace")
    await send(ada, me, "from ada 2")
    await send(me, grace, "to grace")

    conversations, _ = await get_json(history, "/api/messages/conversations", me)

    assert [c["_id"]["_id"] for c in conversations] == [grace.id, ada.id]
    assert conversations[0]["lastMessage"]["text"] == "to grace"
    assert conversations[0]["lastMessage"]["sender"] == me.id
    assert [c["unreadCount"] for c in conversations] == [1, 2]
    assert conversations[1]["_id"]["userName"] == ada.user_name


async def test_unread_count_follows_reads_and_deletions(history, make_user, send):
    me, ada = await make_user(), await make_user()
    first, _ = await send(ada, me, "one")
    await send(ada, me, "two")
    answer = await history.delete(f"/api/messages/{first['_id']}", headers=ada.auth_headers)
    assert answer.status == 200
    conversations, _ = await get_json(history, "/api/messages/conversations", me)
    assert conversations[0]["unreadCount"] == 1

    answer = await history.put(f"/api/messages/read/{ada.id}", headers=me.auth_headers)
    assert (await answer.json())["count"] == 1
    await send(ada, me, "three")
    conversations, _ = await get_json(history, "/api/messages/conversations", me)
    assert conversations[0]["unreadCount"] == 1
    assert conversations[0]["lastMessage"]["text"] == "three"


async def test_read_marks_only_the_partners_messages_to_me(history, make_user, send):
    me, ada = await make_user(), await make_user()
    mine, _ = await send(me, ada, "mine")
    theirs, _ = await send(ada, me, "theirs")

    answer = await history.put(f"/api/messages/read/{ada.id}", headers=me.auth_headers)
    body = await answer.json()

    assert body["count"] == 1 and body["upTo"] == theirs["_id"]
    page, _ = await get_json(history, f"/api/messages/{ada.id}", me)
    read_state = {message["text"]: (message["isRead"], message["readAt"] is not None) for message in page}
    assert read_state == {"mine": (False, False), "theirs": (True, True)}


async def test_conversation_list_reads_summaries_not_history(history, stores):
    """Its cost must not grow with a user's messages: messages are reached by primary key only."""
    connection = await asyncpg.connect(stores.database_url)
    try:
        from services.history.store import _CONVERSATIONS

        await connection.execute("SET enable_seqscan = off")
        plan = "\n".join(row[0] for row in await connection.fetch(f"EXPLAIN {_CONVERSATIONS}", "x", 2**62, 10))
    finally:
        await connection.close()
    # Each partition of messages (migration 0013) probed by its primary key, if at all.
    message_scans = [line for line in plan.splitlines() if re.search(r" on messages(_p\d+)? ", line)]
    assert message_scans and all(re.search(r"messages(_p\d+)?_pkey", line) for line in message_scans), plan


async def test_history_is_paged_newest_page_first_with_a_next_link(history, make_user, send):
    me, ada = await make_user(), await make_user()
    for number in range(7):
        await send(me if number % 2 else ada, ada if number % 2 else me, f"m{number}")

    page, headers = await get_json(history, f"/api/messages/{ada.id}?limit=3", me)
    assert [m["text"] for m in page] == ["m4", "m5", "m6"]
    link = re.fullmatch(r'<(.+)>; rel="next"', headers["Link"]).group(1)
    assert f"before={page[0]['_id']}" in link

    older, headers = await get_json(history, link, me)
    assert [m["text"] for m in older] == ["m1", "m2", "m3"]
    oldest, headers = await get_json(history, re.fullmatch(r'<(.+)>; rel="next"', headers["Link"]).group(1), me)
    assert [m["text"] for m in oldest] == ["m0"]
    assert "Link" not in headers


async def test_sync_returns_everything_after_the_cursor_including_deletions(history, make_user, send):
    me, ada, grace = await make_user(), await make_user(), await make_user()
    seen, _ = await send(ada, me, "seen before the drop")
    missed = [(await send(ada, me, "missed 1"))[0], (await send(me, grace, "sent from another tab"))[0]]
    await history.delete(f"/api/messages/{seen['_id']}", headers=ada.auth_headers)
    await send(ada, grace, "not mine")

    body, _ = await get_json(history, f"/api/messages/sync?after={seen['_id']}", me)

    assert [m["_id"] for m in body["messages"]] == [m["_id"] for m in missed]
    assert body["deleted"] == [{"_id": seen["_id"], "sender": ada.id, "receiver": me.id}]
    assert body["hasMore"] is False
    again, _ = await get_json(history, f"/api/messages/sync?after={body['next']}", me)
    assert again == {"messages": [], "edited": [], "deleted": [], "events": [], "next": body["next"], "hasMore": False,
                     "eventsPruned": False}


async def test_sync_pages_in_order(history, make_user, send):
    me, ada = await make_user(), await make_user()
    start, _ = await send(ada, me, "start")
    texts = [f"after {n}" for n in range(5)]
    for text in texts:
        await send(ada, me, text)

    collected, cursor = [], start["_id"]
    for _ in range(5):
        body, _ = await get_json(history, f"/api/messages/sync?after={cursor}&limit=2", me)
        collected += [m["text"] for m in body["messages"]]
        cursor = body["next"]
        if not body["hasMore"]:
            break
    assert collected == texts


async def test_a_retried_client_id_stores_the_message_once(history, make_user, send, stores):
    me, ada = await make_user(), await make_user()
    first, created_first = await send(me, ada, "once", client_id="c-42")
    again, created_again = await send(me, ada, "once", client_id="c-42")
    other, created_other = await send(me, ada, "once", client_id="c-43")

    assert (created_first, created_again, created_other) == (True, False, True)
    assert again == first and other["_id"] != first["_id"]
    page, _ = await get_json(history, f"/api/messages/{ada.id}", me)
    assert len(page) == 2
    conversations, _ = await get_json(history, "/api/messages/conversations", ada)
    assert conversations[0]["unreadCount"] == 2


async def test_only_the_sender_deletes_and_the_message_disappears_everywhere(history, make_user, send):
    me, ada, mallory = await make_user(), await make_user(), await make_user()
    await send(me, ada, "keep this unique-word-one")
    doomed, _ = await send(me, ada, "delete this unique-word-two")

    assert (await history.delete(f"/api/messages/{doomed['_id']}", headers=ada.auth_headers)).status == 403
    assert (await history.delete(f"/api/messages/{doomed['_id']}", headers=mallory.auth_headers)).status == 404
    answer = await history.delete(f"/api/messages/{doomed['_id']}", headers=me.auth_headers)
    assert answer.status == 200
    assert (await history.delete(f"/api/messages/{doomed['_id']}", headers=me.auth_headers)).status == 404

    page, _ = await get_json(history, f"/api/messages/{me.id}", ada)
    assert [m["text"] for m in page] == ["keep this unique-word-one"]
    for user in (me, ada):
        conversations, _ = await get_json(history, "/api/messages/conversations", user)
        assert conversations[0]["lastMessage"]["text"] == "keep this unique-word-one"
    found, _ = await get_json(history, "/api/messages/search?q=unique-word-two", me)
    assert found == []


async def test_search_finds_only_my_messages_newest_first(history, make_user, send):
    me, ada, grace = await make_user(), await make_user(), await make_user()
    word = "zebracrossing" + me.id[:6]
    await send(me, ada, f"the {word} at noon")
    await send(grace, me, f"{word}? where")
    await send(ada, grace, f"a {word} that is not mine")
    await send(me, ada, "unrelated")

    found, _ = await get_json(history, f"/api/messages/search?q={word}", me)
    assert [m["text"] for m in found] == [f"{word}? where", f"the {word} at noon"]
    limited, headers = await get_json(history, f"/api/messages/search?q={word}&limit=1", me)
    assert len(limited) == 1 and 'rel="next"' in headers["Link"]


async def test_search_treats_sql_and_query_syntax_as_text(history, make_user, send):
    me, ada = await make_user(), await make_user()
    hostile = "'; DROP TABLE messages; -- \" OR 1=1 (&|!:*)"
    message, _ = await send(me, ada, hostile)
    assert message["text"] == hostile
    for query in (hostile, "&|!", "(", "\"unterminated", "a:*"):
        answer = await history.get("/api/messages/search", params={"q": query}, headers=me.auth_headers)
        assert answer.status == 200, (query, await answer.text())


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/api/messages/sync", "invalid_after"),
        ("/api/messages/sync?after=-1", "invalid_after"),
        ("/api/messages/sync?after=99999999999999999999", "invalid_after"),
        ("/api/messages/sync?after=1&limit=501", "invalid_limit"),
        ("/api/messages/search", "invalid_q"),
        ("/api/messages/search?q=" + "x" * 257, "invalid_q"),
        ("/api/messages/search?q=hi&limit=abc", "invalid_limit"),
        ("/api/messages/conversations?before=1.5", "invalid_before"),
        ("/api/messages/someone?before=%F0%9F%98%80", "invalid_before"),
        ("/api/users/lookup", "invalid_userName"),
    ],
)
async def test_bad_cursors_limits_and_queries_are_clear_400s(history, make_user, path, code):
    me = await make_user()
    body, _ = await get_json(history, path, me, status=400)
    assert body["code"] == code and body["message"]


async def test_deleting_a_malformed_id_is_400_and_unknown_is_404(history, make_user):
    me = await make_user()
    answer = await history.delete("/api/messages/not-a-number", headers=me.auth_headers)
    assert answer.status == 400 and (await answer.json())["code"] == "invalid_messageId"
    answer = await history.delete("/api/messages/999999999999", headers=me.auth_headers)
    assert answer.status == 404


async def test_messages_to_or_from_unknown_users_are_refused(history_internal, make_user, send):
    me = await make_user()
    answer = await history_internal.post(
        "/internal/messages",
        json={"senderId": me.id, "receiverId": "no-such-user", "text": "hi"},
        headers={"X-Internal-Token": GATEWAY_TOKEN},
    )
    assert answer.status == 404 and (await answer.json())["code"] == "unknown_receiver"
    answer = await history_internal.post(
        "/internal/messages",
        json={"senderId": "no-such-sender", "receiverId": me.id, "text": "hi"},
        headers={"X-Internal-Token": GATEWAY_TOKEN},
    )
    assert answer.status == 404 and (await answer.json())["code"] == "unknown_sender"


async def test_a_batch_is_stored_in_order_with_one_result_per_message(history, history_internal, make_user, send):
    ada, grace = await make_user(), await make_user()
    earlier, _ = await send(ada, grace, "stored before", client_id="c-earlier")
    batch = [
        {"senderId": ada.id, "receiverId": grace.id, "text": "one", "clientId": "c-1"},
        {"senderId": grace.id, "receiverId": ada.id, "text": "two"},
        {"senderId": ada.id, "receiverId": "no-such-user", "text": "lost"},
        {"senderId": ada.id, "receiverId": grace.id, "text": "one again", "clientId": "c-1"},
        {"senderId": ada.id, "receiverId": grace.id, "text": "retry", "clientId": "c-earlier"},
        {"senderId": "no-such-sender", "receiverId": grace.id, "text": "lost"},
        {"senderId": ada.id, "receiverId": grace.id, "text": "three"},
    ]
    answer = await history_internal.post("/internal/messages/batch", json={"messages": batch},
                                         headers={"X-Internal-Token": GATEWAY_TOKEN})
    assert answer.status == 200, await answer.text()
    results = (await answer.json())["results"]
    assert [r.get("created") for r in results] == [True, True, None, False, False, None, True]
    assert [r["message"]["text"] for r in results if "message" in r] == ["one", "two", "one", "stored before", "three"]
    assert results[3]["message"]["_id"] == results[0]["message"]["_id"]
    assert results[4]["message"]["_id"] == earlier["_id"]
    assert results[1]["message"]["sender"]["userName"] == grace.user_name
    assert (results[2]["status"], results[2]["error"]["code"]) == (404, "unknown_receiver")
    assert (results[5]["status"], results[5]["error"]["code"]) == (404, "unknown_sender")
    created_ids = [int(results[n]["message"]["_id"]) for n in (0, 1, 6)]
    assert created_ids == sorted(created_ids), "ids follow the order of the batch"

    # The summary rows counted each created message once: grace has 3 unread from ada
    # (stored before, one, three), ada has 1 from grace; the last message is the newest.
    conversations, _ = await get_json(history, "/api/messages/conversations", grace)
    [with_ada] = [c for c in conversations if c["_id"]["_id"] == ada.id]
    assert with_ada["unreadCount"] == 3 and with_ada["lastMessage"]["_id"] == str(created_ids[-1])
    conversations, _ = await get_json(history, "/api/messages/conversations", ada)
    [with_grace] = [c for c in conversations if c["_id"]["_id"] == grace.id]
    assert with_grace["unreadCount"] == 1


async def test_writers_run_in_parallel_and_sync_waits_for_a_smaller_id_still_committing(history, stores, make_user,
                                                                                         send):
    """No lock serialises the inserts (issue 19): while a batch that drew its ids has not
    committed, a later one commits. A sync that arrives meanwhile waits for the earlier batch
    (its claim, migration 0012), so it never skips the smaller id, and answers both in id order.
    (test_feed_claims proves the wait itself, on a reader of its own.)"""
    ada, grace, carol = await make_user(), await make_user(), await make_user()
    first, _ = await send(ada, grace, "before")
    slow = await asyncpg.connect(stores.database_url)
    try:
        transaction = slow.transaction()
        await transaction.start()
        [held] = await slow.fetch(_INSERT_MESSAGES, [ada.id], [grace.id], ["held back"], [None], [None],
                                   [None], [None], [None])  # no call (issue 17)
        # Another pair, so no summary row lock is shared: it commits while the first is open.
        message, _ = await asyncio.wait_for(send(carol, grace, "sent meanwhile"), 5)
        assert int(message["_id"]) > held["id"]
        syncing = asyncio.ensure_future(get_json(history, f"/api/messages/sync?after={first['_id']}", grace))
        await transaction.commit()
        synced, _ = await asyncio.wait_for(syncing, 5)
    finally:
        await slow.close()
    assert [m["text"] for m in synced["messages"]] == ["held back", "sent meanwhile"]


async def test_a_batch_is_validated_whole(history_internal):
    headers = {"X-Internal-Token": GATEWAY_TOKEN}
    for body, code in [({"messages": []}, "invalid_messages"),
                       ({"messages": [{"senderId": "a", "receiverId": "b", "text": ""}]}, "invalid_messages.0.text"),
                       ({"messages": [{"senderId": "a", "receiverId": "b", "text": "x"}] * 257}, "invalid_messages")]:
        answer = await history_internal.post("/internal/messages/batch", json=body, headers=headers)
        assert answer.status == 400 and (await answer.json())["code"] == code, await answer.text()


async def test_profiles_are_upserted_and_looked_up_by_user_name(history, history_internal, make_user):
    me = await make_user()
    headers = {"X-Internal-Token": ADMIN_TOKEN}
    answer = await history_internal.put(
        "/internal/users/p-1-" + me.id[:8],
        json={"userName": "Lin" + me.id[:8], "name": "Lin", "profileImage": "https://img.example/l.png"},
        headers=headers,
    )
    assert answer.status == 200
    found, _ = await get_json(history, f"/api/users/lookup?userName=lin{me.id[:8]}", me)
    assert found == {"_id": "p-1-" + me.id[:8], "userName": "Lin" + me.id[:8], "name": "Lin",
                     "profileImage": "https://img.example/l.png"}
    taken = await history_internal.put("/internal/users/p-2-" + me.id[:8], json={"userName": "LIN" + me.id[:8]},
                              headers=headers)
    assert taken.status == 409 and (await taken.json())["code"] == "invalid_userName"
    bad = await history_internal.put("/internal/users/p-3", json={"userName": ""}, headers=headers)
    assert bad.status == 400 and (await bad.json())["code"] == "invalid_userName"


@pytest.mark.tally(ATTACK, "/internal/* without the right service token")
@pytest.mark.parametrize("token", [None, "", "wrong"])
async def test_internal_routes_need_the_service_token(history_internal, token):
    headers = {} if token is None else {"X-Internal-Token": token}
    answer = await history_internal.get("/internal/users", headers=headers)
    assert answer.status == 401 and (await answer.json())["code"] == "unauthorized"


async def test_search_indexes_keep_a_small_pending_list(stores):
    """New entries wait in at most 64 kB that every search scans (migrations 0004, 0005), not 4 MB:
    in every partition of messages too (0013)."""
    connection = await asyncpg.connect(stores.database_url)
    try:
        options = dict(await connection.fetch(
            "SELECT c.relname, c.reloptions FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'gin' AND (i.indrelid = 'messages'::regclass"
            "  OR i.indrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'messages'::regclass))"))
    finally:
        await connection.close()
    expected = ["fastupdate=on", "gin_pending_list_limit=64"]
    assert {"messages_sender_search_idx", "messages_receiver_search_idx", "messages_group_search_idx"} < set(options)
    assert len(options) >= 3 * 4 and all(value == expected for value in options.values()), options


def test_migrations_are_safe_when_replicas_start_together(own_database):
    url = own_database.url

    async def three_replicas_at_once():
        connections = [await asyncpg.connect(url) for _ in range(3)]
        try:
            applied = await asyncio.gather(*(apply_migrations(connection) for connection in connections))
            # One row per migration (a migration in steps also records each step as it commits).
            versions = await connections[0].fetch("SELECT version FROM schema_migrations WHERE version NOT LIKE '% step %'")
        finally:
            for connection in connections:
                await connection.close()
        return applied, versions

    applied, versions = asyncio.run(three_replicas_at_once())
    assert sorted(len(result) for result in applied) == [0, 0, len(versions)]
    assert len(versions) >= 1


def test_a_replica_waits_out_a_migration_longer_than_its_command_timeout(own_database):
    """Another replica migrating (an index on a big table, say) for longer than the 5 s command
    timeout must not make this one give up and retry forever."""
    url = own_database.url

    async def wait_for_the_other_replica():
        other = await asyncpg.connect(url)
        replica = await asyncpg.connect(url, command_timeout=0.2)
        try:
            await other.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
            waiting = asyncio.ensure_future(apply_migrations(replica))

            async def waited_out_its_timeout() -> None:  # or gave up meanwhile
                assert waiting.done() or await lock_waiters(other, longer_than_seconds=0.6) == 1

            # Postgres sees the replica waiting for the lock three times its command timeout.
            await eventually(waited_out_its_timeout)
            assert not waiting.done()
            await other.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
            return await asyncio.wait_for(waiting, 10)
        finally:
            await other.close()
            await replica.close()

    applied = asyncio.run(wait_for_the_other_replica())
    assert applied and applied[0] == "0001_init"


def test_history_commits_synchronously_even_where_the_server_says_otherwise(stores, own_database):
    """An acknowledged message must survive a Postgres crash, whatever the database default."""
    from services.history.app import create_pool
    from tests.integration.conftest import history_settings

    url = own_database.url

    async def setting_seen_by_history():
        admin = await asyncpg.connect(own_database.admin_url)
        try:
            await admin.execute(f'ALTER DATABASE "{own_database.name}" SET synchronous_commit = off')
        finally:
            await admin.close()
        plain = await asyncpg.connect(url)
        try:
            default = await plain.fetchval("SHOW synchronous_commit")
        finally:
            await plain.close()
        pool = await create_pool(history_settings(stores, database_url=url))
        try:
            async with pool.acquire() as connection:
                return default, await connection.fetchval("SHOW synchronous_commit")
        finally:
            await pool.close()

    default, seen = asyncio.run(setting_seen_by_history())
    assert (default, seen) == ("off", "on")


async def lock_waiters(connection: asyncpg.Connection, longer_than_seconds: float = 0.0) -> int:
    """Sessions of this database waiting for a lock (for at least `longer_than_seconds`), as
    Postgres sees them: proof that a statement got as far as the lock."""
    return await connection.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        " AND now() - query_start >= make_interval(secs => $1)", longer_than_seconds)
