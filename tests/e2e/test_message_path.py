"""The core message path across two real gateway nodes, history, Postgres and Redis."""

import asyncio

import aiohttp
import asyncpg
import pytest
import redis.asyncio as redis

from services.shared.keys import node_channel, sio_channel
from tests.support import TEST_RUN_DIR, ChatClient, create_user, running_cluster

# The server clears a `typing` after TYPING_TIMEOUT_SECONDS (1 s in tests' service_env).
TYPING_TIMEOUT_SECONDS = 1.0
GUIDE_MESSAGE_FIELDS = {"_id", "sender", "receiver", "text", "isRead", "createdAt", "updatedAt"}


async def test_message_reaches_user_on_other_node(cluster, stores, make_user, connect):
    ada, grace = await make_user(), await make_user()
    sender = await connect(ada, "a")
    receiver = await connect(grace, "b")

    ack = await sender.call("sendMessage", {"receiverId": grace.id, "text": "  hello across nodes  "})

    assert ack["ok"] is True
    received = await receiver.wait_for("receiveMessage")
    sent = await sender.wait_for("messageSent")
    assert received == sent == ack["message"]
    assert GUIDE_MESSAGE_FIELDS <= received.keys()
    assert received["text"] == "hello across nodes"
    assert received["sender"]["_id"] == ada.id and received["sender"]["userName"] == ada.user_name
    assert received["receiver"]["_id"] == grace.id
    assert received["isRead"] is False
    connection = await asyncpg.connect(stores.database_url)
    try:
        stored = await connection.fetchrow("SELECT sender_id, receiver_id, text FROM messages WHERE id = $1",
                                           int(received["_id"]))
    finally:
        await connection.close()
    assert tuple(stored) == (ada.id, grace.id, "hello across nodes")


@pytest.fixture
def fresh_cluster(stores):
    """Nodes of their own, to which nobody has connected yet."""
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "fresh") as running:
        yield running


async def test_first_user_of_a_fresh_node_hears_a_message_sent_at_once(fresh_cluster):
    """A node listens from start-up, not from its first connection: nothing sent to its first
    user is lost live (to be recovered only by `sync`)."""
    # Ready (the cluster waited for /readyz) means subscribed, before anyone has connected.
    prefix = fresh_cluster.stack.env["REDIS_PREFIX"]
    channels = [sio_channel(prefix), node_channel(prefix, "gateway-b")]
    client = redis.Redis.from_url(fresh_cluster.stack.env["REDIS_URL"])
    try:
        subscribers = dict(await client.pubsub_numsub(*channels))
    finally:
        await client.aclose()
    assert subscribers[channels[1].encode()] == 1, subscribers  # gateway-b's own channel
    assert subscribers[channels[0].encode()] >= 2, subscribers  # both gateways' shared channel

    ada, grace = [await create_user(fresh_cluster.history_url) for _ in range(2)]
    sender = await ChatClient(fresh_cluster.gateway_url("a"), ada.token).connect()
    receiver = ChatClient(fresh_cluster.gateway_url("b"), grace.token)
    try:
        await receiver.connect()
        ack = await sender.call("sendMessage", {"receiverId": grace.id, "text": "welcome"})

        assert ack["ok"] is True
        assert (await receiver.wait_for("receiveMessage"))["_id"] == ack["message"]["_id"]
    finally:
        await sender.close()
        await receiver.close()


async def test_hundred_messages_arrive_in_order(make_user, connect):
    ada, grace = await make_user(), await make_user()
    sender = await connect(ada, "a")
    receiver = await connect(grace, "b")

    for number in range(100):
        ack = await sender.call("sendMessage", {"receiverId": grace.id, "text": f"message {number}"})
        assert ack["ok"] is True

    await receiver.wait_for("receiveMessage", lambda message: message["text"] == "message 99")
    texts = [message["text"] for message in receiver.received("receiveMessage")]
    assert texts == [f"message {number}" for number in range(100)]


async def test_a_burst_arrives_complete_and_in_the_order_it_was_stored(make_user, connect):
    """200 sends in flight at once: each socket hears them in id order (batches, coalesced writes)."""
    ada, grace = await make_user(), await make_user()
    sender = await connect(ada, "a")
    receiver = await connect(grace, "b")

    acks = await asyncio.gather(*(sender.call("sendMessage", {"receiverId": grace.id, "text": f"burst {n}"})
                                  for n in range(200)))

    assert all(ack["ok"] for ack in acks)
    stored = sorted(int(ack["message"]["_id"]) for ack in acks)
    await receiver.wait_for("receiveMessage", lambda _: len(receiver.received("receiveMessage")) == 200)
    await sender.wait_for("messageSent", lambda _: len(sender.received("messageSent")) == 200)
    assert [int(m["_id"]) for m in receiver.received("receiveMessage")] == stored
    assert [int(m["_id"]) for m in sender.received("messageSent")] == stored


