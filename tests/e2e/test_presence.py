"""Presence across nodes: once per user, to the people who care, and what is online at connect.

A check that an event did NOT arrive first waits for a marker event that presence would have
sent after it: announcements leave presence in order (routed: one script call at a time, on
each node's channel), and a node's socket changes reach presence in order, one call at a time.
"""

import asyncio

import aiohttp

from tests.support import eventually

# The server clears a `typing` after TYPING_TIMEOUT_SECONDS (1 s in tests' service_env).
TYPING_TIMEOUT_SECONDS = 1.0


async def partners(make_user, connect, grace=None):
    """Two users who have talked (so each cares about, and may see, the other's presence), both
    offline again, with every announcement of that already delivered. `grace` may be given."""
    ada, grace = await make_user(), grace or await make_user()
    first = await connect(ada, "a")
    assert (await first.call("sendMessage", {"receiverId": grace.id, "text": "hi"}))["ok"]
    observer = await connect(grace, "b")
    await first.close()
    await observer.wait_for("userOffline", lambda data: data == ada.id)
    await observer.close()
    return ada, grace


def presence_events(client, user_id):
    return [name for name, data in client.events if name in ("userOnline", "userOffline") and data == user_id]


async def close_on_server(tab, tab_user, watcher, watcher_user) -> None:
    """Closes `tab` and waits until its node has handled the disconnect (and so queued it for
    presence): a disconnect ends the socket's typing, which `watcher` hears well before the
    server's typing timer could have."""
    started = asyncio.get_running_loop().time()
    await tab.sio.emit("typing", watcher_user.id)
    await watcher.wait_for("userTyping", lambda data: data == tab_user.id)
    await tab.close()
    await watcher.wait_for("userStoppedTyping", lambda data: data == tab_user.id)
    assert asyncio.get_running_loop().time() - started < TYPING_TIMEOUT_SECONDS, "stopped by the timer, not the close"


async def online_now(cluster, viewer, user_id) -> None:
    """Raises unless presence says `user_id` is online."""
    async with aiohttp.ClientSession(base_url=cluster.gateway_url("a")) as http:
        async with http.get(f"/api/presence?ids={user_id}", headers=viewer.auth_headers) as answer:
            assert answer.status == 200 and await answer.json() == {"online": [user_id]}


async def test_two_tabs_on_two_nodes_one_online_and_one_offline(make_user, connect):
    ada, grace = await partners(make_user, connect)
    # Markers grace may see (PRESENCE_VISIBILITY is "partners"): they have talked with her.
    marker_a, _ = await partners(make_user, connect, grace)
    marker_b, _ = await partners(make_user, connect, grace)
    watcher = await connect(grace, "b")
    assert (await watcher.call("watchPresence", [marker_a.id, marker_b.id]))["ok"]
    marker_tab_a = await connect(marker_a, "a")
    await watcher.wait_for("userOnline", lambda data: data == marker_a.id)

    tab_a = await connect(ada, "a")
    assert await watcher.wait_for("userOnline", lambda data: data == ada.id) == ada.id
    tab_b = await connect(ada, "b")
    # Node b reports its sockets in order: once marker_b is online, so is ada's second tab.
    marker_tab_b = await connect(marker_b, "b")
    await watcher.wait_for("userOnline", lambda data: data == marker_b.id)
    await close_on_server(tab_a, ada, watcher, grace)
    # Node a reports marker_a's close after tab_a's: a wrong "ada offline" would come first.
    await marker_tab_a.close()
    await watcher.wait_for("userOffline", lambda data: data == marker_a.id)
    assert presence_events(watcher, ada.id) == ["userOnline"]

    await tab_b.close()
    await watcher.wait_for("userOffline", lambda data: data == ada.id)
    await marker_tab_b.close()
    await watcher.wait_for("userOffline", lambda data: data == marker_b.id)
    assert presence_events(watcher, ada.id) == ["userOnline", "userOffline"]


async def test_a_new_socket_learns_which_partners_are_online(cluster, make_user, connect):
    ada, grace = await partners(make_user, connect)
    await connect(ada, "a")
    await eventually(lambda: online_now(cluster, grace, ada.id))

    newcomer = await connect(grace, "b")

    assert ada.id in await newcomer.wait_for("onlineUsers")


async def test_watch_presence_refuses_bad_lists(make_user, connect):
    ada = await make_user()
    client = await connect(ada, "a")
    for payload in ("not a list", [1, 2], ["x" * 65], ["u"] * 501, None):
        ack = await client.call("watchPresence", payload)
        assert ack["ok"] is False and ack["error"]["code"] == "invalid_userIds", payload
