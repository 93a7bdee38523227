"""Token buckets: a burst, then the sustained rate, per key."""

import pytest

from services.gateway.ratelimit import RateLimiter
from services.shared.errors import RateLimited


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_burst_then_the_rate_and_other_keys_unaffected():
    clock = Clock()
    limiter = RateLimiter(rate_per_second=2, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("flooder")
    with pytest.raises(RateLimited) as refused:
        limiter.check("flooder")
    assert refused.value.retry_after == pytest.approx(0.5)
    limiter.check("someone else")
    clock.now += 0.5
    limiter.check("flooder")
    with pytest.raises(RateLimited):
        limiter.check("flooder")


def test_idle_buckets_are_pruned_when_the_table_grows(monkeypatch):
    monkeypatch.setattr("services.gateway.ratelimit.PRUNE_ABOVE", 10)
    clock = Clock()
    limiter = RateLimiter(rate_per_second=1, burst=1, clock=clock)
    for number in range(11):
        limiter.check(f"user {number}")
    clock.now += 5
    limiter.check("late")
    assert len(limiter._buckets) == 1
