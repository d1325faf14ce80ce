"""The requests one connection has in flight: a bounded set of tasks.

A session runs each request that waits on a server (one routed request, or one bulk
request however many servers it reaches) as a task of its :class:`InFlight`. At most
``limit`` run at once; :meth:`InFlight.spawn` waits for a free slot, so a client that
floods stops having its frames read (TCP backpressure) and only waits on itself. When
the connection ends, :meth:`InFlight.cancel` cancels what is left and waits for it: nobody
is left to read the replies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

__all__ = ["InFlight"]


class InFlight:
    """At most ``limit`` request tasks at once; ``closed`` waits for the connection to close
    (a client waiting for a slot stops waiting then)."""

    def __init__(self, limit: int, *, closed: Callable[[], Awaitable[None]]) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = closed

    def __len__(self) -> int:
        return len(self._tasks)

    async def spawn(self, request: Coroutine[Any, Any, object], *, name: str) -> None:
        """Run ``request`` as a task holding a slot, once one is free (never, if the
        connection closes while the client waits for one)."""
        if not self._slots.locked():
            await self._slots.acquire()
        elif not await self._take_slot():
            return request.close()
        task = asyncio.create_task(request, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _take_slot(self) -> bool:
        """Wait for a free slot, or for the connection to close (False)."""
        acquire = asyncio.ensure_future(self._slots.acquire())
        closed = asyncio.ensure_future(self._closed())
        try:
            await asyncio.wait({acquire, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not acquire.done():
                acquire.cancel()
        return acquire.done() and not acquire.cancelled()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def cancel(self) -> None:
        """Cancel every task still running and wait until they have all ended."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
