"""Group conversations through real gateways: every member on every node hears, nobody else does.

A check that someone did NOT hear a group's event first waits for a later event that reached a
socket on the same node (and, for removed members, that they would have heard before).
"""

import aiohttp
import pytest

from tests.tally import ATTACK


async def create_group(cluster, creator, members, name="Team") -> dict:
    async with aiohttp.ClientSession(base_url=cluster.gateway_url("a")) as http:
        async with http.post("/api/groups", json={"name": name, "memberIds": [m.id for m in members]},
                             headers=creator.auth_headers) as answer:
            assert answer.status == 201, await answer.text()
            return await answer.json()


async def rest(cluster, method: str, path: str, user, node: str = "a", **kwargs) -> tuple[int, object]:
    async with aiohttp.ClientSession(base_url=cluster.gateway_url(node)) as http:
        async with http.request(method, path, headers=user.auth_headers, **kwargs) as answer:
            return answer.status, await answer.json()


def texts(client, event: str = "receiveMessage") -> list[str]:
    return [data["text"] for data in client.received(event)]


async def test_a_group_message_reaches_every_member_on_every_node_once(cluster, make_user, connect):
    ada, grace, alan, stranger = [await make_user() for _ in range(4)]
    group = await create_group(cluster, ada, [grace, alan])
    ada_a, ada_b = await connect(ada, "a"), await connect(ada, "b")
    grace_b, alan_a, stranger_b = await connect(grace, "b"), await connect(alan, "a"), await connect(stranger, "b")

    ack = await ada_a.call("sendMessage", {"groupId": group["_id"], "text": "hello team", "clientId": "g-1"})
    assert ack["ok"] is True
    message = ack["message"]
    assert message["groupId"] == group["_id"] and message["receiver"] is None
    assert message["sender"]["_id"] == ada.id
    for member in (grace_b, alan_a):
        received = await member.wait_for("receiveMessage", lambda data: data["text"] == "hello team")
        assert received["_id"] == message["_id"] and received["sender"]["userName"] == ada.user_name
    await ada_b.wait_for("messageSent", lambda data: data["_id"] == message["_id"])

    # A retried clientId is stored and delivered once.
    again = await ada_a.call("sendMessage", {"groupId": group["_id"], "text": "hello team", "clientId": "g-1"})
    assert again["message"]["_id"] == message["_id"]
    # The stranger's node (b) delivers a later 1:1 message to them: the group's went by before.
    await ada_a.call("sendMessage", {"receiverId": stranger.id, "text": "marker"})
    await stranger_b.wait_for("receiveMessage", lambda data: data["text"] == "marker")
    await grace_b.call("sendMessage", {"groupId": group["_id"], "text": "marker for grace"})
    for member in (alan_a, ada_a):
        await member.wait_for("receiveMessage", lambda data: data["text"] == "marker for grace")
    assert texts(stranger_b) == ["marker"]
    assert texts(grace_b) == ["hello team"] and texts(alan_a) == ["hello team", "marker for grace"]
    assert texts(ada_a, "receiveMessage") == ["marker for grace"]


@pytest.mark.tally(ATTACK, "group: a non-member sends, types or reads")
async def test_a_stranger_cannot_send_type_or_read_in_a_group(cluster, make_user, connect):
    ada, grace, mallory = [await make_user() for _ in range(3)]
    group = await create_group(cluster, ada, [grace])
    intruder = await connect(mallory, "b")
    for event, payload in (("sendMessage", {"groupId": group["_id"], "text": "let me in"}),
                           ("typing", {"groupId": group["_id"]}),
                           ("stopTyping", {"groupId": group["_id"]})):
        ack = await intruder.call(event, payload)
        assert ack["ok"] is False and ack["error"]["code"] == "not_a_member", (event, ack)
    for method, path in (("GET", f"/api/groups/{group['_id']}"), ("GET", f"/api/groups/{group['_id']}/messages"),
                         ("PUT", f"/api/groups/{group['_id']}/read")):
        status, body = await rest(cluster, method, path, mallory)
        assert (status, body["code"]) == (403, "not_a_member"), (method, path, body)


