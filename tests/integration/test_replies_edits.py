"""Replies and edits in history, against real Postgres (issue 16): a reply's quote (and after the
original's deletion), where a reply may point, the edit route and its window, `messageEdited`,
and that sync and search see the new text."""

import asyncpg

from services.shared.limits import REPLY_QUOTE_LENGTH
from tests.integration.history_client import GATEWAY, Api, rooms
from tests.integration.test_reactions import direct, page
from tests.support import User


async def edit(api: Api, user: User, message_id: str, text: str, status: int = 200) -> dict:
    return (await api.call("PUT", f"/api/messages/{message_id}", user, status, json={"text": text}))[0]


# --- replies --------------------------------------------------------------------------------


async def test_a_reply_carries_a_short_quote_of_the_original(api):
    ada, bob = await api.user(), await api.user()
    original = await direct(api, ada, bob, "x" * 300)

    reply = await direct(api, bob, ada, "agreed", replyTo=original["_id"])

    assert reply["replyTo"] == {"_id": original["_id"], "sender": ada.id, "text": "x" * REPLY_QUOTE_LENGTH}
    assert original["replyTo"] is None
    assert [m["replyTo"] for m in await page(api, ada, bob)] == [None, reply["replyTo"]]


async def test_the_quote_survives_the_originals_deletion_as_deleted(api):
    ada, bob = await api.user(), await api.user()
    original = await direct(api, ada, bob, "a secret")
    reply = await direct(api, bob, ada, "what?", replyTo=original["_id"])

    await api.call("DELETE", f"/api/messages/{original['_id']}", ada)

    [kept] = await page(api, bob, ada)
    assert kept["_id"] == reply["_id"]
    assert kept["replyTo"] == {"_id": original["_id"], "sender": ada.id, "text": "deleted"}


async def test_a_reply_in_a_group_quotes_a_message_of_that_group(api):
    ada, bob = await api.user(), await api.user()
    group = await api.create(ada, bob)
    original = (await api.send(ada, group, "rope or no rope"))["message"]
    [result] = await api.store({"senderId": bob.id, "groupId": group["_id"], "text": "rope", "replyTo": original["_id"]})
    assert result["message"]["replyTo"] == {"_id": original["_id"], "sender": ada.id, "text": "rope or no rope"}


async def test_a_reply_to_another_conversation_or_a_deleted_message_is_refused(api):
    ada, bob, eve = await api.user(), await api.user(), await api.user()
    theirs = await direct(api, ada, eve, "not bob's business")
    gone = await direct(api, ada, bob, "soon gone")
    await api.call("DELETE", f"/api/messages/{gone['_id']}", ada)
    group = await api.create(ada, bob)
    in_group = (await api.send(ada, group, "group only"))["message"]

    results = await api.store(
        {"senderId": bob.id, "receiverId": ada.id, "text": "peek", "replyTo": theirs["_id"]},
        {"senderId": bob.id, "receiverId": ada.id, "text": "late", "replyTo": gone["_id"]},
        {"senderId": bob.id, "receiverId": ada.id, "text": "cross", "replyTo": in_group["_id"]},
        {"senderId": eve.id, "groupId": group["_id"], "text": "outsider", "replyTo": in_group["_id"]},
        {"senderId": bob.id, "groupId": group["_id"], "text": "to 1:1", "replyTo": theirs["_id"]},
        {"senderId": bob.id, "receiverId": ada.id, "text": "missing", "replyTo": "99999999999"},
    )

    assert [r["error"]["code"] for r in results] == [
        "invalid_replyTo", "invalid_replyTo", "invalid_replyTo", "not_a_member", "invalid_replyTo", "invalid_replyTo"]
    assert [m["text"] for m in await page(api, ada, bob)] == []


async def test_a_reply_id_that_is_not_a_message_id_is_refused_naming_the_field(api):
    ada, bob = await api.user(), await api.user()
    answer = await api.internal.post("/internal/messages", headers=GATEWAY, json={
        "senderId": ada.id, "receiverId": bob.id, "text": "x", "replyTo": "abc"})
    assert answer.status == 400 and (await answer.json())["code"] == "invalid_replyTo"




# --- edits ----------------------------------------------------------------------------------


