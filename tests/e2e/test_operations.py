"""What an orchestrator relies on: probes, metrics, and a graceful drain on SIGTERM."""

import asyncio
import signal

import aiohttp
import pytest

from tests.support import TEST_RUN_DIR, ChatClient, create_user, running_cluster


async def test_every_service_reports_health_readiness_and_metrics(cluster, make_user, connect):
    ada, grace = await make_user(), await make_user()
    sender = await connect(ada, "a")
    await sender.call("sendMessage", {"receiverId": grace.id, "text": "counted"})
    async with aiohttp.ClientSession() as http:
        for process in cluster.stack.processes.values():
            for url in (process.url + "/healthz", process.internal_url + "/healthz", process.internal_url + "/readyz"):
                async with http.get(url) as answer:
                    assert answer.status == 200, (process.name, url)
        async with http.get(cluster.gateway_internal_url("a") + "/metrics") as answer:
            gateway_metrics = await answer.text()
        async with http.get(cluster.history_url + "/metrics") as answer:
            history_metrics = await answer.text()
    for name in (
        "parley_gateway_sockets_connected",
        "parley_gateway_messages_sent_total",
        "parley_gateway_send_duration_seconds_bucket",
        "parley_gateway_internal_call_duration_seconds_bucket",
        "parley_gateway_store_batch_messages_bucket",
        'parley_gateway_socket_events_total{event="sendMessage",outcome="ok"}',
    ):
        assert name in gateway_metrics, name
    for name in (
        'parley_history_http_requests_total{method="POST",route="/internal/messages/batch",status="200"}',
        "parley_history_db_pool_connections",
        "parley_history_db_pool_idle_connections",
    ):
        assert name in history_metrics, name
    assert ada.id not in gateway_metrics and ada.id not in history_metrics


@pytest.fixture
def drain_cluster(stores):
    """A cluster of its own, since the test stops one of its nodes."""
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "drain", DRAIN_DELAY_SECONDS="1") as running:
        yield running


async def test_sigterm_drains_a_gateway_readiness_first_then_sockets(drain_cluster):
    ada, grace = await create_user(drain_cluster.history_url), await create_user(drain_cluster.history_url)
    node = drain_cluster.stack["gateway-a"]
    client = ChatClient(node.url, ada.token)
    await client.connect()
    disconnected = asyncio.Event()
    client.sio.on("disconnect", lambda *args: disconnected.set())
    try:
        in_flight = asyncio.ensure_future(client.call("sendMessage", {"receiverId": grace.id, "text": "in flight"}))
        await asyncio.sleep(0)
        node.signal(signal.SIGTERM)

        async with aiohttp.ClientSession() as http:
            # Readiness goes false as soon as the signal is handled, well within the drain delay.
            signalled = asyncio.get_running_loop().time()
            while True:
                async with http.get(node.internal_url + "/readyz") as answer:
                    if answer.status == 503:
                        assert (await answer.json())["failures"] == {"process": "draining"}
                        break
                assert asyncio.get_running_loop().time() - signalled < 0.5, "still ready"
                await asyncio.sleep(0.01)
            async with http.get(node.url + "/healthz") as answer:
                assert answer.status == 200

        assert (await in_flight)["ok"] is True
        await asyncio.wait_for(disconnected.wait(), timeout=5)
        assert await asyncio.to_thread(node.wait, 10) == 0
    finally:
        await client.close()
    other = ChatClient(drain_cluster.gateway_url("b"), ada.token)
    await other.connect()
    assert (await other.call("sendMessage", {"receiverId": grace.id, "text": "on the other node"}))["ok"]
    await other.close()
