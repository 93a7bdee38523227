"""Reactions, replies and edits through real gateways (issue 16): heard on the other node, in 1:1
and groups; refused to whoever cannot see the message, from outside, by socket and by REST.

A check that someone did NOT hear an event first waits for a later event on the same node.
"""

import asyncio
from urllib.parse import quote

import pytest

from tests.e2e.test_groups import create_group, rest
from tests.tally import ATTACK

THUMBS = "👍"


def reaction_path(message_id: str, emoji: str) -> str:
    return f"/api/messages/{message_id}/reactions/{quote(emoji, safe='')}"


async def test_a_reaction_on_node_a_is_seen_with_its_count_on_node_b(cluster, make_user, connect):
    ada, grace = await make_user(), await make_user()
    ada_a, grace_b = await connect(ada, "a"), await connect(grace, "b")
    message = (await ada_a.call("sendMessage", {"receiverId": grace.id, "text": "summit at noon"}))["message"]
    assert message["reactions"] == [] and message["replyTo"] is None and message["editedAt"] is None

    ack = await grace_b.call("react", {"messageId": message["_id"], "emoji": THUMBS})
    assert ack == {"ok": True, "messageId": message["_id"], "reactions": [{"emoji": THUMBS, "count": 1, "me": True}]}
    update = await ada_a.wait_for("reactionUpdated", lambda data: data["messageId"] == message["_id"])
    assert update == {"messageId": message["_id"], "reactions": [{"emoji": THUMBS, "count": 1}],
                      "userId": grace.id, "emoji": THUMBS, "added": True}

    # By REST through node a, then back by socket: the counts move on both sides.
    status, body = await rest(cluster, "PUT", reaction_path(message["_id"], THUMBS), ada, node="a")
    assert status == 200 and body["reactions"] == [{"emoji": THUMBS, "count": 2, "me": True}]
    await grace_b.wait_for("reactionUpdated", lambda data: data["reactions"] == [{"emoji": THUMBS, "count": 2}])
    assert (await grace_b.call("unreact", {"messageId": message["_id"], "emoji": THUMBS}))["reactions"] == [
        {"emoji": THUMBS, "count": 1, "me": False}]
    await ada_a.wait_for("reactionUpdated", lambda data: data["added"] is False and data["userId"] == grace.id)


async def test_an_edit_is_heard_in_a_group_on_both_nodes_and_a_reply_quotes_it(cluster, make_user, connect):
    ada, grace, alan = [await make_user() for _ in range(3)]
    group = await create_group(cluster, ada, [grace, alan])
    ada_a, grace_b, alan_a = await connect(ada, "a"), await connect(grace, "b"), await connect(alan, "a")
    original = (await ada_a.call("sendMessage", {"groupId": group["_id"], "text": "rope: 60m"}))["message"]

    status, edited = await rest(cluster, "PUT", f"/api/messages/{original['_id']}", ada, node="b",
                                json={"text": "rope: 70m"})
    assert status == 200 and edited["text"] == "rope: 70m" and edited["editedAt"]
    for member in (grace_b, alan_a, ada_a):
        heard = await member.wait_for("messageEdited", lambda data: data["message"]["_id"] == original["_id"])
        assert heard["message"]["text"] == "rope: 70m"

    reply = await grace_b.call("sendMessage", {"groupId": group["_id"], "text": "got one", "replyTo": original["_id"]})
    assert reply["message"]["replyTo"] == {"_id": original["_id"], "sender": ada.id, "text": "rope: 70m"}
    received = await alan_a.wait_for("receiveMessage", lambda data: data["text"] == "got one")
    assert received["replyTo"] == reply["message"]["replyTo"]


async def test_a_reply_to_a_message_of_another_conversation_is_refused(cluster, make_user, connect):
    ada, grace, mallory = [await make_user() for _ in range(3)]
    ada_a = await connect(ada, "a")
    private = (await ada_a.call("sendMessage", {"receiverId": grace.id, "text": "between us"}))["message"]
    mallory_b = await connect(mallory, "b")
    ack = await mallory_b.call("sendMessage", {"receiverId": ada.id, "text": "quoting", "replyTo": private["_id"]})
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_replyTo"


@pytest.mark.tally(ATTACK, "rich messages: a non-member reacts, edits or quotes")
async def test_someone_who_cannot_see_a_message_cannot_react_to_it_or_edit_it(cluster, make_user, connect):
    ada, grace, mallory = [await make_user() for _ in range(3)]
    group = await create_group(cluster, ada, [grace])
    ada_a, grace_a = await connect(ada, "a"), await connect(grace, "a")
    message = (await ada_a.call("sendMessage", {"groupId": group["_id"], "text": "members only"}))["message"]
    intruder = await connect(mallory, "b")

    for event in ("react", "unreact"):
        ack = await intruder.call(event, {"messageId": message["_id"], "emoji": THUMBS})
        assert ack["ok"] is False and ack["error"]["code"] == "not_found", (event, ack)
    for method, path, body in (("PUT", reaction_path(message["_id"], THUMBS), None),
                               ("DELETE", reaction_path(message["_id"], THUMBS), None),
                               ("PUT", f"/api/messages/{message['_id']}", {"text": "defaced"})):
        status, answer = await rest(cluster, method, path, mallory, node="b", json=body)
        assert (status, answer["code"]) == (404, "not_found"), (method, path, answer)
    status, answer = await rest(cluster, "PUT", f"/api/messages/{message['_id']}", grace, json={"text": "mine now"})
    assert (status, answer["code"]) == (403, "forbidden")
    ack = await intruder.call("react", {"messageId": message["_id"], "emoji": "<script>"})
    assert ack["error"]["code"] == "invalid_emoji"
    status, answer = await rest(cluster, "PUT", reaction_path(message["_id"], "<script>"), ada)
    assert (status, answer["code"]) == (400, "invalid_emoji")

    # Nothing reached the members: a later reaction is the first event they hear.
    assert (await grace_a.call("react", {"messageId": message["_id"], "emoji": "🎉"}))["ok"]
    first = await ada_a.wait_for("reactionUpdated")
    assert first["userId"] == grace.id and ada_a.received("messageEdited") == []


async def test_a_sockets_quick_reacts_and_unreacts_take_effect_in_the_order_sent(cluster, make_user, connect):
    """Twenty alternating react/unreact, sent without waiting for each ack: each changes the state
    (so the partner hears twenty updates, alternating), and the last one, an unreact, wins."""
    ada, grace = await make_user(), await make_user()
    ada_a, grace_b = await connect(ada, "a"), await connect(grace, "b")
    message = (await ada_a.call("sendMessage", {"receiverId": grace.id, "text": "quick fingers"}))["message"]
    events = ["react" if n % 2 == 0 else "unreact" for n in range(20)]
    acks = await asyncio.gather(*(grace_b.call(event, {"messageId": message["_id"], "emoji": THUMBS})
                                  for event in events))
    assert all(ack["ok"] for ack in acks), acks
    assert acks[-1]["reactions"] == []
    await ada_a.wait_for("reactionUpdated", lambda data: len(ada_a.received("reactionUpdated")) == 20)
    assert [update["added"] for update in ada_a.received("reactionUpdated")] == [event == "react" for event in events]
