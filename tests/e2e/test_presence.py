"""Presence across nodes: once per user, to the people who care, and what is online at connect."""

import asyncio

import aiohttp


async def partners(make_user, connect):
    """Two users who have talked (so each cares about the other's presence)."""
    ada, grace = await make_user(), await make_user()
    first = await connect(ada, "a")
    assert (await first.call("sendMessage", {"receiverId": grace.id, "text": "hi"}))["ok"]
    await first.close()
    return ada, grace


def presence_events(client, user_id):
    return [name for name, data in client.events if name in ("userOnline", "userOffline") and data == user_id]


async def test_two_tabs_on_two_nodes_one_online_and_one_offline(make_user, connect):
    ada, grace = await partners(make_user, connect)
    watcher = await connect(grace, "b")
    await asyncio.sleep(0.5)
    watcher.events.clear()

    tab_a = await connect(ada, "a")
    assert await watcher.wait_for("userOnline", lambda data: data == ada.id) == ada.id
    tab_b = await connect(ada, "b")
    await tab_a.close()
    await asyncio.sleep(0.6)  # longer than a flush and a heartbeat: any wrong event would be here
    assert presence_events(watcher, ada.id) == ["userOnline"]

    await tab_b.close()
    await watcher.wait_for("userOffline", lambda data: data == ada.id)
    await asyncio.sleep(0.3)
    assert presence_events(watcher, ada.id) == ["userOnline", "userOffline"]


async def test_a_new_socket_learns_which_partners_are_online(make_user, connect):
    ada, grace = await partners(make_user, connect)
    await connect(ada, "a")
    await asyncio.sleep(0.3)

    newcomer = await connect(grace, "b")

    assert ada.id in await newcomer.wait_for("onlineUsers")


async def test_watch_presence_refuses_bad_lists(make_user, connect):
    ada = await make_user()
    client = await connect(ada, "a")
    for payload in ("not a list", [1, 2], ["x" * 65], ["u"] * 501, None):
        ack = await client.call("watchPresence", payload)
        assert ack["ok"] is False and ack["error"]["code"] == "invalid_userIds", payload
