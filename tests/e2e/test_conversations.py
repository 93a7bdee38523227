"""Read receipts, idempotent retries, deletions and rate limits, live across two nodes."""

import aiohttp
import pytest

from services.devtools.stores import free_port
from tests.support import ChatClient
from tests.tally import ATTACK


async def test_mark_read_tells_the_sender_on_every_node(cluster, make_user, connect):
    ada, grace = await make_user(), await make_user()
    ada_a, ada_b = await connect(ada, "a"), await connect(ada, "b")
    reader = await connect(grace, "b")
    await ada_a.call("sendMessage", {"receiverId": grace.id, "text": "one"})
    last = (await ada_a.call("sendMessage", {"receiverId": grace.id, "text": "two"}))["message"]

    ack = await reader.call("markRead", {"userId": ada.id})

    assert ack == {"ok": True, "count": 2, "upTo": last["_id"]}
    for tab in (ada_a, ada_b):
        assert await tab.wait_for("messagesRead") == {"readerId": grace.id, "count": 2, "upTo": last["_id"]}


async def test_rest_read_emits_messages_read_too(cluster, make_user, connect):
    ada, grace = await make_user(), await make_user()
    sender = await connect(ada, "a")
    message = (await sender.call("sendMessage", {"receiverId": grace.id, "text": "read me"}))["message"]
    async with aiohttp.ClientSession(base_url=cluster.gateway_url("b")) as http:
        async with http.put(f"/api/messages/read/{ada.id}", headers=grace.auth_headers) as answer:
            assert answer.status == 200
    assert await sender.wait_for("messagesRead") == {"readerId": grace.id, "count": 1, "upTo": message["_id"]}


async def test_a_retry_with_the_same_client_id_is_delivered_once(make_user, connect):
    ada, grace = await make_user(), await make_user()
    sender = await connect(ada, "a")
    receiver = await connect(grace, "b")
    payload = {"receiverId": grace.id, "text": "exactly once", "clientId": "retry-1"}

    first = await sender.call("sendMessage", payload)
    second = await sender.call("sendMessage", payload)

    assert first["ok"] and second["ok"] and first["message"] == second["message"]
    assert first["message"]["clientId"] == "retry-1"
    await sender.call("sendMessage", {"receiverId": grace.id, "text": "marker"})
    await receiver.wait_for("receiveMessage", lambda message: message["text"] == "marker")
    assert [m["text"] for m in receiver.received("receiveMessage")] == ["exactly once", "marker"]


async def test_deleting_tells_both_sides_on_every_node(cluster, make_user, connect):
    ada, grace = await make_user(), await make_user()
    ada_a = await connect(ada, "a")
    grace_a, grace_b = await connect(grace, "a"), await connect(grace, "b")
    message = (await ada_a.call("sendMessage", {"receiverId": grace.id, "text": "oops"}))["message"]

    async with aiohttp.ClientSession(base_url=cluster.gateway_url("b")) as http:
        async with http.delete(f"/api/messages/{message['_id']}", headers=grace.auth_headers) as answer:
            assert answer.status == 403
        async with http.delete(f"/api/messages/{message['_id']}", headers=ada.auth_headers) as answer:
            assert answer.status == 200

    expected = {"_id": message["_id"], "sender": ada.id, "receiver": grace.id}
    for client in (ada_a, grace_a, grace_b):
        assert await client.wait_for("messageDeleted") == expected


@pytest.fixture
def limited_gateway(cluster):
    """A third gateway node with tight limits: 3 sends, 2 typings, 3 REST calls in a burst."""
    process = cluster.stack.add(
        "gateway",
        "gateway-limited",
        free_port(),
        free_port(),
        {"SEND_BURST": "3", "SEND_RATE_PER_SECOND": "0.5", "TYPING_BURST": "2", "TYPING_RATE_PER_SECOND": "0.5",
         "REST_BURST": "3", "REST_RATE_PER_SECOND": "0.5"},
    )
    process.start()
    process.wait_ready()
    yield process
    process.stop()
    del cluster.stack.processes["gateway-limited"]


@pytest.mark.tally(ATTACK, "a message flood (rate limit, others unaffected)")
async def test_floods_hit_the_rate_limit_and_other_users_are_unaffected(limited_gateway, make_user):
    flooder, victim, bystander = await make_user(), await make_user(), await make_user()
    clients = [ChatClient(limited_gateway.url, user.token) for user in (flooder, bystander)]
    try:
        spammer, other = [await client.connect() for client in clients]
        acks = [await spammer.call("sendMessage", {"receiverId": victim.id, "text": f"spam {n}"}) for n in range(5)]
        assert [ack["ok"] for ack in acks] == [True, True, True, False, False]
        assert acks[3]["error"]["code"] == "rate_limited"
        assert (await spammer.wait_for("messageError"))["code"] == "rate_limited"

        typing_acks = [await spammer.call("typing", victim.id) for _ in range(3)]
        assert [ack["ok"] for ack in typing_acks] == [True, True, False]
        assert typing_acks[2]["error"]["code"] == "rate_limited"

        assert (await other.call("sendMessage", {"receiverId": victim.id, "text": "I am fine"}))["ok"] is True
    finally:
        for client in clients:
            await client.close()

    async with aiohttp.ClientSession(base_url=limited_gateway.url) as http:
        statuses = []
        for _ in range(4):
            async with http.get("/api/messages/conversations", headers=flooder.auth_headers) as answer:
                statuses.append(answer.status)
                body = await answer.json()
        assert statuses == [200, 200, 200, 429]
        assert body["code"] == "rate_limited" and int(answer.headers["Retry-After"]) >= 1
        async with http.get("/api/messages/conversations", headers=bystander.auth_headers) as answer:
            assert answer.status == 200
