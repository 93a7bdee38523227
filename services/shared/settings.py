"""The settings every service reads from the environment; each service subclasses them.

Outside development (`DEV_MODE` false, the default) a service refuses to start with a secret
that is missing, a development default, a placeholder or short: `load_settings` prints one line
naming the setting and exits, so a forgotten Secret cannot run as a guessable one.
"""

import socket
import sys
from typing import TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .push import DEFAULT_PUSH_HOSTS, parse_push_hosts

# Development defaults, for `make run` only: each is refused outside DEV_MODE.
DEV_JWT_SECRET = "parley-development-jwt-secret-not-for-production"
# The development sign-in's own key, not a setting: its tokens are accepted only in DEV_MODE,
# and never by the social app, which does not know it.
DEV_LOGIN_SECRET = "parley-development-login-key-never-valid-for-the-app"
# Each calling service has a token of its own (the callee tells callers apart by it).
DEV_INTERNAL_TOKENS = {
    caller: f"parley-development-{caller}-token-not-for-production" for caller in ("gateway", "presence", "admin")
}
# The media service's download-link key (issue 16).
DEV_URL_SIGNING_SECRET = "parley-development-media-url-signing-key-not-for-production"
DEVELOPMENT_SECRETS = frozenset(
    {DEV_JWT_SECRET, DEV_LOGIN_SECRET, DEV_URL_SIGNING_SECRET, *DEV_INTERNAL_TOKENS.values()}
)
# 32 bytes: the HMAC-SHA256 key length RFC 7518 asks of HS256, and too long to guess.
MIN_SECRET_BYTES = 32
PLACEHOLDER = "CHANGE-ME"


class ServiceSettings(BaseSettings):
    """Environment variables named like the fields, upper-cased (`REDIS_URL`, `PORT`, ...)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # The public listener: what clients (or, for history, the gateway's forwarding) reach.
    port: int = 8000
    host: str = "0.0.0.0"
    # The internal listener: `/internal/*`, `/readyz` and `/metrics`, for other services and
    # operators only (Kubernetes Services and NetworkPolicies keep it off the public side).
    internal_port: int = 8090
    internal_host: str = "0.0.0.0"
    node_id: str = Field(default_factory=socket.gethostname)
    log_level: str = "INFO"
    # Development mode (`make run`): development secrets are accepted, the web client offers a
    # sign-in with the demo users. Never in production.
    dev_mode: bool = False
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Prefix of every Redis key and of the Socket.IO pub/sub channel, so that several
    # deployments (or test runs) can share one Redis without seeing each other.
    redis_prefix: str = "parley"
    # Seconds SIGTERM waits for in-flight work before the process exits.
    shutdown_grace_seconds: float = 10.0

    def secret_settings(self) -> dict[str, str]:
        """The secrets this service uses, by environment variable name; each is checked at start."""
        return {}

    def caller_tokens(self) -> dict[str, str]:
        """Who may call this service's internal API: caller name -> the token it presents."""
        return {}

    def invalid_settings(self) -> list[str]:
        """One line for each setting that is not weak but cannot work (a key of the wrong shape)."""
        return []


class HeartbeatSettings(BaseSettings):
    """The rhythm gateways beat at and presence sweeps at (both read it, so they agree)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Seconds between a gateway's refreshes of its liveness key (and heartbeats to presence),
    # and between presence's sweeps for nodes whose key has lapsed.
    heartbeat_seconds: float = 5.0


class NodeLivenessSettings(HeartbeatSettings):
    """How long a gateway node's liveness lasts without a refresh (`keys.node_alive_key`).

    One record: the node writes its key itself (routed_manager), so delivery never depends on
    presence being up; the routing script and presence's sweeper only read it.
    """

    # The key's TTL: a node silent this long is dead, so routed emits skip it and presence
    # forgets its sockets (its users go offline). Three heartbeats, so one lost refresh (or a
    # slow Redis) does not declare a live node dead.
    node_ttl_seconds: float = 15.0


class PostgresSettings(BaseSettings):
    """A service with a Postgres pool: history (which owns the schema) and media (its table)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database_url: str = "postgresql://postgres@127.0.0.1:5432/parley"
    db_pool_max_size: int = 20
    # Seconds a query may run before the caller gets `store_unavailable`.
    db_command_timeout_seconds: float = 5.0


class PushSettings(BaseSettings):
    """Web Push (issue 18), as history (which stores subscriptions) and the notifier (which
    sends to them) both check it."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # The VAPID public key (base64url, an uncompressed P-256 point) browsers subscribe with;
    # the notifier signs with its private half (VAPID_PRIVATE_KEY, a Secret).
    vapid_public_key: str = ""
    # Comma-separated hosts a subscription's endpoint may name (or be under): the browsers'
    # push services. The notifier POSTs to these URLs, so no other host is accepted.
    push_hosts: str = ",".join(DEFAULT_PUSH_HOSTS)
    # http://127.0.0.1 endpoints (the push receiver the tests start): on in DEV_MODE, and in
    # tests through this setting; never in production.
    push_allow_loopback_endpoints: bool = False

    @property
    def push_host_list(self) -> tuple[str, ...]:
        return parse_push_hosts(self.push_hosts)

    @property
    def push_loopback_allowed(self) -> bool:
        return self.push_allow_loopback_endpoints or getattr(self, "dev_mode", False)


class JwtSettings(BaseSettings):
    """How user tokens are verified (and, for development, issued)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # The social app's signing key (HS256) or public key; it signs the tokens users present.
    jwt_secret: str = DEV_JWT_SECRET
    # Comma-separated; "none" is never accepted whatever this says.
    jwt_algorithms: str = "HS256"
    # A token without `exp` never expires: refused unless the app's tokens truly have none.
    jwt_require_exp: bool = True
    # Checked when set: the `iss` and `aud` the social app puts in its tokens.
    jwt_issuer: str = ""
    jwt_audience: str = ""
    # Seconds of clock skew allowed on `exp`, `nbf` and `iat`; at most five minutes.
    jwt_leeway_seconds: float = Field(default=30.0, ge=0, le=300)

    @property
    def algorithms(self) -> list[str]:
        names = [name.strip() for name in self.jwt_algorithms.split(",") if name.strip()]
        return [name for name in names if name.lower() != "none"]


def weak_secret_reason(value: str) -> str | None:
    """Why a secret must not be used outside development, or None when it may."""
    if not value:
        return "is not set"
    if value in DEVELOPMENT_SECRETS:
        return "is a development default"
    if PLACEHOLDER.lower() in value.lower():
        return f"still contains the placeholder {PLACEHOLDER}"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"is shorter than {MIN_SECRET_BYTES} bytes"
    return None


def insecure_settings(settings: ServiceSettings) -> list[str]:
    """One line for each secret this service may not start with (none in DEV_MODE)."""
    if settings.dev_mode:
        return []
    problems = []
    for name, value in settings.secret_settings().items():
        if (reason := weak_secret_reason(value)) is not None:
            problems.append(f"{name} {reason}")
    return problems


S = TypeVar("S", bound=ServiceSettings)


def load_settings(settings_class: type[S]) -> S:
    """The service's settings from the environment; exits with one line when a secret is weak."""
    settings = settings_class()
    if problems := insecure_settings(settings) or settings.invalid_settings():
        print(
            f"refusing to start: {'; '.join(problems)} (set strong secrets, or DEV_MODE=true for development)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return settings
