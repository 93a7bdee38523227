"""TURN credentials (issue 17) checked by a real coturn: what `GET /api/calls/ice-servers` hands a
user is accepted by coturn's `use-auth-secret`, and nothing else is: not another user's name with
my credential, not an expired one, not one signed with another secret."""

import asyncio
import time

import aiohttp
import pytest

from services.gateway.ice_servers import turn_credentials
from tests.support import TEST_RUN_DIR, create_user, eventually, running_cluster
from tests.tally import ATTACK
from tests.turn_client import allocate, answers_stun, running_turnserver

TURN_SECRET = "test-turn-shared-secret-0123456789abcdef0123"


@pytest.fixture(scope="module")
def turn():
    with running_turnserver(TURN_SECRET, TEST_RUN_DIR / "logs" / "turn") as address:
        yield address


@pytest.fixture(scope="module")
def turn_cluster(stores, turn):
    host, port = turn
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "e2e-turn",
                         STUN_URLS=f"stun:{host}:{port}", TURN_URLS=f"turn:{host}:{port}?transport=udp",
                         TURN_SECRET=TURN_SECRET) as cluster:
        yield cluster


async def ice_servers(cluster, user) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.get(cluster.gateway_url("b") + "/api/calls/ice-servers", headers=user.auth_headers) as answer:
            assert answer.status == 200, await answer.text()
            return await answer.json()


async def coturn_answers(turn) -> None:
    async def check():
        assert await asyncio.to_thread(answers_stun, turn)

    await eventually(check, timeout=10)


async def test_the_credentials_a_user_is_given_open_a_relay_on_coturn(turn_cluster, turn):
    await coturn_answers(turn)
    ada = await create_user(turn_cluster.history_url)
    host, port = turn
    body = await ice_servers(turn_cluster, ada)
    stun, relay = body["iceServers"]
    assert stun == {"urls": [f"stun:{host}:{port}"]}
    assert relay["urls"] == [f"turn:{host}:{port}?transport=udp"]
    expiry, user_id = relay["username"].split(":")
    assert user_id == ada.id and abs(int(expiry) - (time.time() + 3600)) < 60
    assert await asyncio.to_thread(allocate, turn, relay["username"], relay["credential"]) == 0


@pytest.mark.tally(ATTACK, "TURN: another user's name, an expired or a forged credential")
async def test_coturn_refuses_credentials_the_gateway_did_not_give(turn_cluster, turn):
    await coturn_answers(turn)
    ada, mallory = await create_user(turn_cluster.history_url), await create_user(turn_cluster.history_url)
    mine = (await ice_servers(turn_cluster, mallory))["iceServers"][1]
    expiry = int(mine["username"].split(":")[0])
    refused = {
        "Ada's name with Mallory's credential": (f"{expiry}:{ada.id}", mine["credential"]),
        "a later expiry with the same credential": (f"{expiry + 86400}:{mallory.id}", mine["credential"]),
        "expired an hour ago": turn_credentials(TURN_SECRET, mallory.id, int(time.time()) - 3600),
        "signed with another secret": turn_credentials("another-secret-" + "x" * 32, mallory.id, expiry),
    }
    for what, (username, credential) in refused.items():
        assert await asyncio.to_thread(allocate, turn, username, credential) == 401, what
    # The control: Mallory's own, as given, still works.
    assert await asyncio.to_thread(allocate, turn, mine["username"], mine["credential"]) == 0
