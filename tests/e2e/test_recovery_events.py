"""Receipts, reactions, group changes, edits and deletions are not lost when delivery is (issue
20), with the real socket.io-client driven by Node (tests/e2e/node/recovering_client.mjs, default
options):
- recovery, behind a TCP proxy playing the load balancer, as in test_recovery.py: a client
  dropped from node a misses a read receipt, a reaction and a member added, comes back on node
  b, and its own handlers receive exactly those, in order, once, before anything new, with
  `socket.recovered` true;
- catch-up: a client that stays connected through a Redis restart is given, from history, the
  events the outage lost, in order, once, without reconnecting."""

import asyncio
from urllib.parse import quote

import aiohttp
import pytest

from services.gateway.delivery_log import FEED_EVENTS, ResumePoint
from tests.e2e.node_clients import NodeClient, Proxy, metric, port_of
from tests.e2e.test_no_silent_gaps import CATCH_UP_SECONDS
from tests.support import TEST_RUN_DIR, ChatClient, TestStores, create_user, running_cluster

THUMBS, HEART = "👍", "❤️"


@pytest.fixture(scope="module")
def events_cluster(stores):
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "recovery-events") as cluster:
        yield cluster


@pytest.fixture
async def opened():
    clients: list = []
    yield clients
    for client in clients:
        await client.close()


async def rest(cluster, method: str, path: str, user, **kwargs) -> object:
    """A REST call through node b (where the others are), answered 2xx."""
    async with aiohttp.ClientSession(base_url=cluster.gateway_url("b")) as http:
        async with http.request(method, path, headers=user.auth_headers, **kwargs) as answer:
            body = await answer.json()
            assert answer.status < 300, body
            return body


def feed_events_since(client: NodeClient, start: int) -> list[dict]:
    """The feed events the client's handlers received after record `start` (presence, best-effort, left out)."""
    return [record for record in client.records[start:] if record["type"] == "event" and record["event"] in FEED_EVENTS]


async def test_a_dropped_client_recovers_the_receipt_reaction_and_member_it_missed(events_cluster, opened):
    cluster = events_cluster
    alice, bob, carol = [await create_user(cluster.history_url) for _ in range(3)]
    alice_b = await ChatClient(cluster.gateway_url("b"), alice.token).connect()  # alice's other device
    opened.append(alice_b)
    proxy = Proxy()
    proxy.url = await proxy.start()
    proxy.target = port_of(cluster.gateway_url("a"))
    client = await NodeClient(proxy.url, alice.token).start()
    opened.append(client)
    try:
        first = await client.connected(1)
        ack = await alice_b.call("sendMessage", {"receiverId": bob.id, "text": "lunch?"})
        assert ack["ok"] is True, ack
        message = ack["message"]
        group = await rest(cluster, "POST", "/api/groups", bob, json={"name": "Lunch", "memberIds": [alice.id]})
        await client.wait_for(lambda r: r.get("event") == "groupUpdated", what="the group")

        proxy.target = None
        proxy.cut()
        await client.wait_for(lambda r: r["type"] == "disconnect", what="the drop")
        dropped_at = len(client.records)
        read = await rest(cluster, "PUT", f"/api/messages/read/{alice.id}", bob)
        await rest(cluster, "PUT", f"/api/messages/{message['_id']}/reactions/{quote(THUMBS, safe='')}", bob)
        await rest(cluster, "POST", f"/api/groups/{group['_id']}/members", bob, json={"userIds": [carol.id]})
        proxy.target = port_of(cluster.gateway_url("b"))  # it comes back on the other node

        second = await client.connected(2)
        assert second["recovered"] is True and second["pid"] == first["pid"]
        # Then something new, live: it must come after the replay, and nothing twice.
        await rest(cluster, "PUT", f"/api/messages/{message['_id']}/reactions/{quote(HEART, safe='')}", bob)
        await client.wait_for(lambda r: r.get("event") == "reactionUpdated" and r["args"][0]["emoji"] == HEART,
                              what="the live reaction after recovery")
    finally:
        await proxy.close()

    heard = feed_events_since(client, dropped_at)
    assert [record["event"] for record in heard] == [
        "messagesRead", "reactionUpdated", "groupUpdated", "memberAdded", "reactionUpdated"]
    receipt, reaction, _, added, live = (record["args"] for record in heard)
    assert receipt[0] == {"readerId": bob.id, "count": 1, "upTo": read["upTo"]}
    assert (reaction[0]["emoji"], reaction[0]["userId"], reaction[0]["added"]) == (THUMBS, bob.id, True)
    assert added[0]["groupId"] == group["_id"] and added[0]["member"]["_id"] == carol.id
    assert live[0]["emoji"] == HEART
    # Each carried a resume point as its last argument, each newer than the last: the client's next offset.
    newest = [max([point.settled, *point.above]) for point in (ResumePoint.parse(r["args"][-1]) for r in heard)]
    assert newest == sorted(set(newest))


