"""The presence store against real Redis: transitions once per user, sweeps once per node."""

import asyncio
import uuid

import pytest
import redis.asyncio as redis

from services.presence.store import PresenceStore


@pytest.fixture
async def store(stores):
    client = redis.Redis.from_url(stores.redis_url, decode_responses=True)
    prefix = f"{stores.redis_prefix}-presence-{uuid.uuid4().hex[:6]}"
    yield PresenceStore(client, prefix, node_ttl_seconds=0.5)
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_online_once_per_user_offline_with_the_last_socket(store):
    assert await store.apply_events("a", [("s1", "ada"), ("s2", "ada"), ("s3", "grace")], []) == (["ada", "grace"], [])
    assert await store.apply_events("b", [("s4", "ada")], []) == ([], [])
    assert await store.apply_events("a", [], [("s1", "ada"), ("s2", "ada")]) == ([], [])
    assert await store.online_among(["ada", "grace", "nobody"]) == ["ada", "grace"]
    assert await store.apply_events("b", [], [("s4", "ada")]) == ([], ["ada"])
    assert await store.online_among(["ada", "grace"]) == ["grace"]


async def test_a_repeated_batch_changes_nothing(store):
    batch = [("s1", "ada")]
    assert await store.apply_events("a", batch, []) == (["ada"], [])
    assert await store.apply_events("a", batch, []) == ([], [])
    assert await store.apply_events("a", [], batch) == ([], ["ada"])
    assert await store.apply_events("a", [], batch) == ([], [])


async def test_a_silent_node_is_swept_once_even_by_concurrent_sweepers(store):
    await store.apply_events("dead", [("s1", "ada"), ("s2", "ada"), ("s3", "grace")], [])
    await store.apply_events("live", [("s4", "grace")], [])
    await asyncio.sleep(0.3)
    assert await store.heartbeat("live") is True
    await asyncio.sleep(0.3)  # "dead" is past its 0.5 s TTL, "live" is not
    results = await asyncio.gather(*(store.sweep_dead_nodes() for _ in range(3)))
    assert sorted(user for offline in results for user in offline) == ["ada"]
    assert await store.online_among(["ada", "grace"]) == ["grace"]


async def test_a_node_unknown_to_presence_is_asked_to_resync_and_converges(store):
    assert await store.heartbeat("a") is False  # first heartbeat: send your sockets
    await store.apply_events("a", [("s1", "ada"), ("s2", "grace")], [])
    assert await store.heartbeat("a") is True
    # The node's own table says: s1 gone, s3 (edsger) here.
    assert await store.replace_node("a", [("s2", "grace"), ("s3", "edsger")]) == (["edsger"], ["ada"])
    assert await store.online_among(["ada", "grace", "edsger"]) == ["grace", "edsger"]


async def test_a_node_that_leaves_is_forgotten_at_once(store):
    await store.apply_events("a", [("s1", "ada")], [])
    await store.apply_events("b", [("s2", "ada"), ("s3", "grace")], [])
    assert sorted(await store.forget_node("b")) == ["grace"]
    assert await store.online_among(["ada", "grace"]) == ["ada"]
