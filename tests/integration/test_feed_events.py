"""Receipts, group changes and reactions in the change feed (issue 20), against real Postgres:
each kind is in its audience's feed after its change, in the order of the changes, as it was
emitted live (the same payload, its position as the offset), in replay and in sync; a
non-member never reads a group's events, a removed member reads their own removal and nothing
after it."""

from urllib.parse import quote

import pytest

from tests.integration.history_client import GATEWAY, Api
from tests.support import User
from tests.tally import ATTACK, BAD_INPUT

THUMBS = "👍"
# The feed events of feed_events.py (messages, deletions and edits have tests of their own).
FEED_EVENT_KINDS = {"messagesRead", "groupRead", "groupUpdated", "memberAdded", "memberRemoved", "reactionUpdated"}


async def head(api: Api) -> int:
    answer = await api.internal.get("/internal/feed/head", headers=GATEWAY)
    assert answer.status == 200
    return int((await answer.json())["head"])


async def replay(api: Api, user: User, after: int) -> list[list]:
    answer = await api.internal.get(f"/internal/users/{user.id}/replay", params={"after": str(after)}, headers=GATEWAY)
    body = await answer.json()
    assert answer.status == 200 and body["hasMore"] is False, body
    return body["events"]


def names(events: list[list]) -> list[str]:
    return [event[0] for event in events]


def offsets(events: list[list]) -> list[int]:
    return [int(event[-1]) for event in events]


async def direct(api: Api, sender: User, receiver: User, text: str) -> dict:
    [result] = await api.store({"senderId": sender.id, "receiverId": receiver.id, "text": text})
    return result["message"]


async def test_each_kind_is_in_the_feed_after_its_change_in_order_as_emitted_live(api):
    ada, bob, cy = await api.user(), await api.user(), await api.user()
    start = await head(api)

    message = await direct(api, ada, bob, "climbing?")
    await api.call("PUT", f"/api/messages/read/{ada.id}", bob)  # messagesRead, to ada
    await api.call("PUT", f"/api/messages/{message['_id']}/reactions/{quote(THUMBS, safe='')}", bob)
    group = await api.create(ada, bob)
    gid = group["_id"]
    await api.call("POST", f"/api/groups/{gid}/members", ada, json={"userIds": [cy.id]})
    await api.send(ada, group, "saturday")
    await api.call("PUT", f"/api/groups/{gid}/read", bob)
    await api.call("PATCH", f"/api/groups/{gid}", ada, json={"name": "Bouldering"})
    await api.call("DELETE", f"/api/groups/{gid}/members/{cy.id}", ada)

    ada_feed = await replay(api, ada, start)
    assert names(ada_feed) == ["messageSent", "messagesRead", "reactionUpdated", "groupUpdated", "groupUpdated",
                               "memberAdded", "messageSent", "groupRead", "groupUpdated", "memberRemoved"]
    assert offsets(ada_feed) == sorted(set(offsets(ada_feed)))  # in order, each once
    assert ada_feed[1][1] == {"readerId": bob.id, "count": 1, "upTo": message["_id"]}
    # Every group or reaction event is replayed exactly as it was emitted live: payload, offset.
    live = [[name, *data] for name, data, _ in api.events.emits if name in FEED_EVENT_KINDS]
    assert [event for event in ada_feed if event[0] in FEED_EVENT_KINDS - {"messagesRead"}] == live
    # Bob was told of the reaction, not of his own receipt (that goes to the sender).
    bob_feed = await replay(api, bob, start)
    assert "messagesRead" not in names(bob_feed) and "reactionUpdated" in names(bob_feed)

    # Sync answers the same events, in feed order.
    sync, _ = await api.call("GET", f"/api/messages/sync?after={start}", ada)
    assert sync["events"] == [{"event": event[0], "data": event[1]} for event in ada_feed
                              if event[0] in FEED_EVENT_KINDS]
    assert sync["next"] == ada_feed[-1][-1]


async def test_every_event_of_a_group_change_is_in_the_feed_before_it_answers(api):
    """Two members added at once: the group, then each member added, at consecutive positions the
    live emits carry."""
    ada, bob, cy, dee = await api.user(), await api.user(), await api.user(), await api.user()
    group = await api.create(ada, bob)
    start = await head(api)

    await api.call("POST", f"/api/groups/{group['_id']}/members", ada, json={"userIds": [cy.id, dee.id]})

    for member in (ada, bob, cy, dee):
        feed = await replay(api, member, start)
        assert names(feed) == ["groupUpdated", "memberAdded", "memberAdded"]
        assert {event[1]["member"]["_id"] for event in feed[1:]} == {cy.id, dee.id}
        assert offsets(feed) == [int(data[1]) for _, data, _ in api.events.emits[-3:]]


