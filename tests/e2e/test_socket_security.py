"""The socket handshake and presence, attacked from outside: raw frames and requests against real nodes."""

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
import socketio

from tests.e2e.rawsocket import RawSocket
from tests.support import TEST_RUN_DIR, ChatClient, create_user, eventually, running_cluster
from tests.tally import ATTACK

CONNECT_TIMEOUT_SECONDS = 1
MAX_SOCKETS_PER_USER = 3
BURST = 3  # watchPresence / markRead burst on the strict node, with a rate too slow to refill in a test
BINARY_REFUSED = "binary Socket.IO packet refused"

CHUNK = 32 * 1024  # under the 64 KiB frame limit, so the frames themselves are all acceptable
STREAM_BYTES = 100 * 1024 * 1024
MEMORY_GROWTH_LIMIT = 10 * 1024 * 1024
STREAM_TIME_LIMIT_SECONDS = 60


@pytest.fixture(scope="module")
def strict_node(stores):
    """One node of the module's own: short CONNECT deadline, few sockets per user, small buckets,
    and PRESENCE_VISIBILITY=everyone (the shared cluster keeps the default, partners)."""
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "socket-security", nodes=("a",),
                         CONNECT_TIMEOUT_SECONDS=str(CONNECT_TIMEOUT_SECONDS),
                         MAX_SOCKETS_PER_USER=str(MAX_SOCKETS_PER_USER),
                         PRESENCE_BURST=str(BURST), PRESENCE_RATE_PER_SECOND="0.001",
                         READ_BURST=str(BURST), READ_RATE_PER_SECOND="0.001",
                         PRESENCE_VISIBILITY="everyone") as running:
        yield running


def log_path(cluster, node: str) -> Path:
    return cluster.stack[f"gateway-{node}"].log_path


def new_warnings(cluster, node: str, since: int, text: str) -> list[str]:
    lines = log_path(cluster, node).read_text(errors="replace")[since:].splitlines()
    return [line for line in lines if '"level": "warning"' in line and text in line]


def log_size(cluster, node: str) -> int:
    return len(log_path(cluster, node).read_text(errors="replace"))


