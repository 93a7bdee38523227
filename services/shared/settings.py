"""The settings every service reads from the environment; each service subclasses it."""

import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Environment variables named like the fields, upper-cased (`REDIS_URL`, `PORT`, ...)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    port: int = 8000
    host: str = "0.0.0.0"
    node_id: str = Field(default_factory=socket.gethostname)
    log_level: str = "INFO"
    # Shared secret that internal routes (`/internal/*`) require in `X-Internal-Token`.
    internal_token: str = "dev-internal-token"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Prefix of every Redis key and of the Socket.IO pub/sub channel, so that several
    # deployments (or test runs) can share one Redis without seeing each other.
    redis_prefix: str = "parley"
    # Seconds SIGTERM waits for in-flight work before the process exits.
    shutdown_grace_seconds: float = 10.0


class JwtSettings(BaseSettings):
    """How user tokens are verified (and, for development, issued)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    jwt_secret: str = "parley-development-jwt-secret-not-for-production"
    # Comma-separated; "none" is never accepted whatever this says.
    jwt_algorithms: str = "HS256"

    @property
    def algorithms(self) -> list[str]:
        names = [name.strip() for name in self.jwt_algorithms.split(",") if name.strip()]
        return [name for name in names if name.lower() != "none"]
