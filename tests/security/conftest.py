"""A cluster of the security suite's own (real processes), and the users the attacks aim at.

`Cluster` names listeners as the services' settings do: `history_url` is history's internal
listener (HISTORY_URL), `history_api_url` its public one (HISTORY_API_URL), `presence_url`
presence's internal one; `gateway_url(node)` is a gateway's public listener.
"""

import asyncio
import json
import re
from dataclasses import dataclass

import aiohttp
import pytest

from tests import support
from tests.security import rawhttp
from tests.support import Cluster, TEST_RUN_DIR, User, assert_no_errors_logged, create_user, running_cluster

LOG_DIR = TEST_RUN_DIR / "logs" / "security"
# The traversal suite sends about 1,300 requests as one user: no token bucket may answer for the
# path handling (a 429 would hide whether the path got through).
UNLIMITED = {"REST_BURST": "1000000", "REST_RATE_PER_SECOND": "1000000"}
REQUESTS_TOTAL = re.compile(
    r'^parley_history_http_requests_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$', re.MULTILINE
)
ROUTE_LABEL = re.compile(r'route="(?P<route>[^"]*)"')


@dataclass
class Cast:
    """Ada and Grace talk; Mallory is signed in and attacks."""

    ada: User
    grace: User
    mallory: User


@pytest.fixture(scope="session")
def secure_cluster(stores) -> Cluster:
    with running_cluster(stores, LOG_DIR, nodes=("a",), **UNLIMITED) as running:
        yield running
    # Whatever the attacks threw at it, no service logged an error (an unhandled exception).
    assert_no_errors_logged(running)


@pytest.fixture(scope="session")
def cast(secure_cluster) -> Cast:
    async def make() -> Cast:
        return Cast(*[await create_user(secure_cluster.history_url, name)
                      for name in ("sec-ada", "sec-grace", "sec-mallory")])

    return asyncio.run(make())


async def internal_route_requests(cluster: Cluster) -> int:
    """Requests history has answered on `/internal/*` routes, from its internal `/metrics`."""
    answer = await rawhttp.request(cluster.history_url, "GET", "/metrics")
    assert answer.status == 200, answer
    total = 0.0
    for sample in REQUESTS_TOTAL.finditer(answer.text):
        route = ROUTE_LABEL.search(sample["labels"])
        if route and route["route"].startswith("/internal"):
            total += float(sample["value"])
    return int(total)


async def forged_messages(cluster: Cluster, cast: Cast, text: str) -> list[str]:
    """Messages in Ada and Grace's conversation whose text is `text`: a forgery that got stored."""
    answer = await rawhttp.request(
        cluster.history_api_url, "GET", f"/api/messages/{cast.ada.id}",
        [("Authorization", f"Bearer {cast.grace.token}")],
    )
    assert answer.status == 200, answer
    return [message["text"] for message in json.loads(answer.body) if message["text"] == text]


def presence_public_url(cluster: Cluster) -> str:
    """Presence's public listener (`Cluster.presence_url` is its internal one, as PRESENCE_URL)."""
    return cluster.stack["presence"].url


def tokens() -> dict[str, str]:
    """Each calling service's internal token, as the test cluster's history admits them."""
    return {"gateway": support.GATEWAY_TOKEN, "presence": support.PRESENCE_TOKEN, "admin": support.ADMIN_TOKEN}


async def handshake_reply(gateway_url: str, token: str) -> str:
    """The Socket.IO answer to a CONNECT carrying `auth.token`: `40{...}` admitted, `44{...}` refused."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(gateway_url + "/socket.io/?EIO=4&transport=websocket") as ws:
            opened = await ws.receive_str(timeout=5)
            assert opened.startswith("0{"), opened
            await ws.send_str("40" + json.dumps({"token": token}))
            message = await ws.receive(timeout=5)
            return message.data if message.type == aiohttp.WSMsgType.TEXT else f"closed: {message.type!r}"


def admitted(reply: str) -> bool:
    return reply.startswith("40{")
