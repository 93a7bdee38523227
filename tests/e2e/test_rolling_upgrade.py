"""A rolling upgrade: a gateway of the previous release (deploy/PREVIOUS_RELEASE) beside one of this
tree, on the same Redis and Postgres, with this tree's history and presence (which an upgrade
replaces first).

The previous release's tree is extracted from git (`git archive`) and its gateway run as a process
from there, with this venv: its `python -m services.gateway` imports that tree's `services`. Users
on the old node and on the new one exchange 1:1 and group messages both ways, see each other's
presence, and a client of the old node recovers its session on the new one (the guide's Node
client, through a proxy playing the load balancer): the routing format (services/shared/
route_format.py) and the recovery offsets are what both releases read.
"""

import subprocess
from pathlib import Path

import aiohttp
import pytest

from services.devtools.stores import free_port
from tests.e2e.node_clients import NodeClient, Proxy, port_of
from tests.e2e.test_recovery import send
from tests.support import ChatClient, PROJECT_DIR, TEST_RUN_DIR, assert_no_errors_logged, create_user, running_cluster

PREVIOUS_RELEASE_FILE = PROJECT_DIR / "deploy" / "PREVIOUS_RELEASE"
WEBCLIENT_MODULES = PROJECT_DIR / "services" / "gateway" / "webclient" / "node_modules"


def previous_release() -> str:
    [commit] = [line.strip() for line in PREVIOUS_RELEASE_FILE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    return commit


def extract_release(commit: str, into) -> None:
    """The commit's tree in `into`; a clear failure (never a skip) when this clone lacks it."""
    found = subprocess.run(["git", "-C", str(PROJECT_DIR), "cat-file", "-e", f"{commit}^{{commit}}"],
                           capture_output=True)
    if found.returncode != 0:
        pytest.fail(f"the previous release {commit} (deploy/PREVIOUS_RELEASE) is not in this clone "
                    f"({found.stderr.decode().strip()}): the rolling-upgrade test needs the full history "
                    "(`git fetch --unshallow`, or a checkout with fetch-depth 0)", pytrace=False)
    archive = subprocess.Popen(["git", "-C", str(PROJECT_DIR), "archive", commit], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    assert archive.wait() == 0, f"git archive {commit} failed"


@pytest.fixture(scope="module")
def mixed_cluster(stores, tmp_path_factory):
    """History, presence and gateway `new` of this tree, and gateway `old` of the previous release."""
    tree = tmp_path_factory.mktemp("previous-release")
    extract_release(previous_release(), tree)
    assert (tree / "services" / "gateway" / "__main__.py").exists()
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "rolling-upgrade", nodes=("new",)) as cluster:
        old = cluster.stack.add("gateway", "gateway-old", free_port(), free_port(),
                                {"PYTHONPATH": str(tree), "WEBCLIENT_MODULES": str(WEBCLIENT_MODULES)})
        old.cwd = tree
        old.start()
        old.wait_ready()
        yield cluster
    assert_no_errors_logged(cluster)


@pytest.fixture
async def clients():
    opened: list = []
    yield opened
    for client in opened:
        await client.close()


@pytest.fixture
def connect(mixed_cluster, clients):
    async def open_client(user, node: str) -> ChatClient:
        client = ChatClient(mixed_cluster.gateway_url(node), user.token)
        clients.append(client)
        return await client.connect()

    return open_client


async def users(cluster, count: int):
    return [await create_user(cluster.history_url) for _ in range(count)]


def texts(client: ChatClient, event: str = "receiveMessage") -> list[str]:
    return [data["text"] for data in client.received(event)]


def test_the_previous_release_runs_from_its_own_tree(mixed_cluster):
    """Its `python -m` imports `services` from where it runs: the extracted tree, not this one."""
    old = mixed_cluster.stack["gateway-old"]
    assert Path(f"/proc/{old.process.pid}/cwd").resolve() == old.cwd.resolve() != PROJECT_DIR


async def test_one_to_one_messages_cross_between_releases_both_ways(mixed_cluster, connect):
    ada, grace = await users(mixed_cluster, 2)
    ada_old, grace_new = await connect(ada, "old"), await connect(grace, "new")
    ada_new = await connect(ada, "new")  # her other tab, on the other release

    ack = await ada_old.call("sendMessage", {"receiverId": grace.id, "text": "from the old node"})
    assert ack["ok"] is True, ack
    received = await grace_new.wait_for("receiveMessage", lambda data: data["text"] == "from the old node")
    assert received["_id"] == ack["message"]["_id"] and received["sender"]["_id"] == ada.id
    await ada_new.wait_for("messageSent", lambda data: data["_id"] == ack["message"]["_id"])

    ack = await grace_new.call("sendMessage", {"receiverId": ada.id, "text": "from the new node"})
    assert ack["ok"] is True, ack
    for tab in (ada_old, ada_new):
        received = await tab.wait_for("receiveMessage", lambda data: data["text"] == "from the new node")
        assert received["_id"] == ack["message"]["_id"]
    # Once each: a last message from the old node arrives after anything duplicated would have.
    assert (await ada_old.call("sendMessage", {"receiverId": grace.id, "text": "last"}))["ok"]
    await grace_new.wait_for("receiveMessage", lambda data: data["text"] == "last")
    assert texts(grace_new) == ["from the old node", "last"]
    assert texts(ada_old) == texts(ada_new) == ["from the new node"]


async def test_group_messages_reach_every_member_on_both_releases(mixed_cluster, connect):
    ada, grace, alan = await users(mixed_cluster, 3)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{mixed_cluster.gateway_url('old')}/api/groups", headers=ada.auth_headers,
                             json={"name": "Upgrade", "memberIds": [grace.id, alan.id]}) as answer:
            assert answer.status == 201, await answer.text()
            group = await answer.json()
    ada_old, grace_new = await connect(ada, "old"), await connect(grace, "new")
    alan_old, alan_new = await connect(alan, "old"), await connect(alan, "new")

    for sender, text in ((ada_old, "group from old"), (grace_new, "group from new")):
        ack = await sender.call("sendMessage", {"groupId": group["_id"], "text": text})
        assert ack["ok"] is True, ack
        receivers = [client for client in (ada_old, grace_new, alan_old, alan_new) if client is not sender]
        for member in receivers:
            received = await member.wait_for("receiveMessage", lambda data, text=text: data["text"] == text)
            assert received["_id"] == ack["message"]["_id"]
    assert texts(alan_old) == texts(alan_new) == ["group from old", "group from new"]
    assert texts(ada_old) == ["group from new"] and texts(grace_new) == ["group from old"]


