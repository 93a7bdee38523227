"""User tokens: what the social app's JWT must carry, checked wherever a token is taken.

A cluster of this module's own sets JWT_ISSUER and JWT_AUDIENCE (and leaves JWT_REQUIRE_EXP at its
default). Every token below is refused at the gateway's REST API, at history's own public API
(defence in depth) and at the Socket.IO handshake; the control token is admitted on all three.
"""

import asyncio
import json
import time
import warnings

import jwt
import pytest

from tests.security import rawhttp
from tests.security.categories import JWT_CLAIMS
from tests.security.conftest import LOG_DIR, admitted, handshake_reply
from services.devtools.stores import free_port
from tests.support import JWT, create_user, running_cluster
from tests.tally import ATTACK

ISSUER = "https://social.example"
AUDIENCE = "parley"
# The development sign-in's own key (DESIGN-13: DEV_LOGIN_SECRET); never valid outside DEV_MODE.
DEV_LOGIN_SECRET = "dev-login-secret-of-this-test-0123456789abcdef"
USER_ID = "sec-jwt-user"
SURFACES = ("gateway REST", "history REST", "handshake")


def claims(**overrides) -> dict:
    now = int(time.time())
    base = {"id": USER_ID, "iat": now, "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE}
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def signed(payload: dict, key: str = JWT.jwt_secret, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():  # HS512 with the test's 48-byte key: short for it, and refused anyway
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(payload, key, algorithm=algorithm)


def unsigned(payload: dict) -> str:
    return jwt.encode(payload, None, algorithm="none")


REFUSED = {
    "no exp": lambda: signed(claims(exp=None)),
    "expired beyond the leeway": lambda: signed(claims(exp=int(time.time()) - 600)),
    "wrong iss": lambda: signed(claims(iss="https://evil.example")),
    "no iss": lambda: signed(claims(iss=None)),
    "wrong aud": lambda: signed(claims(aud="another-app")),
    "no aud": lambda: signed(claims(aud=None)),
    "signed with the development login key": lambda: signed(claims(), DEV_LOGIN_SECRET),
    "alg none": lambda: unsigned(claims()),
    "another key": lambda: signed(claims(), "an-attackers-own-secret-0123456789abcdef"),
    "HS512 (not an allowed algorithm)": lambda: signed(claims(), algorithm="HS512"),
    "no id": lambda: signed(claims(id=None)),
}


@pytest.fixture(scope="module")
def jwt_cluster(stores):
    """Gateway `a` as production runs it, and gateway `dev` in DEV_MODE with the same settings."""
    with running_cluster(stores, LOG_DIR / "jwt", nodes=("a",), JWT_ISSUER=ISSUER, JWT_AUDIENCE=AUDIENCE,
                         DEV_LOGIN_SECRET=DEV_LOGIN_SECRET) as running:
        dev = running.stack.add("gateway", "gateway-dev", free_port(), free_port(), {"DEV_MODE": "true"})
        dev.start()
        dev.wait_ready()
        yield running


@pytest.fixture(scope="module")
def dev_token(jwt_cluster) -> str:
    """A token from the development sign-in (`POST /dev/session` on the DEV_MODE gateway)."""
    async def sign_in() -> str:
        user = await create_user(jwt_cluster.history_url, "sec-dev-signin")
        answer = await rawhttp.request(jwt_cluster.gateway_url("dev"), "POST", "/dev/session",
                                       [("Content-Type", "application/json")],
                                       json.dumps({"userName": user.user_name}).encode())
        assert answer.status == 200, answer
        return json.loads(answer.body)["token"]

    return asyncio.run(sign_in())


async def admitted_on(cluster, surface: str, token: str) -> tuple[bool, str]:
    if surface == "handshake":
        reply = await handshake_reply(cluster.gateway_url("a"), token)
        return admitted(reply), reply
    url = cluster.gateway_url("a") if surface == "gateway REST" else cluster.history_api_url
    answer = await rawhttp.request(url, "GET", "/api/messages/conversations", [("Authorization", f"Bearer {token}")])
    assert answer.status in (200, 401), answer
    return answer.status == 200, str(answer)


@pytest.mark.parametrize("surface", SURFACES)
async def test_a_token_with_every_claim_right_is_admitted(jwt_cluster, surface):
    ok, detail = await admitted_on(jwt_cluster, surface, signed(claims()))
    assert ok, detail


@pytest.mark.tally(ATTACK, JWT_CLAIMS)
@pytest.mark.parametrize("case", list(REFUSED))
@pytest.mark.parametrize("surface", SURFACES)
async def test_a_token_with_a_wrong_claim_is_refused(jwt_cluster, surface, case):
    ok, detail = await admitted_on(jwt_cluster, surface, REFUSED[case]())
    assert not ok, detail


async def test_the_development_sign_in_token_works_in_development(jwt_cluster, dev_token):
    """The control: the token is real, a DEV_MODE gateway admits it."""
    assert admitted(await handshake_reply(jwt_cluster.gateway_url("dev"), dev_token))


@pytest.mark.tally(ATTACK, JWT_CLAIMS)
@pytest.mark.parametrize("surface", SURFACES)
async def test_a_development_sign_in_token_is_refused_outside_development(jwt_cluster, dev_token, surface):
    ok, detail = await admitted_on(jwt_cluster, surface, dev_token)
    assert not ok, detail