@pytest.fixture
def outage_cluster(stores, private_redis):
    with running_cluster(TestStores(stores.database_url, private_redis.url, "catch-up-events"),
                         TEST_RUN_DIR / "logs" / "catch-up-events") as cluster:
        yield cluster


async def test_a_connected_client_is_caught_up_on_the_events_a_redis_restart_lost(outage_cluster, private_redis,
                                                                                  opened):
    """Redis down while bob (node b) reads, reacts, adds a member, edits and deletes: every live
    emit for alice (node a) is lost on the way. Her client stays connected; once Redis is back,
    node a catches her socket up from history: those five, in order, once, no reconnection."""
    cluster = outage_cluster
    alice, bob, carol = [await create_user(cluster.history_url) for _ in range(3)]
    bob_b = await ChatClient(cluster.gateway_url("b"), bob.token).connect()
    opened.append(bob_b)
    client = await NodeClient(cluster.gateway_url("a"), alice.token).start()
    opened.append(client)
    await client.connected(1)
    alice_a = await ChatClient(cluster.gateway_url("a"), alice.token).connect()  # her other device
    opened.append(alice_a)
    mine = (await alice_a.call("sendMessage", {"receiverId": bob.id, "text": "lunch?"}))["message"]
    theirs = []
    for text in ("noon", "or one"):
        ack = await bob_b.call("sendMessage", {"receiverId": alice.id, "text": text})
        assert ack["ok"] is True, ack
        theirs.append(ack["message"])
    group = await rest(cluster, "POST", "/api/groups", bob, json={"name": "Lunch", "memberIds": [alice.id]})
    await client.wait_for(lambda r: r.get("event") == "groupUpdated", what="the group")
    before = len(client.records)

    port = private_redis.port
    await asyncio.to_thread(private_redis.kill)
    await rest(cluster, "PUT", f"/api/messages/read/{alice.id}", bob)
    await rest(cluster, "PUT", f"/api/messages/{mine['_id']}/reactions/{quote(THUMBS, safe='')}", bob)
    await rest(cluster, "POST", f"/api/groups/{group['_id']}/members", bob, json={"userIds": [carol.id]})
    await rest(cluster, "PUT", f"/api/messages/{theirs[0]['_id']}", bob, json={"text": "noon, sharp"})
    await rest(cluster, "DELETE", f"/api/messages/{theirs[1]['_id']}", bob)
    private_redis.port = port
    await asyncio.to_thread(private_redis.start)

    expected = ["messagesRead", "reactionUpdated", "groupUpdated", "memberAdded", "messageEdited", "messageDeleted"]
    await client.wait_for(lambda _: len(feed_events_since(client, before)) >= len(expected),
                          what="the catch-up", timeout=CATCH_UP_SECONDS)
    # A later live event proves nothing more (no repeat) was on its way.
    await rest(cluster, "PUT", f"/api/messages/{mine['_id']}/reactions/{quote(HEART, safe='')}", bob)
    await client.wait_for(lambda r: r.get("event") == "reactionUpdated" and r["args"][0]["emoji"] == HEART,
                          what="the live reaction after the catch-up")
    heard = feed_events_since(client, before)
    assert [record["event"] for record in heard] == [*expected, "reactionUpdated"]
    assert heard[4]["args"][0]["message"]["text"] == "noon, sharp"
    assert heard[5]["args"][0]["_id"] == theirs[1]["_id"]
    assert len(client.connects()) == 1  # caught up, not recovered: the client never dropped
    assert sum([await metric(cluster, node, "parley_gateway_events_caught_up_total") for node in "ab"]) >= len(expected)
