"""A token bucket: how many requests one connection may send, and when it may send more.

Pure: the clock is injected (a callable returning seconds), so it is tested without
waiting. The session keeps one bucket per connection whose principal is rate-limited
(viewer, moderator, operator, and connections not yet authenticated); admins and the open
loopback mode have none.

The bucket holds up to ``burst`` requests and refills at ``rate`` per second. A request
costs by the work it makes (:func:`cost`): one token, and a ``subscribe`` one more per
:data:`SUBSCRIBE_IDS_PER_TOKEN` server ids it lists (each id is checked and counted), never
more than the burst. A bulk ``command`` or ``container`` (``servers``) costs one token per
server it reaches or per pattern it lists, whichever is more (:func:`bulk_cost`), at most
the burst: each server is a console command or a container action, as many as that many
requests would run, and each pattern is matched against every server in scope; the frame
pays one when it arrives, the session one per further pattern before expanding them and
the rest once they are expanded. A request that finds too few tokens is refused with ``error rate_limited`` saying how long to wait: never
dropped, never delayed (a delayed request would hold a slot and hide the limit from the
client).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from resofleet.contracts import ClientMessage, Subscribe

__all__ = ["SUBSCRIBE_IDS_PER_TOKEN", "TokenBucket", "bulk_cost", "cost"]

#: Server ids a ``subscribe`` may list per extra token: checking and counting 32 ids costs
#: about what one ordinary request does. The longest list (256 ids) costs 9 tokens, so a
#: limited client can resubscribe a full list about twice a second (20 tokens/s), and the
#: churn of many such lists stays a small share of the gateway's time.
SUBSCRIBE_IDS_PER_TOKEN: Final = 32


def cost(message: ClientMessage) -> float:
    """Tokens ``message`` costs (see the module docstring)."""
    if isinstance(message, Subscribe) and not isinstance(message.servers, str):
        return 1.0 + len(message.servers) / SUBSCRIBE_IDS_PER_TOKEN
    return 1.0


def bulk_cost(servers: int, *, burst: int) -> float:
    """Tokens a bulk request reaching ``servers`` servers costs beyond the one its frame
    paid (see the module docstring): together never more than the ``burst``, so that any
    bulk request can pass once the bucket is full."""
    return float(max(min(servers, burst) - 1, 0))


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

    def take(self, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens (at most the burst, so any request can pass): 0.0 when
        allowed, else the seconds until it would be."""
        cost = min(cost, float(self.burst))
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self.rate

    def describe(self, retry: float) -> str:
        """The sentence a refused client reads."""
        return (
            f"Too many requests: at most {self.rate:g} requests/s, bursts of {self.burst} (a "
            f"subscribe costs one more per {SUBSCRIBE_IDS_PER_TOKEN} ids, a bulk request one "
            f"per server it reaches); "
            f"retry in {max(retry, 0.05):.1f} s."
        )