async def test_two_senders_bursting_at_once_each_have_their_messages_stored_in_the_order_sent(make_user, connect):
    """Sends of two sockets arriving interleaved, sharing store calls: each sender's messages take
    ids, and reach the receiver, in the order that sender sent them."""
    ada, alan, grace = await make_user(), await make_user(), await make_user()
    senders = [await connect(ada, "a"), await connect(alan, "a")]
    receiver = await connect(grace, "b")

    acks = await asyncio.gather(*(sender.call("sendMessage", {"receiverId": grace.id, "text": f"{n}-{i}"})
                                  for i in range(100) for n, sender in enumerate(senders)))

    assert all(ack["ok"] for ack in acks)
    for n in range(2):
        ids = [int(ack["message"]["_id"]) for ack in acks[n::2]]
        assert ids == sorted(ids), f"sender {n}'s messages were stored out of the order sent"
    await receiver.wait_for("receiveMessage", lambda _: len(receiver.received("receiveMessage")) == 200)
    for n in range(2):
        texts = [m["text"] for m in receiver.received("receiveMessage") if m["text"].startswith(f"{n}-")]
        assert texts == [f"{n}-{i}" for i in range(100)]


async def test_sends_that_arrive_together_share_history_calls(cluster, make_user, connect):
    """Group commit: 60 sends in flight at once on one node take fewer calls than messages."""
    senders = [await make_user() for _ in range(6)]
    grace = await make_user()
    sockets = [await connect(user, "a") for user in senders]
    receiver = await connect(grace, "b")
    before = await store_batches(cluster.gateway_internal_url("a"))

    acks = await asyncio.gather(*(socket.call("sendMessage", {"receiverId": grace.id, "text": f"{n}-{i}"})
                                  for n, socket in enumerate(sockets) for i in range(10)))

    assert all(ack["ok"] for ack in acks)
    assert len({ack["message"]["_id"] for ack in acks}) == 60
    await receiver.wait_for("receiveMessage", lambda _: len(receiver.received("receiveMessage")) == 60)
    calls, messages = (after - earlier for after, earlier in zip(await store_batches(cluster.gateway_internal_url("a")), before))
    assert messages == 60 and calls < 60, (calls, messages)


@pytest.fixture
def paced_cluster(stores):
    """One node whose store calls, while busy, start a whole second apart (and no rate limit)."""
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "paced", nodes=("a",),
                         STORE_CALL_INTERVAL_SECONDS="1", SEND_RATE_PER_SECOND="1000", SEND_BURST="1000") as running:
        yield running


async def test_store_calls_are_paced_only_while_sends_wait(paced_cluster):
    url = paced_cluster.gateway_url("a")
    users = [await create_user(paced_cluster.history_url) for _ in range(4)]
    grace = users[0]
    sockets = [await ChatClient(url, user.token).connect() for user in users[1:]]
    try:
        # One after another, as a person types: each send finds no call under way, leaves at once.
        loop = asyncio.get_running_loop()
        for number in range(5):
            started = loop.time()
            ack = await sockets[0].call("sendMessage", {"receiverId": grace.id, "text": f"turn {number}"})
            assert ack["ok"] is True
            assert loop.time() - started < 0.5, "a lone send waited for the pace"

        # A burst larger than one call may carry (256): what waits leaves together, a second later.
        calls_before, messages_before = await store_batches(paced_cluster.gateway_internal_url("a"))
        started = loop.time()
        acks = await asyncio.gather(*(socket.call("sendMessage", {"receiverId": grace.id, "text": f"{n}-{i}"},
                                                  timeout=10)
                                      for n, socket in enumerate(sockets) for i in range(100)))
        elapsed = loop.time() - started
        calls_after, messages_after = await store_batches(paced_cluster.gateway_internal_url("a"))

        assert all(ack["ok"] for ack in acks)
        assert messages_after - messages_before == 300
        assert 2 <= calls_after - calls_before <= 4, calls_after - calls_before
        assert elapsed >= 0.9, elapsed
    finally:
        for socket in sockets:
            await socket.close()


async def store_batches(gateway_internal_url: str) -> tuple[float, float]:
    """The gateway's (calls to history, messages stored by them) so far."""
    async with aiohttp.ClientSession() as http, http.get(gateway_internal_url + "/metrics") as answer:
        lines = (await answer.text()).splitlines()
    value = {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("parley_gateway_store_batch")}
    return value["parley_gateway_store_batch_messages_count"], value["parley_gateway_store_batch_messages_sum"]


