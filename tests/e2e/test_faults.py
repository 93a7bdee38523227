"""Faults injected for real while clients keep sending: nothing acknowledged is ever lost.

Each test runs its own cluster on private Postgres and Redis servers, so it can stop them.
"""

import asyncio

import aiohttp

from tests.e2e.faults import Sender, open_pairs, run_traffic, tally, tally_group
from tests.support import ChatClient, create_user, eventually


async def get(url: str, headers=None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers=headers) as answer:
            return answer.status, await answer.json()


async def test_postgres_restart_refuses_clearly_and_recovers_with_nothing_lost(fault_cluster, private_postgres):
    server, _ = private_postgres
    senders, receivers, clients = await open_pairs(fault_cluster)
    reader = senders[0].receiver

    async def restart_postgres():
        await asyncio.to_thread(server.stop, "immediate")
        status, body = await get(fault_cluster.gateway_url("a") + "/api/messages/conversations", reader.auth_headers)
        assert (status, body["code"]) == (503, "store_unavailable")
        # Every history pod shares the outage: it stays in the load balancer, says it is degraded.
        status, body = await get(fault_cluster.history_url + "/readyz")
        assert (status, body["status"]) == (200, "degraded") and "postgres" in body["failures"], body
        await asyncio.sleep(1.5)
        await asyncio.to_thread(server.start)

    try:
        await run_traffic(senders, restart_postgres)

        async def ready_again():
            assert (await get(fault_cluster.history_url + "/readyz"))[1]["status"] == "ready"

        await eventually(ready_again, timeout=15)
        result = await tally(
            "Postgres restarted", fault_cluster.database_url, fault_cluster.gateway_url("b"), senders, receivers
        )
    finally:
        for client in clients:
            await client.close()

    errors = [code for sender in senders for code in sender.errors]
    assert "store_unavailable" in errors and set(errors) <= {"store_unavailable", "service_unavailable"}
    assert all(sender.acked for sender in senders)
    assert result.acknowledged == result.stored == result.received and result.lost == 0, result
    # Sends after the restart were acknowledged again: recovery without restarting any service.
    assert all(process.alive() for process in fault_cluster.stack.processes.values())


async def test_redis_restart_loses_nothing_and_live_delivery_resumes(fault_cluster, private_redis):
    senders, receivers, clients = await open_pairs(fault_cluster)

    async def restart_redis():
        port = private_redis.port
        await asyncio.to_thread(private_redis.kill)
        await asyncio.sleep(1.5)
        private_redis.port = port
        await asyncio.to_thread(private_redis.start)

    try:
        await run_traffic(senders, restart_redis)
        probe_sender, probe_receiver = senders[0].client, receivers[senders[0].receiver.id]

        async def live_again():
            ack = await probe_sender.call("sendMessage", {"receiverId": senders[0].receiver.id, "text": "live?"})
            assert ack["ok"]
            senders[0].acked.append(ack["message"]["_id"])
            await probe_receiver.wait_for("receiveMessage", lambda m: m["_id"] == ack["message"]["_id"], timeout=1)

        await eventually(live_again, timeout=30)
        result = await tally(
            "Redis restarted", fault_cluster.database_url, fault_cluster.gateway_url("b"), senders, receivers
        )
    finally:
        for client in clients:
            await client.close()

    assert result.acknowledged == result.stored == result.received and result.lost == 0, result
    for process in fault_cluster.stack.processes.values():
        assert process.alive(), process.name


