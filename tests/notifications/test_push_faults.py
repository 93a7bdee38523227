"""Notifications under faults (issue 18): nothing is lost when the notifier is SIGKILLed mid-push
(and restarted, or replaced by another that claims its jobs), when the push service answers
500, 429 and 410, or when Redis restarts without its data. Each test records a row of the
"notification faults" table: jobs appended, messages pushed, lost (0), duplicates."""

import asyncio
import re
import signal
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import pytest
import redis.asyncio

from services.devtools.stores import free_port
from services.shared.keys import PUSH_CONSUMER_GROUP, push_stream_key
from tests import tally
from tests.notifications.receiver import Browser, PushReceiver
from tests.support import (TEST_RUN_DIR, ChatClient, TestStores, User, assert_no_errors_logged, create_user,
                           private_redis_server, running_cluster)

FAULT_TIMING = {"COLLAPSE_SECONDS": "0.2", "PUSH_BACKOFF_SECONDS": "0.1", "PUSH_TIMEOUT_SECONDS": "2",
                "PUSH_MAX_RETRY_AFTER_SECONDS": "1", "CLAIM_IDLE_SECONDS": "4", "PUSH_RELAY_POLL_SECONDS": "0.5"}
LOG_DIR = TEST_RUN_DIR / "logs" / "notification-faults"


@pytest.fixture
def fault_cluster(stores, request):
    with running_cluster(stores, LOG_DIR / request.node.name, **FAULT_TIMING) as cluster:
        yield cluster
    assert_no_errors_logged(cluster)


@pytest.fixture
def redis_fault_cluster(stores, request):
    with private_redis_server(TEST_RUN_DIR / "faults" / "notify-redis") as server:
        private = TestStores(stores.database_url, server.url, "notify-faults")
        with running_cluster(private, LOG_DIR / request.node.name, **FAULT_TIMING) as cluster:
            cluster.redis_server = server
            yield cluster
        assert_no_errors_logged(cluster)


@dataclass
class Traffic:
    """A sender writing to recipients who have a browser each and no socket, round-robin."""

    sender: ChatClient
    recipients: list[tuple[User, Browser]]
    sent: list[tuple[str, Browser]] = field(default_factory=list)  # (message id, the recipient's browser)

    async def run(self, count: int, interval: float = 0.02) -> None:
        for number in range(count):
            user, browser = self.recipients[number % len(self.recipients)]
            ack = await self.sender.call("sendMessage", {"receiverId": user.id, "text": f"fault {number}"}, timeout=10)
            assert ack["ok"], ack
            self.sent.append((ack["message"]["_id"], browser))
            await asyncio.sleep(interval)


async def start_traffic(cluster, receiver: PushReceiver, recipients: int = 4) -> Traffic:
    base = cluster.history_url
    sender = await create_user(base)
    pairs = []
    async with aiohttp.ClientSession() as http:
        for _ in range(recipients):
            user, browser = await create_user(base), receiver.new_browser()
            async with http.post(cluster.gateway_url("a") + "/api/push/subscriptions", json=browser.subscription(),
                                 headers=user.auth_headers) as answer:
                assert answer.status == 201
            pairs.append((user, browser))
    client = await ChatClient(cluster.gateway_url("a"), sender.token).connect()
    return Traffic(client, pairs)


def received_pairs(receiver: PushReceiver) -> Counter:
    return Counter((push.endpoint, message_id) for push in receiver.pushes for message_id in push.payload["messageIds"])


async def jobs_appended(cluster) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.get(cluster.stack["history"].internal_url + "/metrics") as answer:
            text = await answer.text()
    return int(float(re.search(r"^parley_history_push_jobs_appended (\S+)$", text, re.M).group(1)))


async def settle_and_record(fault: str, cluster, receiver: PushReceiver, traffic: Traffic) -> None:
    """Waits until every message sent was pushed to its recipient, then records the row."""
    expected = {(browser.endpoint, message_id) for message_id, browser in traffic.sent}
    try:
        await receiver.wait_for(lambda: expected <= set(received_pairs(receiver)), timeout=45)
    finally:
        received = received_pairs(receiver)
        pushed = len(expected & set(received))
        duplicates = sum(count - 1 for pair, count in received.items() if pair in expected)
        tally.PUSH_FAULTS.append((fault, await jobs_appended(cluster), pushed,
                                  len(expected) - pushed, duplicates))
        await traffic.sender.close()


async def kill_while_pushing(cluster, receiver: PushReceiver, notifier: str = "notifier") -> None:
    """SIGKILLs the notifier while the push service holds requests it sent (answered never)."""
    receiver.hold = asyncio.Event()
    held_from = len(receiver.pushes)
    await receiver.wait_for(lambda: len(receiver.pushes) > held_from)
    cluster.stack[notifier].kill()
    receiver.hold.set()
    receiver.hold = None


