"""A wall clock the test holds, for the agent's scheduler (:class:`resofleet.agent.scheduler.Clock`).

Time stands still until the test moves it (:meth:`ManualClock.set`, :meth:`advance`);
every sleeper wakes at each move and sleeps on if its time has not come. So a schedule's
slot comes exactly when the test says, with nothing waited for on the real clock.
"""

from __future__ import annotations

import asyncio


class ManualClock:
    def __init__(self, now: float) -> None:
        self._now = now
        self._moved = asyncio.Event()
        #: Sleeps begun so far.
        self.sleeps = 0
        #: Sleepers waiting right now: a test moves the clock once the scheduler is asleep
        #: (:meth:`asleep`), or the move could come before the scheduler first looked.
        self.sleepers = 0

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        target = self._now + seconds
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        self.sleepers += 1
        try:
            while self._now < target:
                await self._moved.wait()
        finally:
            self.sleepers -= 1

    async def asleep(self, timeout: float = 20.0) -> None:
        """Wait (on the loop, within ``timeout``) until someone sleeps on this clock."""
        async with asyncio.timeout(timeout):
            while not self.sleepers:
                await asyncio.sleep(0.01)

    def set(self, now: float) -> None:
        """Move the clock to ``now`` (also backwards) and wake every sleeper."""
        self._now = now
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)
