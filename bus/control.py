"""One owner task for the broker calls that open, change and close channels and queues.

Why. aiormq treats a channel call (declare, bind, unbind, consume, cancel, close) that
is cancelled before the broker answered as a broken channel and closes it with code 504.
When the cancelled call was itself the channel's close, the broker receives a second
close for a channel it has already closed and drops the whole connection (``504
CHANNEL_ERROR - expected 'channel.open'``): every request in flight fails and every queue
is made again. A cancelled caller is ordinary (a session that ends, a request given up at
its timeout, a shutdown), so no caller may be the task that runs such a call.

How. :meth:`Control.call` queues the call; one task (:meth:`Control.start`) runs the
queued calls one at a time, each to its end. The caller waits for the result shielded,
within a timeout: it may give up or be cancelled, and the call still completes. What a
caller that gave up leaves behind (a subscription made for nobody) is handed to its
``orphan`` clean-up, queued in turn. Publishing and consuming do not go through here:
aiormq undoes a cancelled publish cleanly, and they are the hot path.

Errors: a call's own exception reaches its caller; :class:`~resofleet.bus.errors.BusUnavailable`
when the queue is full, when the call did not complete within the caller's timeout, or
when the bus is closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from .errors import BusUnavailable

__all__ = ["CONTROL_QUEUE", "CONTROL_TIMEOUT", "Control"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Calls that may wait for the owner task. A gateway makes a handful at a time (its
#: fan-out rebinds under a lock; subscriptions are few); a thousand waiting means the
#: broker stopped answering, and refusing more bounds memory.
CONTROL_QUEUE: Final = 1000
#: Seconds a caller waits for its call by default: a round trip takes a millisecond, so
#: five seconds is a broker that is not answering. The call itself goes on (it ends when
#: the broker answers or the heartbeat drops the connection).
CONTROL_TIMEOUT: Final = 5.0

_Item = tuple[Callable[[], Awaitable[Any]], "asyncio.Future[Any]", str]


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: its caller may have given up on it."""
    if not future.cancelled():
        future.exception()


class Control:
    """The owner task and its bounded queue (see the module docstring)."""

    def __init__(self, *, name: str, maxsize: int = CONTROL_QUEUE) -> None:
        self.name = name
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize)
        self._task: asyncio.Task[None] | None = None
        self._current: asyncio.Future[Any] | None = None
        self._closing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"bus-control:{self.name}"
            )

    def submit(self, op: Callable[[], Awaitable[Any]], *, what: str) -> asyncio.Future[Any]:
        """Queue ``op`` without waiting for it; its failure is logged by the owner."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        if self._closing:
            future.set_exception(BusUnavailable("The bus is closing."))
            return future
        try:
            self._queue.put_nowait((op, future, what))
        except asyncio.QueueFull:
            future.set_exception(
                BusUnavailable(
                    "The message broker is not answering: too many broker calls are waiting."
                )
            )
        return future

    async def call(
        self,
        op: Callable[[], Awaitable[T]],
        *,
        what: str,
        timeout: float = CONTROL_TIMEOUT,
        orphan: Callable[[T], Awaitable[None]] | None = None,
    ) -> T:
        """Run ``op`` in the owner task and return its result (see the module docstring).
        ``orphan(result)`` is queued if the caller gives up and ``op`` succeeds anyway."""
        future = self.submit(op, what=what)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            self._adopt(future, orphan, what)
            raise BusUnavailable(
                f"The message broker did not complete {what} within {timeout:g} s."
            ) from None
        except asyncio.CancelledError:
            self._adopt(future, orphan, what)
            raise

    def _adopt(
        self,
        future: asyncio.Future[T],
        orphan: Callable[[T], Awaitable[None]] | None,
        what: str,
    ) -> None:
        if orphan is None:
            return

        def clean_up(done: asyncio.Future[T]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            result = done.result()
            self.submit(lambda: orphan(result), what=f"cleaning up after {what}")

        future.add_done_callback(clean_up)

    async def _run(self) -> None:
        while True:
            op, future, what = await self._queue.get()
            if future.done():
                continue
            self._current = future
            try:
                result = await op()
            except asyncio.CancelledError:
                if not future.done():
                    future.set_exception(BusUnavailable("The bus is closing."))
                raise
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                log.debug("bus %s: %s failed: %r", self.name, what, exc)
            else:
                if not future.done():
                    future.set_result(result)
            finally:
                self._current = None

    async def close(self, *, timeout: float) -> None:
        """Refuse new calls, fail the queued ones, let the running one end (at most
        ``timeout`` seconds, so that it is not cut off while the connection still runs),
        then stop the owner task. Idempotent."""
        self._closing = True
        while not self._queue.empty():
            _, future, _ = self._queue.get_nowait()
            if not future.done():
                future.set_exception(BusUnavailable("The bus is closing."))
        current = self._current
        if current is not None and not current.done():
            await asyncio.wait({current}, timeout=timeout)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