async def test_typing_in_a_group_names_the_group_and_reaches_the_other_members(cluster, make_user, connect):
    ada, grace, alan = [await make_user() for _ in range(3)]
    group = await create_group(cluster, ada, [grace, alan])
    ada_a, grace_b, alan_a = await connect(ada, "a"), await connect(grace, "b"), await connect(alan, "a")
    assert (await grace_b.call("typing", {"groupId": group["_id"]}))["ok"]
    expected = {"userId": grace.id, "groupId": group["_id"]}
    assert await ada_a.wait_for("userTyping", lambda data: data == expected) == expected
    assert await alan_a.wait_for("userTyping", lambda data: data == expected) == expected
    # Sending ends the typing, for the group, at once.
    assert (await grace_b.call("sendMessage", {"groupId": group["_id"], "text": "done"}))["ok"]
    await ada_a.wait_for("userStoppedTyping", lambda data: data == expected, timeout=0.9)
    await ada_a.wait_for("receiveMessage", lambda data: data["text"] == "done")
    assert grace_b.received("userTyping") == []  # the typist is not told of their own typing


async def test_a_removed_member_hears_it_once_and_then_nothing_of_the_group(cluster, make_user, connect):
    ada, grace, alan = [await make_user() for _ in range(3)]
    group = await create_group(cluster, ada, [grace, alan])
    ada_a, grace_b, alan_b = await connect(ada, "a"), await connect(grace, "b"), await connect(alan, "b")
    status, _ = await rest(cluster, "DELETE", f"/api/groups/{group['_id']}/members/{alan.id}", ada)
    assert status == 200
    removed = await alan_b.wait_for("memberRemoved")
    assert removed == {"groupId": group["_id"], "userId": alan.id}
    await grace_b.wait_for("memberRemoved", lambda data: data["userId"] == alan.id)

    assert (await ada_a.call("sendMessage", {"groupId": group["_id"], "text": "after alan left"}))["ok"]
    # Grace is on alan's node: once she has it, alan would have too.
    await grace_b.wait_for("receiveMessage", lambda data: data["text"] == "after alan left")
    assert texts(alan_b) == [] and alan_b.received("memberRemoved") == [removed]
    ack = await alan_b.call("sendMessage", {"groupId": group["_id"], "text": "still here?"})
    assert ack["error"]["code"] == "not_a_member"


async def test_reads_and_unread_counts_of_a_group_through_the_gateway(cluster, make_user, connect):
    ada, grace = await make_user(), await make_user()
    group = await create_group(cluster, ada, [grace])
    ada_a, grace_b = await connect(ada, "a"), await connect(grace, "b")
    for text in ("one", "two"):
        assert (await ada_a.call("sendMessage", {"groupId": group["_id"], "text": text}))["ok"]
    await grace_b.wait_for("receiveMessage", lambda data: data["text"] == "two")

    status, conversations = await rest(cluster, "GET", "/api/messages/conversations", grace, node="b")
    [entry] = [c for c in conversations if c.get("group")]
    assert status == 200 and entry["_id"]["_id"] == group["_id"] and entry["unreadCount"] == 2
    assert entry["_id"]["memberCount"] == 2 and entry["lastMessage"]["text"] == "two"

    status, read = await rest(cluster, "PUT", f"/api/groups/{group['_id']}/read", grace, node="b")
    assert status == 200 and read["count"] == 2
    receipt = await ada_a.wait_for("groupRead")
    assert receipt == {"groupId": group["_id"], "readerId": grace.id, "upTo": read["upTo"]}
    status, page = await rest(cluster, "GET", f"/api/groups/{group['_id']}/messages", grace, node="b")
    assert [m["text"] for m in page] == ["one", "two"]
