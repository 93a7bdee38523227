"""User tokens: where a request carries one, how it is verified, and how development issues one."""

import time
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie

import jwt
from jwt.algorithms import HMACAlgorithm

from .errors import Unauthorized
from .limits import valid_user_id
from .settings import DEV_LOGIN_SECRET, JwtSettings

DEV_TOKEN_TTL_SECONDS = 7 * 24 * 3600


class _CheckedSecretsHMAC(HMACAlgorithm):
    """PyJWT's HMAC, that skips its key checks for the secrets a `TokenVerifier` has had checked once.

    PyJWT checks on every call, before it verifies the signature, that the secret is no PEM,
    SSH, DER or JWK key (`HMACAlgorithm.prepare_key`), and PyJWK does not spare it (2.15:
    `_verify_signature` prepares `key.key` again). That was half of a token's verification and
    3.5 % of a gateway's CPU in a connect storm (py-spy, `python -m bench.presence_bench
    --sockets 10000`, bench/RESULTS.md "Connect storm and presence"); with this it is gone from
    the profile, though the storm's CPU a connect moved within noise (0.75 -> 0.74 ms a gateway,
    d08cf0c). Any other key still goes
    through every check. Installed with PyJWT's public `register_algorithm` (custom algorithms
    are its documented extension); it relies on `prepare_key` returning the secret's bytes,
    which tests/unit/test_auth.py checks against PyJWT's own.
    """

    checked: set[bytes] = set()  # shared by every instance: the secrets already prepared once

    def prepare_key(self, key: str | bytes) -> bytes:
        key_bytes = key.encode() if isinstance(key, str) else key
        if key_bytes in self.checked:
            return key_bytes
        return super().prepare_key(key)


_HMAC_HASHES = {"HS256": HMACAlgorithm.SHA256, "HS384": HMACAlgorithm.SHA384, "HS512": HMACAlgorithm.SHA512}


def _check_secret_once(key: str, algorithms: list[str]) -> None:
    """Checks `key` as PyJWT would (so a bad secret still fails on every token), and from then
    on skips that check for it in the HMAC algorithms among `algorithms`."""
    for name in algorithms:
        if name not in _HMAC_HASHES:
            continue
        if not isinstance(jwt.get_algorithm_by_name(name), _CheckedSecretsHMAC):
            jwt.unregister_algorithm(name)
            jwt.register_algorithm(name, _CheckedSecretsHMAC(_HMAC_HASHES[name]))
        try:
            _CheckedSecretsHMAC.checked.add(HMACAlgorithm(_HMAC_HASHES[name]).prepare_key(key))
        except jwt.InvalidKeyError:
            pass  # not an HMAC secret: PyJWT refuses it on every token, as before


class TokenVerifier:
    """Turns a JWT into the user id in its `id` claim, or raises `Unauthorized`.

    `exp` is required (unless `JWT_REQUIRE_EXP=false`), `iss` and `aud` are checked when the
    settings name them, and the id must be a user id's shape. In development the sign-in's own
    key is accepted too; nowhere else.
    """

    def __init__(self, settings: JwtSettings, *, dev_mode: bool = False):
        self._keys = [settings.jwt_secret] + ([DEV_LOGIN_SECRET] if dev_mode else [])
        self._algorithms = settings.algorithms
        self._leeway = settings.jwt_leeway_seconds
        self._issuer = settings.jwt_issuer or None
        self._audience = settings.jwt_audience or None
        required = ["id"] + (["exp"] if settings.jwt_require_exp else [])
        required += [claim for claim, wanted in (("iss", self._issuer), ("aud", self._audience)) if wanted]
        self._options = {"require": required, "verify_aud": self._audience is not None}
        for key in self._keys:
            _check_secret_once(key, self._algorithms)

    def user_id(self, token: str | None) -> str:
        if not token:
            raise Unauthorized("Authentication required")
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=self._algorithms,
                    options=self._options,
                    issuer=self._issuer,
                    audience=self._audience,
                    leeway=self._leeway,
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError:
                break
            if not valid_user_id(claims["id"]):
                break
            return claims["id"]
        raise Unauthorized("Invalid or expired token")


def issue_token(user_id: str, settings: JwtSettings, ttl_seconds: int = DEV_TOKEN_TTL_SECONDS) -> str:
    """A token shaped like the social app's own (`{"id": ...}`), signed with `JWT_SECRET`: for tests."""
    return _signed(user_id, settings.jwt_secret, settings, ttl_seconds)


def issue_dev_token(user_id: str, settings: JwtSettings, ttl_seconds: int = DEV_TOKEN_TTL_SECONDS) -> str:
    """The development sign-in's token: signed with its own key, valid only where DEV_MODE is on."""
    return _signed(user_id, DEV_LOGIN_SECRET, settings, ttl_seconds)


def _signed(user_id: str, key: str, settings: JwtSettings, ttl_seconds: int) -> str:
    now = int(time.time())
    claims = {"id": user_id, "iat": now, "exp": now + ttl_seconds}
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, key, algorithm="HS256")


def token_from_headers(headers: Mapping[str, str]) -> str | None:
    """The `token` cookie, else `Authorization: Bearer <token>` (never the query string)."""
    cookie_header = headers.get("Cookie")
    if cookie_header:
        try:
            morsel = SimpleCookie(cookie_header).get("token")
        except CookieError:
            morsel = None
        if morsel and morsel.value:
            return morsel.value
    scheme, _, credentials = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None
