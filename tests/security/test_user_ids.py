"""User ids are 1-64 characters of [A-Za-z0-9_.-], at the handshake, in REST and in the internal API."""

import json
import time
from urllib.parse import quote

import jwt
import pytest

from tests.security import rawhttp
from tests.security.categories import USER_ID_SHAPES
from tests.security.conftest import admitted, handshake_reply, tokens
from tests.support import JWT
from tests.tally import ATTACK

BAD_IDS = {
    "empty": "",
    "65 characters": "a" * 65,
    "space": "ada lovelace",
    "slash": "ada/lovelace",
    "backslash": "ada\\lovelace",
    "non-ASCII": "adä",
    "NUL": "ada\x00",
    "tab": "ada\t",
    "newline": "ada\n",
    "semicolon": "ada;drop",
    "angle brackets": "<script>",
    "at sign": "ada@example.com",
    "plus": "ada+1",
    "percent": "ada%2e",
    "colon": "ada:1",
    "right-to-left override": "ada\u202e",
    "full-width letters": "\uff41\uff44\uff41",
}
# Shapes that cannot even be written as one path segment: the traversal suite covers those.
NOT_A_SEGMENT = {"empty", "slash"}
GOOD_ID = "Ada.Lovelace-1_x"


def token_for(user_id: object) -> str:
    now = int(time.time())
    return jwt.encode({"id": user_id, "iat": now, "exp": now + 600}, JWT.jwt_secret, algorithm="HS256")


@pytest.mark.tally(ATTACK, USER_ID_SHAPES)
@pytest.mark.parametrize("shape", list(BAD_IDS))
async def test_handshake_refuses_a_token_whose_id_has_a_bad_shape(secure_cluster, shape):
    reply = await handshake_reply(secure_cluster.gateway_url("a"), token_for(BAD_IDS[shape]))
    assert not admitted(reply), reply


@pytest.mark.tally(ATTACK, USER_ID_SHAPES)
@pytest.mark.parametrize("shape", list(BAD_IDS))
@pytest.mark.parametrize("listener", ["gateway", "history"])
async def test_rest_refuses_a_token_whose_id_has_a_bad_shape(secure_cluster, listener, shape):
    url = secure_cluster.gateway_url("a") if listener == "gateway" else secure_cluster.history_api_url
    answer = await rawhttp.request(url, "GET", "/api/messages/conversations",
                                   [("Authorization", f"Bearer {token_for(BAD_IDS[shape])}")])
    assert answer.status == 401, answer


@pytest.mark.tally(ATTACK, USER_ID_SHAPES)
@pytest.mark.parametrize("shape", [shape for shape in BAD_IDS if shape not in NOT_A_SEGMENT])
@pytest.mark.parametrize("route", ["/api/users/{}", "/api/messages/{}", "/api/messages/read/{}"])
async def test_rest_refuses_a_user_id_path_parameter_with_a_bad_shape(secure_cluster, cast, route, shape):
    method = "PUT" if "/read/" in route else "GET"
    answer = await rawhttp.request(secure_cluster.gateway_url("a"), method, route.format(quote(BAD_IDS[shape], safe="")),
                                   [("Authorization", f"Bearer {cast.mallory.token}")])
    assert answer.status == 400, answer
    # Named as the bad field, or refused by the gateway's raw-path guard before routing.
    assert json.loads(answer.body)["code"] in ("invalid_userId", "invalid_payload"), answer


def internal_calls(cast, bad: str) -> dict[str, tuple[str, str, str, bytes]]:
    """(caller, method, route, body) per internal route that takes a user id."""
    return {
        "PUT /internal/users/{id}": ("admin", "PUT", f"/internal/users/{quote(bad, safe='')}",
                                     json.dumps({"userName": "sec-bad-shape", "name": "Bad"}).encode()),
        "POST /internal/messages receiverId": ("gateway", "POST", "/internal/messages", json.dumps(
            {"senderId": cast.ada.id, "receiverId": bad, "text": "to a bad id"}).encode()),
        "POST /internal/read readerId": ("gateway", "POST", "/internal/read", json.dumps(
            {"readerId": bad, "partnerId": cast.ada.id}).encode()),
        "GET /internal/users/{id}/partners": ("gateway", "GET", f"/internal/users/{quote(bad, safe='')}/partners", b""),
    }


IN_PATH = ("PUT /internal/users/{id}", "GET /internal/users/{id}/partners")
IN_BODY = ("POST /internal/messages receiverId", "POST /internal/read readerId")
INTERNAL_CASES = [(call, shape) for call in IN_PATH for shape in BAD_IDS if shape not in NOT_A_SEGMENT] + [
    (call, shape) for call in IN_BODY for shape in BAD_IDS]


@pytest.mark.tally(ATTACK, USER_ID_SHAPES)
@pytest.mark.parametrize("call, shape", INTERNAL_CASES)
async def test_internal_api_refuses_a_user_id_with_a_bad_shape(secure_cluster, cast, call, shape):
    caller, method, route, body = internal_calls(cast, BAD_IDS[shape])[call]
    answer = await rawhttp.request(secure_cluster.history_url, method, route,
                                   [("X-Internal-Token", tokens()[caller]), ("Content-Type", "application/json")], body)
    assert answer.status == 400, answer


async def test_an_id_of_letters_digits_dot_dash_underscore_is_accepted(secure_cluster):
    """The control: the full alphabet of ids works from profile sync to handshake."""
    answer = await rawhttp.request(secure_cluster.history_url, "PUT", f"/internal/users/{GOOD_ID}",
                                   [("X-Internal-Token", tokens()["admin"]), ("Content-Type", "application/json")],
                                   json.dumps({"userName": "sec-good-shape", "name": "Good"}).encode())
    assert answer.status == 200, answer
    assert admitted(await handshake_reply(secure_cluster.gateway_url("a"), token_for(GOOD_ID)))
