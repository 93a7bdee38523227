"""Web Push end to end (issue 18): a message to someone not looking reaches their browser's push
service encrypted (RFC 8291) and signed (RFC 8292), through history's relay, the job stream and
the notifier; visibility, collapse, mutes and the hide-text setting decide what is sent."""


import asyncpg
import redis.asyncio

from services.shared.keys import PUSH_CONSUMER_GROUP, push_stream_key
from tests.notifications.receiver import PushReceiver
from tests.support import eventually


async def send(client, to: dict, text: str) -> str:
    ack = await client.call("sendMessage", {**to, "text": text})
    assert ack["ok"], ack
    return ack["message"]["_id"]


async def test_a_message_to_someone_not_looking_is_pushed_encrypted_and_signed(
        cluster, receiver: PushReceiver, make_user, connect, subscribe, api):
    ada, grace = await make_user("ada-push"), await make_user()
    status, body = await api("GET", "/api/push/vapid-public-key", grace)
    assert (status, body) == (200, {"publicKey": cluster.vapid_public_key})
    browser = receiver.new_browser()
    await subscribe(grace, browser)
    sender = await connect(ada)
    message_id = await send(sender, {"receiverId": grace.id}, "lunch at noon?")

    await receiver.wait_for(lambda: receiver.pushes_to(browser))
    [push] = receiver.pushes_to(browser)
    assert push.payload["title"] == "Ada-Push"
    assert push.payload["body"] == "lunch at noon?"
    assert push.payload["tag"] == f"user:{ada.id}"
    assert push.payload["conversation"] == {"kind": "user", "id": ada.id}
    assert push.payload["messageIds"] == [message_id]
    assert push.ttl > 0 and push.topic


async def relayed(cluster, message_id: str) -> None:
    """Until the relay has taken this message (its cursor in Postgres is past it)."""
    database = await asyncpg.connect(cluster.stack.env["DATABASE_URL"])
    try:
        async def past() -> None:
            assert await database.fetchval("SELECT relayed_through FROM push_relay WHERE stream = $1",
                                           cluster.stack.env["REDIS_PREFIX"]) >= int(message_id)

        await eventually(past)
    finally:
        await database.close()


async def test_a_visible_tab_stops_pushes_and_a_hidden_one_does_not(cluster, receiver, make_user, connect, subscribe):
    ada, grace = await make_user(), await make_user()
    browser = receiver.new_browser()
    await subscribe(grace, browser)
    sender = await connect(ada)
    tab = await connect(grace, node="b")  # the other node: visibility is shared through Redis
    assert (await tab.call("visibility", {"visible": True}))["ok"]
    while_looking = await send(sender, {"receiverId": grace.id}, "you are looking")
    await relayed(cluster, while_looking)
    assert (await tab.call("visibility", {"visible": False}))["ok"]
    while_hidden = await send(sender, {"receiverId": grace.id}, "you are not")

    # The relay takes messages in id order: the second's push proves it passed the first.
    await receiver.wait_for(lambda: while_hidden in receiver.message_ids_to(browser))
    assert while_looking not in receiver.message_ids_to(browser)


async def test_a_closed_tab_no_longer_counts_as_looking(receiver, make_user, connect, subscribe):
    ada, grace = await make_user(), await make_user()
    browser = receiver.new_browser()
    await subscribe(grace, browser)
    sender = await connect(ada)
    tab = await connect(grace)
    assert (await tab.call("visibility", {"visible": True}))["ok"]
    await tab.close()
    other = await connect(await make_user())  # a later event on node a: the disconnect was handled
    await other.call("visibility", {"visible": False})

    async def pushed() -> None:
        message_id = await send(sender, {"receiverId": grace.id}, "are you there?")
        await receiver.wait_for(lambda: message_id in receiver.message_ids_to(browser), timeout=3)

    await pushed()


async def test_several_messages_within_the_window_make_one_notification(receiver, make_user, connect, subscribe):
    ada, grace = await make_user("ada-burst"), await make_user()
    browser = receiver.new_browser()
    await subscribe(grace, browser)
    sender = await connect(ada)
    sent = [await send(sender, {"receiverId": grace.id}, f"part {n}") for n in range(3)]

    await receiver.wait_for(lambda: receiver.pushes_to(browser) and receiver.pushes_to(browser)[-1].payload["count"] == 3)
    pushes = receiver.pushes_to(browser)
    assert len(pushes) <= 2, [push.payload for push in pushes]  # the first may go alone, at once
    assert sorted(receiver.message_ids_to(browser)) == sorted(sent)  # each once
    assert pushes[-1].payload["body"] == "3 new messages from Ada-Burst"
    assert len({push.topic for push in pushes}) == 1  # one Topic per conversation