async def test_history_killed_degrades_clearly_and_recovers(fault_cluster):
    senders, receivers, clients = await open_pairs(fault_cluster, count=2)
    history = fault_cluster.stack["history"]

    async def kill_and_restart_history():
        history.kill()
        status, body = await get(fault_cluster.gateway_url("a") + "/api/messages/conversations",
                                 senders[0].receiver.auth_headers)
        assert (status, body["code"]) == (503, "service_unavailable")
        status, body = await get(fault_cluster.gateway_internal_url("a") + "/readyz")
        assert (status, body["status"]) == (200, "degraded") and "history" in body["failures"], body
        await asyncio.sleep(1)
        history.start()
        await asyncio.to_thread(history.wait_ready)

    try:
        await run_traffic(senders, kill_and_restart_history)
        result = await tally(
            "history killed and restarted", fault_cluster.database_url, fault_cluster.gateway_url("b"), senders, receivers
        )
    finally:
        for client in clients:
            await client.close()

    errors = {code for sender in senders for code in sender.errors}
    # While history is down: service_unavailable; while it restarts, before its migrations
    # check has passed, it may answer store_unavailable itself. Never anything else.
    assert "service_unavailable" in errors and errors <= {"service_unavailable", "store_unavailable"}, errors
    assert result.acknowledged == result.stored == result.received and result.lost == 0, result


async def test_gateway_killed_clients_move_to_the_other_node_and_nothing_is_lost(fault_cluster):
    """SIGKILL a node; its clients reconnect to the other node (as through a load balancer)."""
    senders, receivers, clients = await open_pairs(fault_cluster, count=2)
    node_a = fault_cluster.stack["gateway-a"]

    async def kill_node_a():
        node_a.kill()
        for sender in senders:  # what a load balancer does for them: the next node
            await sender.client.close()
            moved = ChatClient(fault_cluster.gateway_url("b"), sender.client.token)
            await moved.connect()
            clients.append(moved)
            sender.client = moved

    try:
        await run_traffic(senders, kill_node_a)
        result = await tally(
            "gateway SIGKILL", fault_cluster.database_url, fault_cluster.gateway_url("b"), senders, receivers
        )
    finally:
        for client in clients:
            await client.close()

    assert all(sender.acked for sender in senders)
    assert result.acknowledged == result.stored == result.received and result.lost == 0, result


async def test_gateway_killed_mid_group_conversation_loses_nothing(fault_cluster):
    """A group of four over both nodes: SIGKILL node a under the sender; it moves to node b."""
    users = [await create_user(fault_cluster.history_url) for _ in range(4)]
    status, group = await post(f"{fault_cluster.gateway_url('b')}/api/groups",
                               {"name": "Fault", "memberIds": [user.id for user in users[1:]]}, users[0].auth_headers)
    assert status == 201, group
    clients = [ChatClient(fault_cluster.gateway_url(node), user.token) for node, user in zip("abab", users)]
    for client in clients:
        await client.connect()
    sender = Sender(clients[0], None, group_id=group["_id"])
    members = {user.id: (user, client) for user, client in zip(users[1:], clients[1:])}
    node_a = fault_cluster.stack["gateway-a"]

    async def kill_node_a():
        node_a.kill()
        for user_id, (user, client) in [(user_id, pair) for user_id, pair in members.items()
                                        if pair[1].url == fault_cluster.gateway_url("a")]:
            await client.close()
            moved = await ChatClient(fault_cluster.gateway_url("b"), user.token).connect()
            clients.append(moved)
            members[user_id] = (user, moved)
        await sender.client.close()
        sender.client = await ChatClient(fault_cluster.gateway_url("b"), users[0].token).connect()
        clients.append(sender.client)

    try:
        await run_traffic([sender], kill_node_a)
        result = await tally_group("gateway SIGKILL (group of 4)", fault_cluster.database_url,
                                   fault_cluster.gateway_url("b"), sender, members)
    finally:
        for client in clients:
            await client.close()

    assert sender.acked
    assert result.acknowledged == result.stored == result.received and result.lost == 0, result


async def post(url: str, body: dict, headers) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers=headers) as answer:
            return answer.status, await answer.json()


async def befriend(cluster, ada, grace) -> None:
    client = ChatClient(cluster.gateway_url("a"), ada.token)
    await client.connect()
    assert (await client.call("sendMessage", {"receiverId": grace.id, "text": "hello"}))["ok"]
    await client.close()


