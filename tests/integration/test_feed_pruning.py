"""The change feed's old events are pruned (issue 20), in a database of the test's own: events
past FEED_EVENTS_RETENTION_SECONDS go, newer ones and every message stay, and a reader from
before what was pruned is told (sync's `eventsPruned`; a replay answers `hasMore`, so a
recovering socket gets a normal connection instead of a replay with holes)."""

import dataclasses
from urllib.parse import quote

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from services.history.app import create_app
from services.shared.web import INTERNAL_APP
from tests.integration.conftest import RecordingNotifier, history_settings, wait_schema_ready
from tests.integration.history_client import GATEWAY, Api
from tests.support import eventually

THUMBS = "👍"
RETENTION_SECONDS = 3600.0


async def test_events_past_their_retention_are_pruned_and_readers_from_before_are_told(stores, migrated_database,
                                                                                       monkeypatch):
    url = migrated_database
    own = dataclasses.replace(stores, database_url=url)
    # The pruner looks every 50 ms here (an hour by default).
    app = create_app(history_settings(own, feed_events_retention_seconds=RETENTION_SECONDS,
                                      feed_prune_interval_seconds=0.05))
    recorder = RecordingNotifier(monkeypatch)
    async with TestClient(TestServer(app)) as public, TestClient(TestServer(app[INTERNAL_APP])) as internal:
        await wait_schema_ready(app)
        api = Api(public, internal, recorder)
        ada, bob = await api.user(), await api.user()
        [stored] = await api.store({"senderId": ada.id, "receiverId": bob.id, "text": "old news"})
        message = stored["message"]
        await api.call("PUT", f"/api/messages/read/{ada.id}", bob)  # messagesRead, to ada
        await api.call("PUT", f"/api/messages/{message['_id']}/reactions/{quote(THUMBS, safe='')}", bob)
        connection = await asyncpg.connect(url)
        try:
            # Those two events are now two retentions old; the next ones are new.
            await connection.execute("UPDATE feed_events SET created_at = now() - make_interval(secs => $1)",
                                     2 * RETENTION_SECONDS)
            old_through = await connection.fetchval("SELECT max(seq) FROM feed_events")
            await api.call("DELETE", f"/api/messages/{message['_id']}/reactions/{quote(THUMBS, safe='')}", bob)

            async def pruned():
                assert await connection.fetchval("SELECT pruned_through FROM feed_pruning") == old_through
            await eventually(pruned)
            kept = await connection.fetch("SELECT event FROM feed_events ORDER BY seq")
        finally:
            await connection.close()
        assert [row["event"] for row in kept] == ["reactionUpdated"]  # the new one

        # Ada from before: her receipt is gone, and sync says events may be missing; the
        # message itself is kept, with its reactions as they stand.
        body, _ = await api.call("GET", "/api/messages/sync", ada, params={"after": "0"})
        assert body["eventsPruned"] is True
        assert [m["_id"] for m in body["messages"]] == [message["_id"]]
        assert [e["event"] for e in body["events"]] == ["reactionUpdated"]
        # From after what was pruned: complete.
        body, _ = await api.call("GET", "/api/messages/sync", ada, params={"after": str(old_through)})
        assert body["eventsPruned"] is False and [e["event"] for e in body["events"]] == ["reactionUpdated"]
        # A recovery from before gets no replay with holes: hasMore (a normal connection).
        for after, has_more in (("0", True), (str(old_through), False)):
            answer = await internal.get(f"/internal/users/{ada.id}/replay", params={"after": after},
                                        headers=GATEWAY)
            assert answer.status == 200 and (await answer.json())["hasMore"] is has_more
