"""Reactions in history, against real Postgres (issue 16): both routes and the internal one, in 1:1
and groups, who may react, what counts as an emoji, the 20 limit, and `reactionUpdated`."""

from urllib.parse import quote

import pytest

from services.shared.limits import MAX_REACTIONS_PER_USER
from tests.integration.history_client import GATEWAY, Api, rooms
from tests.support import User

THUMBS = "👍"
# Twenty-one distinct single emoji: one more than a user may put on a message.
MANY = [chr(0x1F600 + n) for n in range(MAX_REACTIONS_PER_USER + 1)]


def reaction_path(message_id: str, emoji: str) -> str:
    return f"/api/messages/{message_id}/reactions/{quote(emoji, safe='')}"


async def direct(api: Api, sender: User, receiver: User, text: str = "hi", **extra) -> dict:
    [result] = await api.store({"senderId": sender.id, "receiverId": receiver.id, "text": text, **extra})
    assert "message" in result, result
    return result["message"]


async def page(api: Api, me: User, partner: User) -> list[dict]:
    return (await api.call("GET", f"/api/messages/{partner.id}", me))[0]


async def test_a_reaction_is_counted_and_marked_mine_for_the_reactor_only(api):
    ada, bob = await api.user(), await api.user()
    message = await direct(api, ada, bob)
    assert message["reactions"] == []

    answer, _ = await api.call("PUT", reaction_path(message["_id"], THUMBS), bob)
    await api.call("PUT", reaction_path(message["_id"], "❤️"), ada)

    assert answer == {"messageId": message["_id"], "reactions": [{"emoji": THUMBS, "count": 1, "me": True}]}
    [seen_by_bob] = await page(api, bob, ada)
    [seen_by_ada] = await page(api, ada, bob)
    assert seen_by_bob["reactions"] == [{"emoji": THUMBS, "count": 1, "me": True}, {"emoji": "❤️", "count": 1, "me": False}]
    assert seen_by_ada["reactions"] == [{"emoji": THUMBS, "count": 1, "me": False}, {"emoji": "❤️", "count": 1, "me": True}]


async def test_both_parties_hear_reaction_updated_with_counts_and_who_changed_what(api):
    ada, bob = await api.user(), await api.user()
    message = await direct(api, ada, bob)

    await api.call("PUT", reaction_path(message["_id"], THUMBS), bob)
    await api.call("PUT", reaction_path(message["_id"], THUMBS), ada)
    await api.call("DELETE", reaction_path(message["_id"], THUMBS), bob)

    assert api.events.payloads("reactionUpdated") == [
        ({"messageId": message["_id"], "reactions": [{"emoji": THUMBS, "count": 1}], "userId": bob.id,
          "emoji": THUMBS, "added": True}, rooms(ada, bob)),
        ({"messageId": message["_id"], "reactions": [{"emoji": THUMBS, "count": 2}], "userId": ada.id,
          "emoji": THUMBS, "added": True}, rooms(ada, bob)),
        ({"messageId": message["_id"], "reactions": [{"emoji": THUMBS, "count": 1}], "userId": bob.id,
          "emoji": THUMBS, "added": False}, rooms(ada, bob)),
    ]


async def test_reacting_twice_or_unreacting_what_is_not_there_changes_nothing_and_tells_no_one(api):
    ada, bob = await api.user(), await api.user()
    message = await direct(api, ada, bob)
    await api.call("PUT", reaction_path(message["_id"], THUMBS), bob)

    again, _ = await api.call("PUT", reaction_path(message["_id"], THUMBS), bob)
    absent, _ = await api.call("DELETE", reaction_path(message["_id"], "🎉"), bob)

    assert again["reactions"] == absent["reactions"] == [{"emoji": THUMBS, "count": 1, "me": True}]
    assert len(api.events.payloads("reactionUpdated")) == 1


async def test_group_members_react_and_every_member_hears_it(api):
    ada, bob, cy = await api.user(), await api.user(), await api.user()
    group = await api.create(ada, bob, cy)
    message = (await api.send(ada, group, "who climbs saturday?"))["message"]

    await api.call("PUT", reaction_path(message["_id"], THUMBS), cy)

    [(update, heard_by)] = api.events.payloads("reactionUpdated")
    assert update["reactions"] == [{"emoji": THUMBS, "count": 1}] and heard_by == rooms(ada, bob, cy)
    [seen], _ = await api.call("GET", f"/api/groups/{group['_id']}/messages", bob)
    assert seen["reactions"] == [{"emoji": THUMBS, "count": 1, "me": False}]


