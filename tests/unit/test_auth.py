"""Token verification refuses everything but a good HS token with a user id in `id` and an `exp`."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from jwt.algorithms import HMACAlgorithm

from services.shared.auth import TokenVerifier, issue_dev_token, issue_token, token_from_headers
from services.shared.errors import Unauthorized
from services.shared.settings import DEV_LOGIN_SECRET, JwtSettings
from tests.tally import ATTACK

SETTINGS = JwtSettings(jwt_secret="unit-test-secret-" + "0" * 60)
VERIFIER = TokenVerifier(SETTINGS)
LATER = int(time.time()) + 3600  # every bad token below is bad for one reason only, not a missing exp
RSA_PUBLIC_KEY_AS_SECRET = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"


def test_a_good_token_gives_its_user_id():
    assert VERIFIER.user_id(issue_token("665f1c2e8a1b2c3d4e5f0001", SETTINGS)) == "665f1c2e8a1b2c3d4e5f0001"


@pytest.mark.tally(ATTACK, "bad JWTs: expired, not yet valid, wrong secret, alg none, claims")
@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "garbage",
        jwt.encode({"id": "u1", "exp": int(time.time()) - 60}, SETTINGS.jwt_secret, algorithm="HS256"),
        jwt.encode({"id": "u1", "exp": LATER, "nbf": int(time.time()) + 86400}, SETTINGS.jwt_secret, algorithm="HS256"),
        jwt.encode({"id": "u1", "exp": LATER}, "some-other-secret-" + "1" * 60, algorithm="HS256"),
        jwt.encode({"id": "u1", "exp": LATER}, None, algorithm="none"),
        jwt.encode({"id": "u1", "exp": LATER}, SETTINGS.jwt_secret, algorithm="HS512"),
        jwt.encode({"sub": "u1", "exp": LATER}, SETTINGS.jwt_secret, algorithm="HS256"),
        jwt.encode({"id": 7, "exp": LATER}, SETTINGS.jwt_secret, algorithm="HS256"),
        jwt.encode({"id": "", "exp": LATER}, SETTINGS.jwt_secret, algorithm="HS256"),
        jwt.encode({"id": "x" * 65, "exp": LATER}, SETTINGS.jwt_secret, algorithm="HS256"),
        jwt.encode({"id": "u1"}, SETTINGS.jwt_secret, algorithm="HS256"),
        jwt.encode({"id": "../internal", "exp": LATER}, SETTINGS.jwt_secret, algorithm="HS256"),
        jwt.encode({"id": "u1\x00", "exp": LATER}, SETTINGS.jwt_secret, algorithm="HS256"),
        jwt.encode({"id": "a b", "exp": LATER}, SETTINGS.jwt_secret, algorithm="HS256"),
        issue_dev_token("u1", SETTINGS),
    ],
    ids=["none", "empty", "garbage", "expired", "not yet valid", "wrong secret", "alg none", "unlisted alg",
         "no id", "id not a string", "empty id", "id too long", "no exp", "id with a slash", "id with NUL",
         "id with a space", "development sign-in token outside DEV_MODE"],
)
def test_bad_tokens_are_refused(token):
    with pytest.raises(Unauthorized):
        VERIFIER.user_id(token)


def test_none_is_never_an_accepted_algorithm():
    assert JwtSettings(jwt_algorithms="none,HS256, NONE").algorithms == ["HS256"]


def forge_hs256(claims: dict, key: str) -> str:
    """An HS256 token signed by hand, as an attacker would, with any key (pyjwt refuses PEM keys)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = part(b'{"alg":"HS256","typ":"JWT"}') + "." + part(json.dumps(claims).encode())
    signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + part(signature)


@pytest.mark.tally(ATTACK, "HS/RS algorithm confusion")
@pytest.mark.parametrize("algorithms", ["RS256", "RS256,HS256"])
def test_hs_rs_confusion_is_refused(algorithms):
    """A token HMAC-signed with the server's public key must not pass a verifier holding that key."""
    settings = JwtSettings(jwt_secret=RSA_PUBLIC_KEY_AS_SECRET, jwt_algorithms=algorithms)
    forged = forge_hs256({"id": "u1", "exp": LATER}, RSA_PUBLIC_KEY_AS_SECRET)
    with pytest.raises(Unauthorized):
        TokenVerifier(settings).user_id(forged)


