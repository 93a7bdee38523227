"""The gateway's websocket transport: upgrades from long-polling, no deflate, slow clients cut off."""

import asyncio
import socket

import aiohttp
import pytest

from tests.support import TEST_RUN_DIR, ChatClient, create_user, eventually, running_cluster


async def upgraded(client: ChatClient) -> None:
    assert client.sio.transport() == "websocket"


async def none_connected(http: aiohttp.ClientSession, url: str) -> None:
    assert await sockets_connected(http, url) == 0


async def test_a_long_polling_client_upgrades_to_websocket_and_chats(make_user, connect):
    ada, grace = await make_user(), await make_user()
    sender = await connect(ada, "a", transports=("polling", "websocket"))
    receiver = await connect(grace, "b", transports=("polling", "websocket"))
    for client in (sender, receiver):
        await eventually(lambda: upgraded(client))

    acks = [await sender.call("sendMessage", {"receiverId": grace.id, "text": f"upgraded {n}"}) for n in range(5)]

    assert all(ack["ok"] for ack in acks)
    await receiver.wait_for("receiveMessage", lambda message: message["text"] == "upgraded 4")
    assert [message["text"] for message in receiver.received("receiveMessage")] == [f"upgraded {n}" for n in range(5)]
    assert len(sender.received("messageSent")) == 5


async def test_per_message_deflate_is_refused(cluster, make_user):
    """Browsers offer it; accepting held ~100 KiB of zlib state per socket (Socket.IO's default is off too)."""
    ada = await make_user()
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(cluster.gateway_url("a") + "/socket.io/?EIO=4&transport=websocket",
                                   compress=15) as ws:
            assert "Sec-WebSocket-Extensions" not in ws._response.headers
            assert ws.compress == 0
            assert (await ws.receive_str(timeout=5)).startswith("0{")
            await ws.send_str('40{"token": "%s"}' % ada.token)
            assert (await ws.receive_str(timeout=5)).startswith("40{")


@pytest.fixture
def tight_cluster(stores):
    """One node that cuts a client off at 64 KiB unread, with send limits out of the way."""
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "slow-client", nodes=("a",),
                         SLOW_CLIENT_BUFFER_BYTES="65536", SEND_RATE_PER_SECOND="100000",
                         SEND_BURST="100000") as running:
        yield running


def small_receive_buffer(addr_info) -> socket.socket:
    """A client socket whose kernel buffer holds little, so unread frames soon wait at the node."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    return sock


async def test_a_client_that_stops_reading_is_cut_off_without_holding_anyone_up(tight_cluster):
    url = tight_cluster.gateway_url("a")
    ada, grace, alan = [await create_user(tight_cluster.history_url) for _ in range(3)]
    sender = await ChatClient(url, ada.token).connect()
    healthy = await ChatClient(url, alan.token).connect()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=small_receive_buffer)) as http:
        # grace connects and then never reads: her frames pile up in the kernel, then in the node.
        stalled = await http.ws_connect(url + "/socket.io/?EIO=4&transport=websocket")
        assert (await stalled.receive_str(timeout=5)).startswith("0{")
        await stalled.send_str('40{"token": "%s"}' % grace.token)
        assert (await stalled.receive_str(timeout=5)).startswith("40{")
        text = "x" * 3900
        try:
            acks = []
            for round_ in range(10):  # up to 7 MB for grace, while alan hears every 10th message
                acks += await asyncio.gather(*(
                    sender.call("sendMessage", {"receiverId": alan.id if n % 10 == 0 else grace.id,
                                                "text": f"{round_}-{n} {text}"}, timeout=20)
                    for n in range(200)))
                assert all(ack["ok"] for ack in acks), [ack for ack in acks if not ack["ok"]][:1]
                async with http.get(tight_cluster.gateway_internal_url("a") + "/metrics") as answer:
                    metrics = await answer.text()
                if "parley_gateway_slow_clients_disconnected_total 1.0" in metrics:
                    break
            else:
                pytest.fail("the stalled client was never cut off")

            expected = len(acks) // 10
            await healthy.wait_for("receiveMessage", lambda _: len(healthy.received("receiveMessage")) >= expected,
                                   timeout=10)
            assert len(healthy.received("receiveMessage")) == expected
            # What grace had buffered can still be read, then the connection ends.
            while (await stalled.receive(timeout=10)).type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                pass
            assert stalled.closed
        finally:
            await stalled.close()
            await sender.close()
            await healthy.close()


@pytest.fixture
def quick_ping_cluster(stores):
    """One node that pings every second and gives up on a client after one more."""
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "silent-client", nodes=("a",),
                         PING_INTERVAL_SECONDS="1", PING_TIMEOUT_SECONDS="1") as running:
        yield running


async def sockets_connected(http: aiohttp.ClientSession, internal_url: str) -> float:
    async with http.get(internal_url + "/metrics") as answer:
        text = await answer.text()
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("parley_gateway_sockets_connected "))


async def test_a_client_gone_silent_is_disconnected_and_its_websocket_closed(quick_ping_cluster):
    url = quick_ping_cluster.gateway_url("a")
    ada = await create_user(quick_ping_cluster.history_url)
    async with aiohttp.ClientSession() as http:
        silent = await http.ws_connect(url + "/socket.io/?EIO=4&transport=websocket", autoping=False)
        assert (await silent.receive_str(timeout=5)).startswith("0{")
        await silent.send_str('40{"token": "%s"}' % ada.token)
        assert (await silent.receive_str(timeout=5)).startswith("40{")
        assert await sockets_connected(http, quick_ping_cluster.gateway_internal_url("a")) == 1
        # Never answering engine.io's pings ("2"): the session ends after about two seconds.
        await eventually(lambda: none_connected(http, quick_ping_cluster.gateway_internal_url("a")), timeout=8)
        frames = []
        while (message := await silent.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
            frames.append(message.data)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), message
        assert "2" in frames, frames  # a ping it never answered, then the close
        await silent.close()


async def test_clients_that_answer_pings_stay_connected_on_either_transport(quick_ping_cluster):
    """The node's pings come from one timer wheel (services/gateway/pings.py) for websocket and
    long-polling sockets alike: each gets its pings, and answering keeps it connected through
    many ping timeouts."""
    url = quick_ping_cluster.gateway_url("a")
    internal_url = quick_ping_cluster.gateway_internal_url("a")
    ada, grace = await create_user(quick_ping_cluster.history_url), await create_user(quick_ping_cluster.history_url)
    polling = await ChatClient(url, grace.token).connect(transports=("polling",))
    async with aiohttp.ClientSession() as http:
        answering = await http.ws_connect(url + "/socket.io/?EIO=4&transport=websocket", autoping=False)
        try:
            assert (await answering.receive_str(timeout=5)).startswith("0{")
            await answering.send_str('40{"token": "%s"}' % ada.token)
            assert (await answering.receive_str(timeout=5)).startswith("40{")
            pings = 0
            while pings < 5:  # five pings, each within a ping interval and a tick of the last
                if await answering.receive_str(timeout=3) == "2":
                    pings += 1
                    await answering.send_str("3")
            # Five ping timeouts on (a polling client is closed after its poll waits the ping
            # interval and timeout, two seconds here, for a ping): both are still there.
            assert await sockets_connected(http, internal_url) == 2
            assert polling.sio.connected and polling.sio.transport() == "polling"
        finally:
            await answering.close()
            await polling.sio.eio.disconnect(abort=True)