async def test_a_group_message_is_pushed_to_each_member_not_looking(receiver, make_user, connect, subscribe, api):
    ada, grace, alan = await make_user("ada-group"), await make_user(), await make_user()
    status, group = await api("POST", "/api/groups", ada, json={"name": "Engines", "memberIds": [grace.id, alan.id]})
    assert status == 201, group
    browsers = {user.id: receiver.new_browser() for user in (ada, grace, alan)}
    for user in (ada, grace, alan):
        await subscribe(user, browsers[user.id])
    message_id = await send(await connect(ada), {"groupId": group["_id"]}, "to all")

    await receiver.wait_for(lambda: all(message_id in receiver.message_ids_to(browsers[u.id]) for u in (grace, alan)))
    push = receiver.pushes_to(browsers[grace.id])[0]
    assert push.payload["title"] == "Ada-Group in Engines"
    assert push.payload["tag"] == f"group:{group['_id']}"
    assert receiver.pushes_to(browsers[ada.id]) == []  # never to the sender


async def test_mutes_and_the_hidden_text_setting_are_respected(receiver, make_user, connect, subscribe, api):
    ada, alan, grace = await make_user(), await make_user(), await make_user()
    browser = receiver.new_browser()
    await subscribe(grace, browser)
    status, group = await api("POST", "/api/groups", ada, json={"name": "Quiet", "memberIds": [grace.id]})
    assert status == 201
    assert (await api("PUT", f"/api/conversations/user:{ada.id}/mute", grace, json={}))[0] == 200
    assert (await api("PUT", f"/api/conversations/group:{group['_id']}/mute", grace,
                      json={"until": "2999-01-01T00:00:00Z"}))[0] == 200
    # A mute that has ended mutes nothing.
    assert (await api("PUT", f"/api/conversations/user:{alan.id}/mute", grace,
                      json={"until": "2020-01-01T00:00:00Z"}))[0] == 200
    ada_socket, alan_socket = await connect(ada), await connect(alan)
    muted_direct = await send(ada_socket, {"receiverId": grace.id}, "muted 1:1")
    muted_group = await send(ada_socket, {"groupId": group["_id"]}, "muted group")
    from_alan = await send(alan_socket, {"receiverId": grace.id}, "not muted")
    await receiver.wait_for(lambda: from_alan in receiver.message_ids_to(browser))
    assert not {muted_direct, muted_group} & set(receiver.message_ids_to(browser))

    assert (await api("DELETE", f"/api/conversations/user:{ada.id}/mute", grace))[0] == 200
    assert await api("PUT", "/api/push/settings", grace, json={"hideText": True}) == (200, {"hideText": True})
    assert await api("GET", "/api/push/settings", grace) == (200, {"hideText": True})
    unmuted = await send(ada_socket, {"receiverId": grace.id}, "secret plans")
    await receiver.wait_for(lambda: unmuted in receiver.message_ids_to(browser))
    push = next(p for p in receiver.pushes_to(browser) if unmuted in p.payload["messageIds"])
    assert push.payload["body"] == "New message"
    assert "secret plans" not in str(push.payload)


async def test_a_gone_subscription_is_removed_and_its_job_acknowledged(cluster, receiver, make_user, connect, subscribe):
    ada, grace = await make_user(), await make_user()
    gone, kept = receiver.new_browser(), receiver.new_browser()
    await subscribe(grace, gone)
    await subscribe(grace, kept)
    receiver.script(gone, (410, {}))
    message_id = await send(await connect(ada), {"receiverId": grace.id}, "one of two")
    await receiver.wait_for(lambda: message_id in receiver.message_ids_to(kept))
    await receiver.wait_for(lambda: any(a.endpoint == gone.endpoint and a.status == 410 for a in receiver.attempts))

    database = await asyncpg.connect(cluster.stack.env["DATABASE_URL"])
    client = redis.asyncio.Redis.from_url(cluster.stack.env["REDIS_URL"])
    try:
        async def settled() -> None:  # the notifier removes the row and acknowledges after the 410 answer
            endpoints = {row["endpoint"] for row in await database.fetch(
                "SELECT endpoint FROM push_subscriptions WHERE user_id = $1", grace.id)}
            pending = await client.xpending(push_stream_key(cluster.stack.env["REDIS_PREFIX"]), PUSH_CONSUMER_GROUP)
            assert endpoints == {kept.endpoint} and pending["pending"] == 0

        await eventually(settled, timeout=10, interval=0.05)
    finally:
        await database.close()
        await client.aclose()


async def test_5xx_and_429_are_retried_honouring_retry_after(receiver, make_user, connect, subscribe):
    ada, grace = await make_user(), await make_user()
    browser = receiver.new_browser()
    await subscribe(grace, browser)
    receiver.script(browser, (500, {}), (503, {}), (429, {"Retry-After": "1"}))
    message_id = await send(await connect(ada), {"receiverId": grace.id}, "eventually")
    await receiver.wait_for(lambda: message_id in receiver.message_ids_to(browser), timeout=15)
    statuses = [a.status for a in receiver.attempts if a.endpoint == browser.endpoint]
    assert statuses == [500, 503, 429, 201]
    answered_429, delivered = [a.at for a in receiver.attempts if a.endpoint == browser.endpoint][2:]
    assert delivered - answered_429 >= 0.95  # Retry-After: 1, not the 0.4 s backoff
    assert receiver.message_ids_to(browser) == [message_id]  # once
