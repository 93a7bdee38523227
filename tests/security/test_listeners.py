"""Internal routes live on internal listeners only, and those admit only the callers they name."""

import json

import pytest

from tests.security import rawhttp
from tests.security.categories import NO_TOKEN, PUBLIC_LISTENER, WRONG_CALLER
from tests.security.conftest import forged_messages, internal_route_requests, presence_public_url, tokens
from tests.tally import ATTACK

INTERNAL_ONLY = (
    ("GET", "/internal/users?limit=3"),
    ("POST", "/internal/messages"),
    ("PUT", "/internal/users/sec-intruder"),
    ("GET", "/metrics"),
    ("GET", "/readyz"),
)
PRESENCE_INTERNAL_ONLY = (
    ("GET", "/internal/presence/online?ids=a"),
    ("POST", "/internal/presence/heartbeat"),
    ("GET", "/metrics"),
    ("GET", "/readyz"),
)
HISTORY_INTERNAL = (
    ("GET", "/internal/users?limit=3"),
    ("POST", "/internal/messages"),
    ("POST", "/internal/messages/batch"),
    ("POST", "/internal/read"),
    ("POST", "/internal/partners"),
    ("PUT", "/internal/users/sec-intruder"),
    ("GET", "/internal/users/sec-intruder/partners"),
    ("POST", "/internal/replay"),
)
PRESENCE_INTERNAL = (
    ("GET", "/internal/presence/online?ids=a"),
    ("POST", "/internal/presence/heartbeat"),
    ("PUT", "/internal/presence/nodes/intruder"),
    ("DELETE", "/internal/presence/nodes/intruder"),
)
# (caller, method, route) that history's design does not admit: messages and reads are the
# gateway's, the directory is the gateway's (development sign-in) and the admin's, profiles the admin's.
NOT_ADMITTED = (
    ("presence", "POST", "/internal/messages"),
    ("admin", "POST", "/internal/messages"),
    ("presence", "POST", "/internal/messages/batch"),
    ("admin", "POST", "/internal/read"),
    ("presence", "POST", "/internal/read"),
    ("presence", "GET", "/internal/users?limit=3"),
    ("gateway", "PUT", "/internal/users/sec-intruder"),
    ("presence", "PUT", "/internal/users/sec-intruder"),
    ("admin", "POST", "/internal/partners"),
    # Replays are what a user's sockets heard: the gateway's alone, which verified the user.
    ("presence", "POST", "/internal/replay"),
    ("admin", "POST", "/internal/replay"),
)
WRONG_TOKENS = {"none": None, "empty": "", "guessed": "x" * 48, "dev default": "dev-internal-token"}


@pytest.fixture
def forged(request) -> str:
    """The text of this test's forged messages: one of them found stored means it got through."""
    return f"forged by {request.node.name}"


def forged_payload(cast, method: str, route: str, text: str) -> bytes:
    """A well-formed body for `route`, so that only the listener or the token can refuse it."""
    path = route.split("?")[0]
    message = {"senderId": cast.ada.id, "receiverId": cast.grace.id, "text": text}
    if method == "PUT" and path.startswith("/internal/users/"):
        name = path.rsplit("/", 1)[1]
        return json.dumps({"userName": name, "name": name.title()}).encode()
    return json.dumps({
        "/internal/messages": message,
        "/internal/messages/batch": {"messages": [message]},
        "/internal/read": {"readerId": cast.grace.id, "partnerId": cast.ada.id},
        "/internal/partners": {"userIds": [cast.ada.id]},
        "/internal/replay": {"requests": [{"userId": cast.ada.id, "after": "0"}], "limit": 10},
        "/internal/presence/heartbeat": {"nodeId": "intruder"},
        "/internal/presence/nodes/intruder": {"sockets": []},
    }.get(path, {})).encode()


async def send(url: str, method: str, route: str, cast, token: str | None, text: str = "") -> rawhttp.RawAnswer:
    headers = [("Content-Type", "application/json")]
    if token is not None:
        headers.append(("X-Internal-Token", token))
    body = forged_payload(cast, method, route, text) if method != "GET" else b""
    return await rawhttp.request(url, method, route, headers, body)


@pytest.mark.tally(ATTACK, PUBLIC_LISTENER)
@pytest.mark.parametrize("method, route", INTERNAL_ONLY)
@pytest.mark.parametrize("listener", ["history", "gateway"])
async def test_public_listener_serves_no_internal_route(secure_cluster, cast, forged, listener, method, route):
    url = secure_cluster.history_api_url if listener == "history" else secure_cluster.gateway_url("a")
    before = await internal_route_requests(secure_cluster)
    # Even with a valid admin token: the public listener has no such route at all.
    answer = await send(url, method, route, cast, tokens()["admin"], forged)
    assert answer.status == 404, answer
    assert await internal_route_requests(secure_cluster) == before
    assert await forged_messages(secure_cluster, cast, forged) == []


@pytest.mark.tally(ATTACK, PUBLIC_LISTENER)
@pytest.mark.parametrize("method, route", PRESENCE_INTERNAL_ONLY)
async def test_presence_public_listener_serves_no_internal_route(secure_cluster, cast, method, route):
    answer = await send(presence_public_url(secure_cluster), method, route, cast, tokens()["gateway"])
    assert answer.status == 404, answer


@pytest.mark.tally(ATTACK, NO_TOKEN)
@pytest.mark.parametrize("token", list(WRONG_TOKENS))
@pytest.mark.parametrize("method, route", HISTORY_INTERNAL)
async def test_history_internal_route_without_a_valid_token_is_401(secure_cluster, cast, forged, method, route,
                                                                   token):
    answer = await send(secure_cluster.history_url, method, route, cast, WRONG_TOKENS[token], forged)
    assert answer.status == 401, answer
    assert await forged_messages(secure_cluster, cast, forged) == []


@pytest.mark.tally(ATTACK, NO_TOKEN)
@pytest.mark.parametrize("token", list(WRONG_TOKENS))
@pytest.mark.parametrize("method, route", PRESENCE_INTERNAL)
async def test_presence_internal_route_without_a_valid_token_is_401(secure_cluster, cast, method, route, token):
    answer = await send(secure_cluster.presence_url, method, route, cast, WRONG_TOKENS[token])
    assert answer.status == 401, answer


@pytest.mark.tally(ATTACK, WRONG_CALLER)
@pytest.mark.parametrize("caller, method, route", NOT_ADMITTED)
async def test_history_refuses_a_service_on_a_route_it_may_not_call(secure_cluster, cast, forged, caller, method,
                                                                    route):
    answer = await send(secure_cluster.history_url, method, route, cast, tokens()[caller], forged)
    assert answer.status == 403, answer
    assert await forged_messages(secure_cluster, cast, forged) == []


@pytest.mark.parametrize("caller, method, route", [
    ("gateway", "GET", "/internal/users?limit=3"),
    ("admin", "GET", "/internal/users?limit=3"),
    ("admin", "PUT", "/internal/users/sec-admitted"),
    ("gateway", "POST", "/internal/partners"),
    ("presence", "POST", "/internal/partners"),
    ("gateway", "POST", "/internal/replay"),
])
async def test_history_admits_the_callers_a_route_names(secure_cluster, cast, caller, method, route):
    """The control for the refusals above: the same routes do answer their own callers."""
    answer = await send(secure_cluster.history_url, method, route, cast, tokens()[caller])
    assert answer.status == 200, answer