@pytest.mark.tally(ATTACK, "a non-member or removed member reads a group's receipts, changes or reactions in the feed")
async def test_a_non_member_never_reads_a_groups_events(api):
    ada, bob, stranger = await api.user(), await api.user(), await api.user()
    start = await head(api)

    group = await api.create(ada, bob)
    sent = await api.send(ada, group, "members only")
    await api.call("PUT", f"/api/messages/{sent['message']['_id']}/reactions/{quote(THUMBS, safe='')}", bob)
    await api.call("PUT", f"/api/groups/{group['_id']}/read", bob)
    await api.call("DELETE", f"/api/groups/{group['_id']}/members/{bob.id}", ada)  # bob leaves the group
    removed_at = await head(api)
    await api.call("PATCH", f"/api/groups/{group['_id']}", ada, json={"name": "after bob"})
    await api.send(ada, group, "after bob")

    assert await replay(api, stranger, start) == []
    sync, _ = await api.call("GET", f"/api/messages/sync?after={start}", stranger)
    assert sync["events"] == [] and sync["messages"] == []
    # The removed member reads their own removal (a row naming them), and nothing after it.
    bob_feed = await replay(api, bob, start)
    assert names(bob_feed) == ["memberRemoved"] and int(bob_feed[0][-1]) == removed_at
    assert bob_feed[0][1] == {"groupId": group["_id"], "userId": bob.id}
    assert names(await replay(api, ada, removed_at)) == ["groupUpdated", "messageSent"]


async def replay_many(api: Api, requests: list[tuple[User, int]], limit: int = 1000):
    return await api.internal.post("/internal/replay", headers=GATEWAY, json={
        "requests": [{"userId": user.id, "after": str(after)} for user, after in requests], "limit": limit})


async def test_replays_read_together_are_each_what_the_user_alone_is_replayed(api):
    """A restarted node's recovering sockets share one `POST /internal/replay`: each result is
    the user's own replay (messages both ways, a deletion, an edit with its reactions, receipts,
    group events), never another's, whatever else the batch holds."""
    ada, bob, cy, outsider = await api.user(), await api.user(), await api.user(), await api.user()
    start = await head(api)
    first = await direct(api, ada, bob, "climbing?")
    second = await direct(api, bob, ada, "saturday")
    await api.call("PUT", f"/api/messages/read/{ada.id}", bob)
    await api.call("PUT", f"/api/messages/{second['_id']}/reactions/{quote(THUMBS, safe='')}", ada)
    await api.call("PUT", f"/api/messages/{second['_id']}", bob, json={"text": "sunday"})
    await api.call("DELETE", f"/api/messages/{first['_id']}", ada)
    group = await api.create(ada, bob, cy)
    middle = await head(api)
    await api.send(cy, group, "count me in")
    await api.call("PATCH", f"/api/groups/{group['_id']}", ada, json={"name": "Bouldering"})

    requests = [(ada, start), (bob, start), (cy, start), (outsider, start), (ada, middle), (bob, start)]
    answer = await replay_many(api, requests)

    assert answer.status == 200, await answer.text()
    results = (await answer.json())["results"]
    assert [result["events"] for result in results] == [await replay(api, user, after) for user, after in requests]
    assert all(result["hasMore"] is False for result in results)
    # What the batch holds is each user's own, not the same answer six times.
    assert {"receiveMessage", "messageDeleted", "messageEdited", "messagesRead", "reactionUpdated",
            "groupUpdated"} <= set(names(results[0]["events"]))
    assert results[3]["events"] == [] and len(results[4]["events"]) < len(results[0]["events"])
    edited = next(event for event in results[1]["events"] if event[0] == "messageEdited")
    assert edited[1]["message"]["reactions"] == [{"emoji": THUMBS, "count": 1, "me": False}]


async def test_a_replay_batch_past_its_limit_says_has_more_for_that_request_only(api):
    ada, bob = await api.user(), await api.user()
    start = await head(api)
    for number in range(3):
        await direct(api, ada, bob, f"m{number}")
    answer = await replay_many(api, [(ada, start), (bob, await head(api))], limit=2)
    results = (await answer.json())["results"]
    assert [result["hasMore"] for result in results] == [True, False]
    assert len(results[0]["events"]) == 2 and results[1]["events"] == []


@pytest.mark.tally(BAD_INPUT, "internal replay batch")
@pytest.mark.parametrize("body", [
    {"requests": [], "limit": 10},
    {"requests": [{"userId": "u1", "after": "1"}] * 33, "limit": 10},
    {"requests": [{"userId": "u1", "after": "x"}], "limit": 10},
    {"requests": [{"userId": "u1", "after": "1"}], "limit": 0},
    {"requests": [{"userId": "u1", "after": "1"}], "limit": 10001},
    {"requests": [{"userId": "u1"}], "limit": 10},
    {"requests": "u1", "limit": 10},
])
async def test_a_bad_replay_batch_is_refused_naming_the_field(api, body):
    answer = await api.internal.post("/internal/replay", headers=GATEWAY, json=body)
    assert answer.status == 400, await answer.text()