@pytest.mark.parametrize("secret", [SETTINGS.jwt_secret, DEV_LOGIN_SECRET])
def test_a_secret_checked_once_prepares_as_pyjwt_prepares_it(secret):
    """The verifier's HMAC skips PyJWT's per-call key checks only for its own secrets, already
    checked, and gives the same key bytes as PyJWT's own HMAC (which a PyJWT upgrade could change)."""
    TokenVerifier(SETTINGS, dev_mode=True)
    ours, pyjwt_own = jwt.get_algorithm_by_name("HS256"), HMACAlgorithm(HMACAlgorithm.SHA256)
    assert type(ours) is not HMACAlgorithm
    assert ours.prepare_key(secret) == pyjwt_own.prepare_key(secret)
    with pytest.raises(jwt.InvalidKeyError):
        ours.prepare_key(RSA_PUBLIC_KEY_AS_SECRET)  # never checked through: refused on every call


def test_a_hand_signed_token_with_the_right_secret_passes():
    """The forging helper itself is sound: with the real secret it makes a valid token."""
    assert VERIFIER.user_id(forge_hs256({"id": "u1", "exp": LATER}, SETTINGS.jwt_secret)) == "u1"


def test_token_comes_from_the_cookie_then_the_bearer_header():
    assert token_from_headers({"Cookie": "a=1; token=abc", "Authorization": "Bearer xyz"}) == "abc"
    assert token_from_headers({"Authorization": "Bearer xyz"}) == "xyz"
    assert token_from_headers({"Authorization": "Basic xyz"}) is None
    assert token_from_headers({"Cookie": "\x00broken"}) is None
    assert token_from_headers({}) is None


def test_a_token_without_exp_passes_only_where_the_app_issues_such_tokens():
    token = jwt.encode({"id": "u1"}, SETTINGS.jwt_secret, algorithm="HS256")
    lenient = SETTINGS.model_copy(update={"jwt_require_exp": False})
    assert TokenVerifier(lenient).user_id(token) == "u1"


@pytest.mark.tally(ATTACK, "bad JWTs: expired, not yet valid, wrong secret, alg none, claims")
@pytest.mark.parametrize("claims", [{}, {"iss": "other-app", "aud": "parley"}, {"iss": "social-app", "aud": "other"}],
                         ids=["no iss or aud", "wrong iss", "wrong aud"])
def test_issuer_and_audience_are_checked_when_set(claims):
    settings = SETTINGS.model_copy(update={"jwt_issuer": "social-app", "jwt_audience": "parley"})
    good = jwt.encode({"id": "u1", "exp": LATER, "iss": "social-app", "aud": "parley"}, SETTINGS.jwt_secret)
    assert TokenVerifier(settings).user_id(good) == "u1"
    with pytest.raises(Unauthorized):
        TokenVerifier(settings).user_id(jwt.encode({"id": "u1", "exp": LATER, **claims}, SETTINGS.jwt_secret))


def test_the_development_sign_in_token_passes_only_in_dev_mode():
    token = issue_dev_token("u1", SETTINGS)
    assert TokenVerifier(SETTINGS, dev_mode=True).user_id(token) == "u1"
    with pytest.raises(Unauthorized):
        VERIFIER.user_id(token)


def test_clock_skew_is_allowed_only_within_the_leeway():
    skewed = jwt.encode({"id": "u1", "exp": int(time.time()) - 20}, SETTINGS.jwt_secret)
    assert VERIFIER.user_id(skewed) == "u1"  # 20 s past exp, within the default 30 s
    strict = SETTINGS.model_copy(update={"jwt_leeway_seconds": 0})
    with pytest.raises(Unauthorized):
        TokenVerifier(strict).user_id(skewed)