async def test_someone_who_cannot_see_the_message_is_told_it_does_not_exist(api):
    ada, bob, eve = await api.user(), await api.user(), await api.user()
    message = await direct(api, ada, bob)
    group = await api.create(ada, bob)
    in_group = (await api.send(ada, group, "members only"))["message"]
    await api.call("DELETE", f"/api/groups/{group['_id']}/members/{bob.id}", bob)  # bob leaves

    outsider, _ = await api.call("PUT", reaction_path(message["_id"], THUMBS), eve, 404)
    former_member, _ = await api.call("PUT", reaction_path(in_group["_id"], THUMBS), bob, 404)
    no_such, _ = await api.call("DELETE", reaction_path("999999999999", THUMBS), ada, 404)

    assert outsider["code"] == former_member["code"] == no_such["code"] == "not_found"
    assert api.events.payloads("reactionUpdated") == []
    assert (await page(api, ada, bob))[0]["reactions"] == []


async def test_a_deleted_message_takes_no_reactions(api):
    ada, bob = await api.user(), await api.user()
    message = await direct(api, ada, bob)
    await api.call("DELETE", f"/api/messages/{message['_id']}", ada)
    await api.call("PUT", reaction_path(message["_id"], THUMBS), bob, 404)


@pytest.mark.parametrize("text", ["a", "<script>", "1", "👍👍", "👍 ", "ab", "\u200d", "%"])
async def test_text_that_is_not_one_emoji_is_refused_and_nothing_is_stored(api, text):
    ada, bob = await api.user(), await api.user()
    message = await direct(api, ada, bob)

    refused, _ = await api.call("PUT", reaction_path(message["_id"], text), bob, 400)

    assert refused["code"] == "invalid_emoji"
    assert (await page(api, ada, bob))[0]["reactions"] == []


@pytest.mark.parametrize("emoji", ["👍🏽", "❤️", "👨‍👩‍👧‍👦", "🇫🇷", "1️⃣", "🏴󠁧󠁢󠁳󠁣󠁴󠁿"])
async def test_one_grapheme_emoji_of_every_kind_is_accepted(api, emoji):
    ada, bob = await api.user(), await api.user()
    message = await direct(api, ada, bob)
    answer, _ = await api.call("PUT", reaction_path(message["_id"], emoji), bob)
    assert answer["reactions"] == [{"emoji": emoji, "count": 1, "me": True}]


async def test_a_user_puts_at_most_twenty_distinct_emoji_on_one_message(api):
    ada, bob = await api.user(), await api.user()
    message = await direct(api, ada, bob)
    for emoji in MANY[:MAX_REACTIONS_PER_USER]:
        await api.call("PUT", reaction_path(message["_id"], emoji), bob)

    refused, _ = await api.call("PUT", reaction_path(message["_id"], MANY[-1]), bob, 409)
    again, _ = await api.call("PUT", reaction_path(message["_id"], MANY[0]), bob)  # one already set: fine
    others, _ = await api.call("PUT", reaction_path(message["_id"], MANY[-1]), ada)  # ada has her own twenty

    assert refused["code"] == "too_many_reactions"
    assert len(again["reactions"]) == MAX_REACTIONS_PER_USER
    assert len(others["reactions"]) == MAX_REACTIONS_PER_USER + 1


async def test_the_internal_route_reacts_for_a_socket_and_checks_the_same(api):
    ada, bob, eve = await api.user(), await api.user(), await api.user()
    message = await direct(api, ada, bob)

    async def internal(user: User, emoji: str, add: bool = True, status: int = 200) -> dict:
        answer = await api.internal.post("/internal/reactions", headers=GATEWAY, json={
            "userId": user.id, "messageId": message["_id"], "emoji": emoji, "add": add})
        assert answer.status == status, await answer.text()
        return await answer.json()

    assert (await internal(bob, THUMBS))["reactions"] == [{"emoji": THUMBS, "count": 1, "me": True}]
    assert (await internal(bob, THUMBS, add=False))["reactions"] == []
    assert (await internal(eve, THUMBS, status=404))["code"] == "not_found"
    assert (await internal(bob, "<b>", status=400))["code"] == "invalid_emoji"
    unauthenticated = await api.internal.post("/internal/reactions", json={
        "userId": bob.id, "messageId": message["_id"], "emoji": THUMBS, "add": True})
    assert unauthenticated.status == 401
