"""User tokens: where a request carries one, how it is verified, and how development issues one."""

import time
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie

import jwt

from .errors import Unauthorized
from .limits import valid_user_id
from .settings import DEV_LOGIN_SECRET, JwtSettings

DEV_TOKEN_TTL_SECONDS = 7 * 24 * 3600


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
