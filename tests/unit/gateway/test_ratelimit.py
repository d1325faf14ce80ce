"""The token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from resofleet.gateway.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refused_with_the_wait():
    """A full bucket allows ``burst`` requests at once, then says how long to wait."""
    clock = Clock()
    bucket = TokenBucket(20.0, 50, clock=clock)
    assert all(bucket.take() == 0.0 for _ in range(50))
    assert bucket.take() == pytest.approx(0.05)


def test_refills_at_the_rate_and_never_beyond_burst():
    """Tokens come back at ``rate`` per second, up to ``burst``."""
    clock = Clock()
    bucket = TokenBucket(10.0, 5, clock=clock)
    for _ in range(5):
        bucket.take()
    clock.now += 0.25  # 2.5 tokens
    assert [bucket.take() for _ in range(3)][:2] == [0.0, 0.0]
    clock.now += 100.0
    assert sum(bucket.take() == 0.0 for _ in range(10)) == 5


def test_sustained_rate_is_the_rate():
    """Over a long run, allowed requests per second converge on ``rate``."""
    clock = Clock()
    bucket = TokenBucket(20.0, 50, clock=clock)
    allowed = 0
    for _ in range(10_000):  # 1000 requests/s for 10 s
        clock.now += 0.001
        allowed += bucket.take() == 0.0
    assert 50 + 200 - 2 <= allowed <= 50 + 200 + 1


def test_refusals_do_not_spend():
    """A refused request costs nothing: the client is not punished for asking."""
    clock = Clock()
    bucket = TokenBucket(1.0, 1, clock=clock)
    bucket.take()
    for _ in range(100):
        assert bucket.take() > 0
    clock.now += 1.0
    assert bucket.take() == 0.0


def test_message_names_the_limit_and_the_wait():
    """The sentence says the rate, the burst and when to retry."""
    text = TokenBucket(20.0, 50).describe(0.31)
    assert "20 requests/s" in text and "bursts of 50" in text and "retry in 0.3 s" in text


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        TokenBucket(0.0, 5)