async def test_the_sender_edits_and_the_conversation_hears_message_edited(api):
    ada, bob = await api.user(), await api.user()
    message = await direct(api, ada, bob, "teh plan")

    edited = await edit(api, ada, message["_id"], "the plan")

    assert edited["text"] == "the plan" and edited["editedAt"] is not None and message["editedAt"] is None
    assert (await page(api, bob, ada))[0] == {**edited, "reactions": []}
    assert api.events.payloads("messageEdited") == [({"message": edited}, rooms(ada, bob))]


async def test_a_group_edit_is_heard_by_every_member(api):
    ada, bob, cy = await api.user(), await api.user(), await api.user()
    group = await api.create(ada, bob, cy)
    message = (await api.send(ada, group, "saturday 9"))["message"]

    edited = await edit(api, ada, message["_id"], "saturday 10")

    assert edited["groupId"] == group["_id"] and edited["receiver"] is None
    assert api.events.payloads("messageEdited") == [({"message": edited}, rooms(ada, bob, cy))]


async def test_only_the_sender_may_edit_and_others_learn_nothing(api):
    ada, bob, eve = await api.user(), await api.user(), await api.user()
    message = await direct(api, ada, bob, "mine")

    receiver = await edit(api, bob, message["_id"], "hijacked", 403)
    outsider = await edit(api, eve, message["_id"], "hijacked", 404)

    assert (receiver["code"], outsider["code"]) == ("forbidden", "not_found")
    assert (await page(api, ada, bob))[0]["text"] == "mine"
    assert api.events.payloads("messageEdited") == []


async def test_an_edit_after_the_window_is_refused(api, stores):
    ada, bob = await api.user(), await api.user()
    message = await direct(api, ada, bob, "old news")
    connection = await asyncpg.connect(stores.database_url)
    try:  # sent sixteen minutes ago: one past the default fifteen
        await connection.execute("UPDATE messages SET created_at = now() - interval '16 minutes' WHERE id = $1",
                                 int(message["_id"]))
    finally:
        await connection.close()

    refused = await edit(api, ada, message["_id"], "new news", 403)

    assert refused["code"] == "edit_window_closed"
    assert (await page(api, ada, bob))[0]["text"] == "old news"


async def test_bad_edits_are_refused_naming_the_field(api):
    ada, bob = await api.user(), await api.user()
    message = await direct(api, ada, bob, "x")
    assert (await edit(api, ada, message["_id"], "   ", 400))["code"] == "invalid_text"
    assert (await edit(api, ada, message["_id"], "y" * 4001, 400))["code"] == "invalid_text"
    assert (await edit(api, ada, "abc", "y", 400))["code"] == "invalid_messageId"
    await api.call("DELETE", f"/api/messages/{message['_id']}", ada)
    assert (await edit(api, ada, message["_id"], "back", 404))["code"] == "not_found"


async def test_sync_returns_each_edit_after_the_cursor_and_search_finds_the_new_words(api):
    ada, bob = await api.user(), await api.user()
    message = await direct(api, ada, bob, "meet at granite")
    cursor = message["_id"]

    await edit(api, ada, message["_id"], "meet at limestone")
    await edit(api, ada, message["_id"], "meet at sandstone")

    synced, _ = await api.call("GET", f"/api/messages/sync?after={cursor}", bob)
    assert synced["messages"] == [] and synced["deleted"] == []
    assert [(m["_id"], m["text"]) for m in synced["edited"]] == [(message["_id"], "meet at sandstone")]
    later, _ = await api.call("GET", f"/api/messages/sync?after={synced['next']}", bob)
    assert later["edited"] == [] and later["next"] == synced["next"]
    found, _ = await api.call("GET", "/api/messages/search?q=sandstone", bob)
    gone, _ = await api.call("GET", "/api/messages/search?q=granite", bob)
    assert [m["_id"] for m in found] == [message["_id"]] and gone == []


async def test_a_reply_quotes_the_edited_text(api):
    ada, bob = await api.user(), await api.user()
    original = await direct(api, ada, bob, "typo")
    reply = await direct(api, bob, ada, "?", replyTo=original["_id"])
    await edit(api, ada, original["_id"], "fixed")
    assert (await page(api, ada, bob))[-1]["replyTo"] == {**reply["replyTo"], "text": "fixed"}
