"""What the gateway's forwarding hands to history's public listener: the user's identity, a path
built from the allow-list, and never a service token.

A recorder stands in for history's public listener (HISTORY_API_URL) in a cluster of this
module's own, and keeps every request it gets.
"""

import asyncio
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from services.devtools.stores import free_port
from tests.security import rawhttp
from tests.security.categories import FORWARDED_TOKEN, PATH_TRAVERSAL
from tests.security.conftest import LOG_DIR, UNLIMITED, tokens
from tests.security.test_path_traversal import PUBLIC_PREFIXES, TARGETS, VARIANTS
from tests.support import create_user, running_cluster
from tests.tally import ATTACK

INTERNAL_TOKEN_HEADER = "X-Internal-Token"


@dataclass
class Recorded:
    method: str
    raw_path: str
    headers: dict[str, str]


@dataclass
class Recorder:
    """An HTTP server that answers `[]` to anything and remembers what it was sent."""

    requests: list[Recorded] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded(request.method, request.raw_path, dict(request.headers)))
        self.arrived.set()
        return web.json_response([])

    async def next_request(self, timeout: float = 5.0) -> Recorded:
        count = len(self.requests)
        while len(self.requests) == count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), timeout)
        return self.requests[-1]


@pytest.fixture(scope="module")
def recorder_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def forwarding_cluster(stores, recorder_port):
    """History and presence for real; gateway node `r` forwards the public API to the recorder."""
    with running_cluster(stores, LOG_DIR / "forwarding", nodes=(), **UNLIMITED) as running:
        node = running.stack.add("gateway", "gateway-r", free_port(), free_port(),
                                 {"HISTORY_API_URL": f"http://127.0.0.1:{recorder_port}"})
        node.start()
        node.wait_ready()
        yield running


@pytest.fixture
async def recorder(recorder_port, forwarding_cluster):
    recording = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recording.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", recorder_port).start()
    try:
        yield recording
    finally:
        await runner.cleanup()


@pytest.fixture
async def user(forwarding_cluster):
    return await create_user(forwarding_cluster.history_url)


CREDENTIALS = {
    "Bearer header": lambda token: [("Authorization", f"Bearer {token}")],
    "token cookie": lambda token: [("Cookie", f"token={token}")],
    "Bearer header and a service token of the client's": lambda token: [
        ("Authorization", f"Bearer {token}"), (INTERNAL_TOKEN_HEADER, tokens()["gateway"])],
}


@pytest.mark.tally(ATTACK, FORWARDED_TOKEN)
@pytest.mark.parametrize("credentials", list(CREDENTIALS))
@pytest.mark.parametrize("method, target", [("GET", "/api/messages/conversations"),
                                            ("PUT", "/api/messages/read/sec-partner")])
async def test_forwarded_request_carries_the_users_token_never_a_service_token(
        forwarding_cluster, recorder, user, credentials, method, target):
    answer = rawhttp.request(forwarding_cluster.gateway_url("r"), method, target, CREDENTIALS[credentials](user.token))
    answered, forwarded = await asyncio.gather(answer, recorder.next_request())
    assert answered.status == 200, answered
    assert forwarded.method == method and forwarded.raw_path == target
    names = {name.lower() for name in forwarded.headers}
    assert INTERNAL_TOKEN_HEADER.lower() not in names, forwarded.headers
    assert forwarded.headers.get("Authorization") == f"Bearer {user.token}", forwarded.headers
    assert "cookie" not in names, forwarded.headers


@pytest.mark.tally(ATTACK, PATH_TRAVERSAL)
async def test_no_path_variant_is_forwarded_as_anything_but_a_public_route(forwarding_cluster, recorder, user):
    """Whatever the gateway answered, the paths history's public listener was sent are all /api/."""
    internal = "127.0.0.1:1"  # the recorder is history here; no internal listener to aim at
    control = await rawhttp.request(forwarding_cluster.gateway_url("r"), "GET", "/api/messages/conversations",
                                    [("Authorization", f"Bearer {user.token}")])
    assert control.status == 200 and len(recorder.requests) == 1, "the recorder must see a forwarded request"
    for variant in VARIANTS.values():
        for prefix in PUBLIC_PREFIXES:
            for target in TARGETS:
                shot = variant(prefix, target.path, internal)
                await rawhttp.send_raw(forwarding_cluster.gateway_url("r"), rawhttp.request_bytes(
                    target.method, shot.target, [("Authorization", f"Bearer {user.token}"), *shot.headers],
                    host="127.0.0.1"))
    sent = [f"{request.method} {request.raw_path}" for request in recorder.requests]
    assert all(request.raw_path.startswith("/api/") for request in recorder.requests), sent
    assert not [path for path in sent if any(word in path.lower() for word in ("internal", "metrics", "readyz", ".."))]
