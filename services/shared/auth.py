"""User tokens: where a request carries one, how it is verified, and how development issues one."""

import time
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie

import jwt

from .errors import Unauthorized
from .settings import JwtSettings

MAX_USER_ID_LENGTH = 64


class TokenVerifier:
    """Turns a JWT into the user id in its `id` claim, or raises `Unauthorized`."""

    def __init__(self, settings: JwtSettings):
        self._secret = settings.jwt_secret
        self._algorithms = settings.algorithms

    def user_id(self, token: str | None) -> str:
        if not token:
            raise Unauthorized("Authentication required")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=self._algorithms,
                options={"require": ["id"], "verify_aud": False},
                leeway=5,
            )
        except jwt.PyJWTError:
            raise Unauthorized("Invalid or expired token") from None
        user_id = claims["id"]
        if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID_LENGTH:
            raise Unauthorized("Invalid or expired token")
        return user_id


def issue_token(user_id: str, settings: JwtSettings, ttl_seconds: int = 7 * 24 * 3600) -> str:
    """A token shaped like the social app's own (`{"id": ...}`), for development and tests."""
    now = int(time.time())
    claims = {"id": user_id, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, settings.jwt_secret, algorithm=settings.algorithms[0])


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