async def test_the_notifier_killed_mid_push_and_restarted_loses_nothing(fault_cluster):
    receiver = await PushReceiver(fault_cluster.vapid_public_key).start()
    try:
        traffic = await start_traffic(fault_cluster, receiver)
        sending = asyncio.create_task(traffic.run(60))
        await receiver.wait_for(lambda: len(receiver.pushes) >= 5)
        await kill_while_pushing(fault_cluster, receiver)
        notifier = fault_cluster.stack["notifier"]
        notifier.start()  # the same name: it reads its own pending jobs again
        await asyncio.to_thread(notifier.wait_ready)
        await sending
        await settle_and_record("notifier SIGKILLed mid-push, restarted", fault_cluster, receiver, traffic)
    finally:
        await receiver.close()


async def test_a_notifier_stopped_by_sigterm_pushes_what_it_holds_first(fault_cluster):
    receiver = await PushReceiver(fault_cluster.vapid_public_key).start()
    client = redis.asyncio.Redis.from_url(fault_cluster.stack.env["REDIS_URL"])
    try:
        traffic = await start_traffic(fault_cluster, receiver)
        sending = asyncio.create_task(traffic.run(60))
        await receiver.wait_for(lambda: len(receiver.pushes) >= 5)
        notifier = fault_cluster.stack["notifier"]
        receiver.hold = asyncio.Event()  # the push service holds its answers: the notifier is mid-push
        held_from = len(receiver.pushes)
        await receiver.wait_for(lambda: len(receiver.pushes) > held_from)
        notifier.signal(signal.SIGTERM)
        receiver.hold.set()
        receiver.hold = None
        assert await asyncio.to_thread(notifier.wait, 15) is not None
        pending = await client.xpending_range(push_stream_key(fault_cluster.stack.env["REDIS_PREFIX"]),
                                              PUSH_CONSUMER_GROUP, "-", "+", 1000, consumername="notifier")
        assert pending == []  # nothing left for another to claim: it pushed what it held
        notifier.start()
        await asyncio.to_thread(notifier.wait_ready)
        await sending
        await settle_and_record("notifier stopped by SIGTERM, restarted", fault_cluster, receiver, traffic)
    finally:
        await client.aclose()
        await receiver.close()


async def test_jobs_of_a_dead_notifier_are_claimed_by_another(fault_cluster):
    receiver = await PushReceiver(fault_cluster.vapid_public_key).start()
    try:
        traffic = await start_traffic(fault_cluster, receiver)
        sending = asyncio.create_task(traffic.run(60))
        await receiver.wait_for(lambda: len(receiver.pushes) >= 5)
        await kill_while_pushing(fault_cluster, receiver)
        replacement = fault_cluster.stack.add("notifier", "notifier-2", free_port(), free_port())
        replacement.start()
        await asyncio.to_thread(replacement.wait_ready)
        await sending
        await settle_and_record("notifier SIGKILLed, jobs claimed by another", fault_cluster, receiver, traffic)
    finally:
        await receiver.close()


async def test_500_429_and_410_from_the_push_service_lose_nothing(fault_cluster):
    receiver = await PushReceiver(fault_cluster.vapid_public_key).start()
    attempts: Counter = Counter()

    def flaky(endpoint: str):
        attempts[endpoint] += 1
        return {1: (500, {}), 2: (429, {"Retry-After": "1"}), 0: None}[attempts[endpoint] % 3]

    try:
        traffic = await start_traffic(fault_cluster, receiver)
        receiver.chaos = flaky
        gone_user, gone = traffic.recipients.pop()  # its browser unsubscribed: the push service says 410
        receiver.script(gone, *[(410, {})] * 5)
        ack = await traffic.sender.call("sendMessage", {"receiverId": gone_user.id, "text": "to a gone browser"})
        assert ack["ok"]
        await traffic.run(40)
        await receiver.wait_for(lambda: any(a.endpoint == gone.endpoint and a.status == 410 for a in receiver.attempts))
        await settle_and_record("push service answering 500, 429 and 410", fault_cluster, receiver, traffic)
        assert receiver.pushes_to(gone) == []
        assert not receiver.refused, receiver.refused[:3]
    finally:
        await receiver.close()


async def test_redis_restarted_without_its_data_loses_nothing(redis_fault_cluster):
    cluster = redis_fault_cluster
    receiver = await PushReceiver(cluster.vapid_public_key).start()
    try:
        traffic = await start_traffic(cluster, receiver)
        sending = asyncio.create_task(traffic.run(60, interval=0.03))
        await receiver.wait_for(lambda: len(receiver.pushes) >= 5)
        server = cluster.redis_server
        port = server.port
        await asyncio.to_thread(server.kill)
        server.port = port
        await asyncio.to_thread(server.start)
        await sending
        await settle_and_record("Redis restarted without its data", cluster, receiver, traffic)
    finally:
        await receiver.close()