async def test_presence_crosses_between_releases(mixed_cluster, connect, clients):
    ada, grace = await users(mixed_cluster, 2)
    # Partners (PRESENCE_VISIBILITY "partners"): each may see the other.
    first = await connect(ada, "old")
    assert (await first.call("sendMessage", {"receiverId": grace.id, "text": "hi"}))["ok"]
    # Ada is offline before the first tab below arrives: otherwise that tab's arrival (one node)
    # may be counted before this socket's departure (the other), and no one goes online.
    watcher = await connect(grace, "new")
    assert (await watcher.call("watchPresence", [ada.id]))["ok"]
    await first.close()
    assert await watcher.wait_for("userOffline", lambda data: data == ada.id) == ada.id
    await watcher.close()

    for watcher_node, user_node in (("new", "old"), ("old", "new")):
        watcher = await connect(grace, watcher_node)
        assert (await watcher.call("watchPresence", [ada.id]))["ok"]
        tab = await connect(ada, user_node)
        assert await watcher.wait_for("userOnline", lambda data: data == ada.id) == ada.id
        await tab.close()
        assert await watcher.wait_for("userOffline", lambda data: data == ada.id) == ada.id
        await watcher.close()


async def test_a_client_of_the_old_node_recovers_on_the_new_one_without_a_loss(mixed_cluster, clients):
    """Connection-state recovery across the upgrade: the old node gave the client its pid and
    offsets; the new node, which the load balancer sends it to, replays exactly what it missed."""
    alice, bob = await users(mixed_cluster, 2)
    bob_old = await ChatClient(mixed_cluster.gateway_url("old"), bob.token).connect()
    bob_new = await ChatClient(mixed_cluster.gateway_url("new"), bob.token).connect()
    clients += [bob_old, bob_new]
    proxy = Proxy()
    proxy.url = await proxy.start()
    clients.append(proxy)
    proxy.target = port_of(mixed_cluster.gateway_url("old"))
    client = await NodeClient(proxy.url, alice.token).start()
    clients.append(client)
    first = await client.connected(1)
    assert first["recovered"] is False and first["pid"]

    before = await send(bob_old, alice.id, ["before the upgrade"])
    await client.wait_for(lambda r: r.get("event") == "receiveMessage", what="the first message")

    proxy.target = None  # the old node is going away: the load balancer sends nothing there
    proxy.cut()
    await client.wait_for(lambda r: r["type"] == "disconnect", what="the drop")
    missed = (await send(bob_old, alice.id, ["missed, sent through the old node"])
              + await send(bob_new, alice.id, ["missed, sent through the new node"]))
    proxy.target = port_of(mixed_cluster.gateway_url("new"))

    second = await client.connected(2)
    assert second["recovered"] is True and second["pid"] == first["pid"]
    after = await send(bob_old, alice.id, ["after the move"])
    await client.wait_for(lambda r: r.get("event") == "receiveMessage" and r["args"][0]["_id"] == after[0]["_id"],
                          what="the live message after recovery")
    received = [args[0]["_id"] for args in client.events("receiveMessage")]
    assert received == [message["_id"] for message in before + missed + after]
