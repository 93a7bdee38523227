"""The presence store against real Redis: transitions once per user, sweeps once per node."""

import asyncio
import uuid

import pytest
import redis.asyncio as redis

from services.presence.store import PresenceStore
from services.shared.keys import node_alive_key
from tests.support import eventually


# Long enough that no node's liveness lapses during a test unless the test means it to.
NODE_TTL_SECONDS = 30


async def keep_alive(client: redis.Redis, prefix: str, node_id: str) -> None:
    """The node's liveness key, as its gateway's Socket.IO manager writes it (presence only reads it)."""
    await client.set(node_alive_key(prefix, node_id), 1, px=NODE_TTL_SECONDS * 1000)


@pytest.fixture
async def space(stores):
    """A Redis client and a key prefix of the test's own, emptied afterwards."""
    client = redis.Redis.from_url(stores.redis_url, decode_responses=True)
    prefix = f"{stores.redis_prefix}-presence-{uuid.uuid4().hex[:6]}"
    yield client, prefix
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def store(space):
    """The store, with nodes "a" and "b" alive (their keys as their managers write them)."""
    client, prefix = space
    for node in ("a", "b"):
        await keep_alive(client, prefix, node)
    return PresenceStore(client, prefix)


async def test_online_once_per_user_offline_with_the_last_socket(store):
    assert await store.apply_events("a", [("s1", "ada"), ("s2", "ada"), ("s3", "grace")], []) == (
        ["ada", "grace"], [], True)
    assert await store.apply_events("b", [("s4", "ada")], []) == ([], [], True)
    assert await store.apply_events("a", [], [("s1", "ada"), ("s2", "ada")]) == ([], [], True)
    assert await store.online_among(["ada", "grace", "nobody"]) == ["ada", "grace"]
    assert await store.apply_events("b", [], [("s4", "ada")]) == ([], ["ada"], True)
    assert await store.online_among(["ada", "grace"]) == ["grace"]


async def test_a_repeated_batch_changes_nothing(store):
    batch = [("s1", "ada")]
    assert await store.apply_events("a", batch, []) == (["ada"], [], True)
    assert await store.apply_events("a", batch, []) == ([], [], True)
    assert await store.apply_events("a", [], batch) == ([], ["ada"], True)
    assert await store.apply_events("a", [], batch) == ([], [], True)


async def test_a_silent_node_is_swept_once_even_by_concurrent_sweepers(space, store):
    client, prefix = space
    await keep_alive(client, prefix, "dead")
    await keep_alive(client, prefix, "live")
    await store.apply_events("dead", [("s1", "ada"), ("s2", "ada"), ("s3", "grace")], [])
    await store.apply_events("live", [("s4", "grace")], [])
    assert await store.knows("live") is True
    # "dead" stops refreshing its key, which lapses shortly; "live" keeps its own.
    await client.pexpire(node_alive_key(prefix, "dead"), 100)

    async def dead_lapsed() -> None:
        assert not await client.exists(node_alive_key(prefix, "dead"))

    await eventually(dead_lapsed)  # Redis expired it; "live" has NODE_TTL_SECONDS to go
    results = await asyncio.gather(*(store.sweep_dead_nodes() for _ in range(3)))
    assert sorted(user for offline in results for user in offline) == ["ada"]
    assert await store.online_among(["ada", "grace"]) == ["grace"]


async def test_a_node_unknown_to_presence_is_asked_to_resync_and_converges(store):
    assert await store.knows("a") is False  # never reported: its heartbeat is answered "resync"
    await store.apply_events("a", [("s1", "ada"), ("s2", "grace")], [])
    assert await store.knows("a") is True
    # The node's own table says: s1 gone, s3 (edsger) here.
    assert await store.replace_node("a", [("s2", "grace"), ("s3", "edsger")]) == (["edsger"], ["ada"], True)
    assert await store.online_among(["ada", "grace", "edsger"]) == ["grace", "edsger"]


async def test_a_node_that_leaves_is_forgotten_at_once(store):
    await store.apply_events("a", [("s1", "ada")], [])
    await store.apply_events("b", [("s2", "ada"), ("s3", "grace")], [])
    assert sorted(await store.forget_node("b")) == ["grace"]
    assert await store.online_among(["ada", "grace"]) == ["ada"]


async def test_a_swept_node_is_asked_to_resync_and_known_again_once_it_has(space, store):
    client, prefix = space
    await store.apply_events("a", [("s1", "ada")], [])
    # Its liveness key goes: the node's manager stopped refreshing it (or Redis lost it).
    await client.delete(node_alive_key(prefix, "a"))
    assert await store.sweep_dead_nodes() == ["ada"]
    assert await store.knows("a") is False
    # Its table is not taken until its key is back (a late report of a dead node looks the same).
    assert await store.replace_node("a", [("s1", "ada")]) == ([], [], False)
    assert await store.knows("a") is False and await store.online_among(["ada"]) == []
    await keep_alive(client, prefix, "a")
    assert await store.replace_node("a", [("s1", "ada")]) == (["ada"], [], True)
    assert await store.knows("a") is True


async def test_a_dead_nodes_report_that_lands_after_its_sweep_brings_nobody_back(space, store):
    client, prefix = space
    await store.apply_events("a", [("s1", "ada"), ("s2", "grace")], [])
    await client.delete(node_alive_key(prefix, "a"))  # node a died: its key lapsed
    assert sorted(await store.sweep_dead_nodes()) == ["ada", "grace"]
    # A batch it sent just before dying: the new socket is refused, the removal is harmless.
    assert await store.apply_events("a", [("s3", "edsger")], [("s2", "grace")]) == ([], [], False)
    assert await store.online_among(["ada", "grace", "edsger"]) == []
    assert await store.knows("a") is False