async def test_guide_client_without_ack_gets_message_sent(make_user, connect):
    ada, grace = await make_user(), await make_user()
    sender = await connect(ada, "a")
    receiver = await connect(grace, "b")

    await sender.sio.emit("sendMessage", {"receiverId": grace.id, "text": "no callback"})

    assert (await sender.wait_for("messageSent"))["text"] == "no callback"
    assert (await receiver.wait_for("receiveMessage"))["text"] == "no callback"


async def test_every_tab_of_both_users_on_both_nodes_hears(make_user, connect):
    ada, grace = await make_user(), await make_user()
    ada_a, ada_b = await connect(ada, "a"), await connect(ada, "b")
    grace_a, grace_b = await connect(grace, "a"), await connect(grace, "b")

    await ada_a.call("sendMessage", {"receiverId": grace.id, "text": "to all tabs"})

    for tab in (grace_a, grace_b):
        assert (await tab.wait_for("receiveMessage"))["text"] == "to all tabs"
    for tab in (ada_a, ada_b):
        assert (await tab.wait_for("messageSent"))["text"] == "to all tabs"


async def test_typing_is_relayed_and_cleared_by_the_server(make_user, connect):
    ada, grace = await make_user(), await make_user()
    typist = await connect(ada, "a")
    watcher = await connect(grace, "b")

    await typist.sio.emit("typing", grace.id)
    assert await watcher.wait_for("userTyping") == ada.id
    # No stopTyping: the server clears it after TYPING_TIMEOUT_SECONDS (1 s in tests).
    started = asyncio.get_running_loop().time()
    assert await watcher.wait_for("userStoppedTyping", timeout=4) == ada.id
    assert asyncio.get_running_loop().time() - started >= 0.5

    watcher.events.clear()
    typed = asyncio.get_running_loop().time()
    await typist.sio.emit("typing", grace.id)
    await watcher.wait_for("userTyping")
    await typist.sio.emit("stopTyping", grace.id)
    assert await watcher.wait_for("userStoppedTyping", timeout=0.8) == ada.id
    # The server's timer, started after our `typing` left, could not have fired yet: this stop is ours.
    assert asyncio.get_running_loop().time() - typed < TYPING_TIMEOUT_SECONDS


async def test_a_typist_who_disconnects_is_shown_stopped_at_once_to_everyone_they_typed_to(make_user, connect):
    ada, grace, hopper = await make_user(), await make_user(), await make_user()
    typist = await connect(ada, "a")
    watchers = [await connect(grace, "b"), await connect(hopper, "a")]

    typed = asyncio.get_running_loop().time()
    for watcher, user in zip(watchers, (grace, hopper)):
        await typist.sio.emit("typing", user.id)
        assert await watcher.wait_for("userTyping") == ada.id
    await typist.sio.disconnect()

    for watcher in watchers:
        assert await watcher.wait_for("userStoppedTyping", timeout=0.8) == ada.id
    # Both before the first timer could fire: the disconnect stopped them, not the timers.
    assert asyncio.get_running_loop().time() - typed < TYPING_TIMEOUT_SECONDS


async def test_rest_through_the_gateway_follows_the_guide(cluster, make_user, connect):
    ada, grace = await make_user(), await make_user()
    sender = await connect(ada, "a")
    await sender.call("sendMessage", {"receiverId": grace.id, "text": "first"})
    await sender.call("sendMessage", {"receiverId": grace.id, "text": "second"})

    async with aiohttp.ClientSession(base_url=cluster.gateway_url("b")) as http:
        async with http.get("/api/messages/conversations", headers=grace.auth_headers) as answer:
            assert answer.status == 200
            conversations = await answer.json()
        async with http.get(f"/api/messages/{ada.id}", cookies={"token": grace.token}) as answer:
            assert answer.status == 200
            page = await answer.json()
        async with http.put(f"/api/messages/read/{ada.id}", headers=grace.auth_headers) as answer:
            assert answer.status == 200
            read = await answer.json()

    assert len(conversations) == 1
    assert conversations[0]["_id"]["_id"] == ada.id and conversations[0]["_id"]["userName"] == ada.user_name
    assert conversations[0]["lastMessage"]["text"] == "second"
    assert conversations[0]["unreadCount"] == 2
    assert [message["text"] for message in page] == ["first", "second"]
    assert read["message"] == "Messages marked as read" and read["count"] == 2