async def online(cluster, user_ids, asker) -> set[str]:
    status, body = await get(f"{cluster.gateway_url('b')}/api/presence?ids={','.join(user_ids)}", asker.auth_headers)
    assert status == 200, body
    return set(body["online"])


async def test_killed_gateway_users_go_offline_within_the_ttl(fault_cluster):
    ada, grace = await create_user(fault_cluster.history_url), await create_user(fault_cluster.history_url)
    await befriend(fault_cluster, ada, grace)
    watcher = ChatClient(fault_cluster.gateway_url("b"), grace.token)
    await watcher.connect()
    doomed = ChatClient(fault_cluster.gateway_url("a"), ada.token)
    await doomed.connect()
    try:
        await watcher.wait_for("userOnline", lambda user: user == ada.id)

        async def both_online():
            assert await online(fault_cluster, [ada.id, grace.id], grace) == {ada.id, grace.id}

        # The cluster has just started: node b's first heartbeat may not have reached presence yet.
        await eventually(both_online, timeout=5)
        # befriend's own sockets may have made ada flicker offline already: only what follows counts.
        heard_before = len(watcher.events)
        killed_at = asyncio.get_running_loop().time()
        fault_cluster.stack["gateway-a"].kill()

        async def announced_offline():
            assert ("userOffline", ada.id) in watcher.events[heard_before:]

        # NODE_TTL_SECONDS is 2 and the sweep runs every HEARTBEAT_SECONDS (0.5) in tests.
        await eventually(announced_offline, timeout=6)
        assert asyncio.get_running_loop().time() - killed_at < 4
        assert await online(fault_cluster, [ada.id, grace.id], grace) == {grace.id}
    finally:
        await doomed.close()
        await watcher.close()


async def test_presence_restarted_state_converges(fault_cluster):
    ada, grace = await create_user(fault_cluster.history_url), await create_user(fault_cluster.history_url)
    presence = fault_cluster.stack["presence"]
    first = ChatClient(fault_cluster.gateway_url("a"), ada.token)
    await first.connect()
    try:
        presence.kill()
        # While presence is down: ada moves to node b, grace comes online; chat goes on.
        second = ChatClient(fault_cluster.gateway_url("b"), ada.token)
        await second.connect()
        await first.close()
        other = ChatClient(fault_cluster.gateway_url("a"), grace.token)
        await other.connect()
        ack = await other.call("sendMessage", {"receiverId": ada.id, "text": "presence is down"})
        assert ack["ok"]
        # Delivered live across nodes: routing reads the nodes' own liveness, never presence.
        await second.wait_for("receiveMessage", lambda m: m["_id"] == ack["message"]["_id"])
        presence.start()
        await asyncio.to_thread(presence.wait_ready)

        async def converged():
            assert await online(fault_cluster, [ada.id, grace.id], grace) == {ada.id, grace.id}

        await eventually(converged, timeout=10)
        await second.close()

        async def ada_offline():
            assert await online(fault_cluster, [ada.id, grace.id], grace) == {grace.id}

        await eventually(ada_offline, timeout=10)
        await other.close()
    finally:
        await first.close()


async def test_redis_restarted_presence_is_rebuilt_from_the_gateways(fault_cluster, private_redis):
    ada, grace = await create_user(fault_cluster.history_url), await create_user(fault_cluster.history_url)
    await befriend(fault_cluster, ada, grace)  # grace may see ada's presence
    clients = [ChatClient(fault_cluster.gateway_url(node), user.token) for node, user in (("a", ada), ("b", grace))]
    for client in clients:
        await client.connect()
    try:
        async def both_online():
            assert await online(fault_cluster, [ada.id, grace.id], grace) == {ada.id, grace.id}

        await eventually(both_online, timeout=15)
        port = private_redis.port
        await asyncio.to_thread(private_redis.kill)
        await asyncio.sleep(1)
        private_redis.port = port
        await asyncio.to_thread(private_redis.start)  # empty: every presence key is gone
        await eventually(both_online, timeout=15)
    finally:
        for client in clients:
            await client.close()