async def handshake(url: str, headers: dict[str, str], auth: dict | None = None) -> str:
    """The answer to a Socket.IO CONNECT over a raw websocket: "40{...}" connected, "44{...}" refused."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url + "/socket.io/?EIO=4&transport=websocket", headers=headers) as ws:
            assert (await ws.receive_str(timeout=5)).startswith("0{")
            await ws.send_str("40" + (json.dumps(auth) if auth else ""))
            return await ws.receive_str(timeout=5)


# --- JSONP ---------------------------------------------------------------------------------------

@pytest.mark.tally(ATTACK, "JSONP polling (j=)")
async def test_jsonp_polling_is_refused_before_any_session(cluster):
    since = log_size(cluster, "a")
    async with aiohttp.ClientSession() as http:
        async with http.get(cluster.gateway_url("a") + "/socket.io/?EIO=4&transport=polling&j=0") as answer:
            body = await answer.text()
            assert answer.status == 400, body
    assert '"sid"' not in body  # no engine.io session was opened
    assert len(new_warnings(cluster, "a", since, "JSONP polling refused")) == 1


# --- the token cookie ----------------------------------------------------------------------------

@pytest.mark.tally(ATTACK, "token cookie without a trusted Origin")
async def test_the_token_cookie_counts_only_from_a_trusted_origin(cluster, make_user):
    ada = await make_user()
    url = cluster.gateway_url("a")
    cookie = {"Cookie": f"token={ada.token}"}

    # A script or a page's websocket with no Origin (or one the browser would not send): refused.
    assert (await handshake(url, cookie)).startswith('44{"message":"Authentication error"')
    # The allow-listed page and the gateway's own page: signed in by the cookie.
    assert (await handshake(url, {**cookie, "Origin": "http://allowed.example"})).startswith("40{")
    assert (await handshake(url, {**cookie, "Origin": url})).startswith("40{")
    # What only a holder of the token can send works from anywhere, as before.
    assert (await handshake(url, {"Authorization": f"Bearer {ada.token}"})).startswith("40{")
    assert (await handshake(url, {}, auth={"token": ada.token})).startswith("40{")


# --- binary packets ------------------------------------------------------------------------------

def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def server_answer(ws: aiohttp.ClientWebSocketResponse) -> str:
    """"closed" once the server closes the websocket, or the ack (43...) had it taken the whole event."""
    while (message := await ws.receive()).type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
        if message.type == aiohttp.WSMsgType.TEXT and message.data.startswith("431"):
            return message.data
    return "closed"


@pytest.mark.tally(ATTACK, "100 MB of binary attachments after a binary-event header")
async def test_a_binary_event_header_closes_the_socket_before_its_attachments_are_kept(strict_node):
    url = strict_node.gateway_url("a")
    pid = strict_node.stack["gateway-a"].process.pid
    ada = await create_user(strict_node.history_url)
    raw = await RawSocket.open(url, ada.token)
    since = log_size(strict_node, "a")
    frames = STREAM_BYTES // CHUNK
    chunk = b"\xab" * CHUNK
    before = peak = resident_bytes(pid)
    answer = asyncio.ensure_future(server_answer(raw.ws))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_TIME_LIMIT_SECONDS
    sent = 0
    try:
        # A BINARY_EVENT (5) announcing one attachment per frame to come, with ack id 1.
        await raw.ws.send_str(f'45{frames}-1["sendMessage",{{"_placeholder":true,"num":0}}]')
        # Bounded by the frame count and the clock; it stops by itself when the server answers.
        while sent < frames and not answer.done() and loop.time() < deadline:
            try:
                await raw.ws.send_bytes(chunk)
            except (ConnectionError, aiohttp.ClientError):
                break
            sent += 1
            if sent % 100 == 0:
                peak = max(peak, resident_bytes(pid))
        await asyncio.wait([answer], timeout=10)
        peak = max(peak, resident_bytes(pid))
    finally:
        answer.cancel()
        await raw.close()

    assert peak - before < MEMORY_GROWTH_LIMIT, f"the gateway grew {(peak - before) >> 20} MiB over {sent} frames"
    # Closed, never acknowledged. (How many frames the client got into the kernel's buffers
    # before the close reached it depends on the machine's load; the memory bound above is what
    # shows nothing was kept.)
    assert answer.done() and not answer.cancelled() and answer.result() == "closed"
    assert len(new_warnings(strict_node, "a", since, BINARY_REFUSED)) == 1
    # The node still serves.
    assert (await handshake(url, {}, auth={"token": ada.token})).startswith("40{")


@pytest.mark.tally(ATTACK, "binary Socket.IO event (client library)")
@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_binary_event_closes_that_connection_on_either_transport(cluster, make_user, connect, transport):
    ada, grace = await make_user(), await make_user()
    since = log_size(cluster, "b")
    client = await connect(ada, "b", transports=(transport,))
    await client.sio.emit("sendMessage", {"receiverId": grace.id, "text": "fine", "clientId": b"\x00\xff"})
    async def closed_by_the_node():  # engine.io's close reaches the client within a poll
        assert not client.sio.connected

    await eventually(closed_by_the_node)
    assert len(new_warnings(cluster, "b", since, BINARY_REFUSED)) == 1
    again = await connect(ada, "b", transports=(transport,))
    assert (await again.call("sendMessage", {"receiverId": grace.id, "text": "text only"}))["ok"]


# --- CONNECT deadline and sockets per user ---------------------------------------------------------

@pytest.mark.tally(ATTACK, "engine.io session that never signs in")
async def test_a_session_without_connect_is_closed_after_the_deadline(strict_node):
    url = strict_node.gateway_url("a")
    ada = await create_user(strict_node.history_url)
    signed_in = await RawSocket.open(url, ada.token)  # its deadline passes before the idle one's
    started = asyncio.get_running_loop().time()
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url + "/socket.io/?EIO=4&transport=websocket") as idle:
            assert (await idle.receive_str(timeout=5)).startswith("0{")
            while (message := await idle.receive(timeout=CONNECT_TIMEOUT_SECONDS + 4)).type == aiohttp.WSMsgType.TEXT:
                if message.data == "2":
                    await idle.send_str("3")  # a live client: only the missing CONNECT counts
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), message
    assert asyncio.get_running_loop().time() - started < CONNECT_TIMEOUT_SECONDS + 3
    try:
        await signed_in.send_event('["typing","someone"]')
        assert (await signed_in.receive_until_ack())[0]["ok"] is True  # the signed-in socket stays
    finally:
        await signed_in.close()


@pytest.mark.tally(ATTACK, "sockets beyond MAX_SOCKETS_PER_USER")
async def test_a_user_beyond_the_socket_limit_is_refused_clearly(strict_node):
    url = strict_node.gateway_url("a")
    ada, grace = await create_user(strict_node.history_url), await create_user(strict_node.history_url)
    clients = [await ChatClient(url, ada.token).connect() for _ in range(MAX_SOCKETS_PER_USER)]
    extra = ChatClient(url, ada.token)
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await extra.connect()
        assert extra.received("connect_error") == [{"message": "Too many connections"}]
        clients.append(await ChatClient(url, grace.token).connect())  # others are unaffected

        await clients.pop(0).close()
        for _ in range(100):  # the node hears of the closed socket
            retry = ChatClient(url, ada.token)
            try:
                clients.append(await retry.connect())
                break
            except socketio.exceptions.ConnectionError:
                await asyncio.sleep(0.05)
        assert all(client.sio.connected for client in clients)
    finally:
        for client in clients:
            await client.close()


# --- token buckets -----------------------------------------------------------------------------------

@pytest.mark.tally(ATTACK, "watchPresence / markRead flood")
@pytest.mark.parametrize("event", ["watchPresence", "markRead"])
async def test_presence_and_read_floods_are_rate_limited(strict_node, event):
    ada, grace = await create_user(strict_node.history_url), await create_user(strict_node.history_url)
    client = await ChatClient(strict_node.gateway_url("a"), ada.token).connect()
    payload = [grace.id] if event == "watchPresence" else {"userId": grace.id}
    try:
        acks = [await client.call(event, payload) for _ in range(BURST + 1)]
        assert all(ack["ok"] for ack in acks[:BURST]), acks
        assert acks[BURST]["ok"] is False and acks[BURST]["error"]["code"] == "rate_limited"
        assert (await client.wait_for("messageError"))["code"] == "rate_limited"
    finally:
        await client.close()


@pytest.mark.tally(ATTACK, "watchPresence / markRead flood")
async def test_rest_presence_shares_the_watch_presence_bucket(strict_node):
    ada, grace = await create_user(strict_node.history_url), await create_user(strict_node.history_url)
    client = await ChatClient(strict_node.gateway_url("a"), ada.token).connect()
    try:
        for _ in range(BURST):
            assert (await client.call("watchPresence", [grace.id]))["ok"]
    finally:
        await client.close()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{strict_node.gateway_url('a')}/api/presence?ids={grace.id}",
                            headers=ada.auth_headers) as answer:
            assert answer.status == 429 and (await answer.json())["code"] == "rate_limited"


# --- presence privacy --------------------------------------------------------------------------------

def presence_events(client: ChatClient, user_id: str) -> list[str]:
    return [name for name, data in client.events if name in ("userOnline", "userOffline") and data == user_id]


@pytest.mark.tally(ATTACK, "presence of non-partners (watchPresence, /api/presence)")
async def test_strangers_learn_nothing_of_presence_even_when_they_watch(cluster, make_user, connect):
    ada, grace, mallory = await make_user(), await make_user(), await make_user()
    first = await connect(ada, "a")
    assert (await first.call("sendMessage", {"receiverId": grace.id, "text": "hi"}))["ok"]  # partners now
    stranger = await connect(mallory, "b")
    partner = await connect(grace, "b")
    if ada.id not in await partner.wait_for("onlineUsers"):  # presence had not heard of ada yet
        await partner.wait_for("userOnline", lambda data: data == ada.id)

    assert await stranger.call("watchPresence", [ada.id]) == {"ok": True, "online": []}
    assert await partner.call("watchPresence", [ada.id]) == {"ok": True, "online": [ada.id]}
    async with aiohttp.ClientSession(base_url=cluster.gateway_url("a")) as http:
        async def mallory_sees_only_herself():
            # Her own socket reaches presence in node b's next batch: poll until it has.
            async with http.get(f"/api/presence?ids={ada.id},{mallory.id}", headers=mallory.auth_headers) as answer:
                assert answer.status == 200 and await answer.json() == {"online": [mallory.id]}

        await eventually(mallory_sees_only_herself)
        async with http.get(f"/api/presence?ids={ada.id},{mallory.id}", headers=grace.auth_headers) as answer:
            assert answer.status == 200 and await answer.json() == {"online": [ada.id]}

    await first.close()
    # The partner, on the stranger's node, hears ada go: any event for the stranger would be here too.
    await partner.wait_for("userOffline", lambda data: data == ada.id)
    assert presence_events(stranger, ada.id) == []


async def test_with_everyone_visibility_a_stranger_who_watches_hears_presence(strict_node):
    """The opt-out (PRESENCE_VISIBILITY=everyone) keeps the old behaviour: watching is enough."""
    url = strict_node.gateway_url("a")
    ada, mallory = await create_user(strict_node.history_url), await create_user(strict_node.history_url)
    tab = await ChatClient(url, ada.token).connect()
    stranger = await ChatClient(url, mallory.token).connect()
    try:
        ack = await stranger.call("watchPresence", [ada.id])
        assert ack["ok"], ack
        if ack["online"] != [ada.id]:  # presence had not heard of ada yet: the watcher hears it do so
            await stranger.wait_for("userOnline", lambda data: data == ada.id)
        await tab.close()
        await stranger.wait_for("userOffline", lambda data: data == ada.id)
    finally:
        await tab.close()
        await stranger.close()
