"""A token bucket: how many requests one connection may send, and when it may send more.

Pure: the clock is injected (a callable returning seconds), so it is tested without
waiting. The session keeps one bucket per connection whose principal is rate-limited
(viewer, moderator, operator, and connections not yet authenticated); admins and the open
loopback mode have none.

The bucket holds up to ``burst`` requests and refills at ``rate`` per second. A request
that finds it empty is refused with ``error rate_limited`` saying how long to wait: never
dropped, never delayed (a delayed request would hold a slot and hide the limit from the
client).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` requests per second on average, ``burst`` at once."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> float:
        """Spend one request: 0.0 when allowed, else the seconds until one would be."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def describe(self, retry: float) -> str:
        """The sentence a refused client reads."""
        return (
            f"Too many requests: at most {self.rate:g} requests/s, bursts of {self.burst}; "
            f"retry in {max(retry, 0.05):.1f} s."
        )
