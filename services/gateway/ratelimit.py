"""Per-user token buckets, kept in the gateway node's memory.

A bucket per user per node: a user with sockets on two nodes gets at most twice the rate,
which bounds abuse without a Redis round trip on every message.
"""

import time

from ..shared.errors import RateLimited

# Buckets that have refilled completely are dropped once the table grows past this.
PRUNE_ABOVE = 50_000


class RateLimiter:
    def __init__(self, rate_per_second: float, burst: int, clock=time.monotonic):
        self._rate = rate_per_second
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> None:
        """Takes one token for `key`, or raises `RateLimited` saying when to retry."""
        now = self._clock()
        tokens, stamp = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - stamp) * self._rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            raise RateLimited(retry_after=(1 - tokens) / self._rate)
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > PRUNE_ABOVE:
            self._prune(now)

    def _prune(self, now: float) -> None:
        full_after = self._burst / self._rate
        self._buckets = {key: value for key, value in self._buckets.items() if now - value[1] < full_after}
