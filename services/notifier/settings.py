"""Everything the notifier reads from its environment."""

from pydantic import Field

from ..shared.errors import ParleyError
from ..shared.push import vapid_public_key
from ..shared.settings import PostgresSettings, PushSettings, ServiceSettings


class NotifierSettings(ServiceSettings, PostgresSettings, PushSettings):
    port: int = 8400
    internal_port: int = 8401
    # The same database as history (which owns the schema): it reads subscriptions and removes
    # those the push service says are gone. A few statements per notification: a small pool.
    db_pool_max_size: int = 5
    # The VAPID private key (base64url, 32 bytes; a Secret): the notifier signs every push with
    # it (RFC 8292). Its public half is VAPID_PUBLIC_KEY, which browsers subscribed with.
    vapid_private_key: str = ""
    # Who runs this server, for the push services (the VAPID token's `sub`): a mailto: or https URL.
    vapid_subject: str = "mailto:push@parley.invalid"
    # Jobs one notifier holds at once (collecting, sending or waiting to retry); it reads no
    # more from the stream until some are done.
    push_concurrency: int = Field(default=256, ge=1)
    # Seconds one request to a push service may take.
    push_timeout_seconds: float = 10.0
    # How long a push service keeps a notification for a browser that is offline (RFC 8030 TTL).
    push_ttl_seconds: int = Field(default=86400, ge=0)
    # A push answered 429, 5xx or not at all is retried, after PUSH_BACKOFF_SECONDS doubling
    # each time, or after its Retry-After (at most PUSH_MAX_RETRY_AFTER_SECONDS), up to
    # PUSH_MAX_ATTEMPTS attempts in all.
    push_max_attempts: int = Field(default=6, ge=1)
    push_backoff_seconds: float = Field(default=0.5, gt=0)
    push_max_retry_after_seconds: float = Field(default=60.0, gt=0)
    # Messages to one person in one conversation within this many seconds of their last
    # notification make one notification ("3 new messages from Ada").
    collapse_seconds: float = Field(default=3.0, ge=0)
    # A job another notifier took and has not acknowledged (nor touched) for this long is
    # claimed by this one: that notifier died. Longer than any one wait of a retry.
    claim_idle_seconds: float = Field(default=120.0, gt=0)

    def invalid_settings(self) -> list[str]:
        problems = []
        if self.vapid_private_key:
            try:
                public = vapid_public_key(self.vapid_private_key)
            except ParleyError:
                problems.append("VAPID_PRIVATE_KEY is not base64url of a 32-byte P-256 private key")
            else:
                if self.vapid_public_key and public != self.vapid_public_key:
                    problems.append("VAPID_PUBLIC_KEY is not the public half of VAPID_PRIVATE_KEY")
        if self.claim_idle_seconds <= self.push_max_retry_after_seconds + self.push_timeout_seconds:
            problems.append("CLAIM_IDLE_SECONDS must exceed PUSH_MAX_RETRY_AFTER_SECONDS + PUSH_TIMEOUT_SECONDS, "
                            "or a job waiting to be retried would be claimed by another notifier")
        return problems

    def secret_settings(self) -> dict[str, str]:
        return {"VAPID_PRIVATE_KEY": self.vapid_private_key}
