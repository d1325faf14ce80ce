"""The Docker engine's events for one container, read by a thread of their own.

The SDK's ``events()`` call has no timeout (it asks with ``timeout=None``, since a stream
may rightly be silent for hours), so an engine that takes the connection and never
answers would hold its caller for ever, and with it the runtime's lifecycle lock. So the
subscription is made by the reader thread, never by the event loop's worker threads, and
the loop waits for it with a deadline (:meth:`EventsWatcher.ensure`): past
``SUBSCRIBE_TIMEOUT`` the action that needed the events fails with a clear error and lets
go of the lock, while the one thread keeps trying in the background (never more than one
per runtime). A subscription that the engine refuses, made after the action began to
wait, fails the action at once with the engine's reason (one that was under way before,
and is dropped now, is tried again: the engine may be back). A stream that breaks (the
engine restarted) is subscribed again every ``EVENTS_RETRY``; once a new subscription is
live, ``on_gap`` runs, for whatever happened in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Final

from ..errors import RuntimeActionFailed

__all__ = ["EVENTS_RETRY", "JOIN_TIMEOUT", "SUBSCRIBE_TIMEOUT", "EventsWatcher"]

log = logging.getLogger(__name__)

#: Seconds an action waits for the events subscription before it fails.
SUBSCRIBE_TIMEOUT: Final = 10.0
#: Seconds before the events stream is subscribed again after it broke (engine restart).
EVENTS_RETRY: Final = 1.0
#: Seconds close() waits for a reader thread to end (one stuck on a mute engine is a daemon).
JOIN_TIMEOUT: Final = 5.0


class EventsWatcher:
    """One container's events, from a thread, handed to the loop with ``post``.

    ``new_client()`` makes the thread's own SDK client (its own connection, so closing the
    stream ends nothing else); ``fail(exc)`` turns an SDK error into the
    :class:`RuntimeActionFailed` an action reports; ``post(fn, *args)`` runs ``fn`` on the
    event loop (``call_soon_threadsafe``); ``on_event(event)`` and ``on_gap()`` run there.
    """

    def __init__(
        self,
        server: str,
        container: str,
        *,
        new_client: Callable[[], Any],
        fail: Callable[[Exception], RuntimeActionFailed],
        post: Callable[..., None],
        on_event: Callable[[dict[str, Any]], None],
        on_gap: Callable[[], None],
    ) -> None:
        self.server = server
        self.container = container
        self._new_client = new_client
        self._fail = fail
        self._post = post
        self._on_event = on_event
        self._on_gap = on_gap
        self._closed = threading.Event()
        self._live = threading.Event()  # a subscription is open and being read
        self._thread: threading.Thread | None = None
        self._stream: Any = None
        self._attempts = 0  # subscriptions begun (by the thread)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # on the loop only

    async def ensure(self) -> None:
        """Return once the events are being read; RuntimeActionFailed if the engine refuses
        the subscription, or does not answer it within ``SUBSCRIBE_TIMEOUT``."""
        since = self._attempts
        self._closed.clear()
        if self._thread is None or not self._thread.is_alive():
            self._live.clear()
            self._thread = threading.Thread(
                target=self._watch, name=f"docker-events:{self.server}", daemon=True
            )
            self._thread.start()
        if self._live.is_set():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (since, waiter)
        self._waiters.append(entry)  # the thread's news is posted, so it comes after this
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await waiter
        except TimeoutError:
            raise RuntimeActionFailed(
                f"{self.server}: the Docker engine did not answer the events subscription for "
                f"container {self.container!r} within {SUBSCRIBE_TIMEOUT:g} s"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    async def close(self) -> None:
        """End the stream and the thread (which closes its own client)."""
        self._closed.set()
        self._live.clear()
        thread, self._thread = self._thread, None  # a thread no longer named here stops
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(stream.close)
        if thread is not None:
            await asyncio.to_thread(thread.join, JOIN_TIMEOUT)
            if thread.is_alive():
                log.warning("server=%s: the Docker events thread did not end (the engine does not "
                            "answer); it is left behind and stops when the engine lets go", self.server)

    # -- the loop side of the thread's news --------------------------------------------

    def _settle(self, attempt: int, error: RuntimeActionFailed | None) -> None:
        """Subscription ``attempt`` is live (no error) or failed: tell the actions waiting
        for it (a failure only those that began waiting before the attempt began)."""
        for since, waiter in list(self._waiters):
            if waiter.done() or (error is not None and since >= attempt):
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    # -- the thread ---------------------------------------------------------------------

    def _watch(self) -> None:
        me = threading.current_thread()
        client: Any = None
        first = True
        try:
            while self._thread is me and not self._closed.is_set():
                try:
                    self._attempts += 1
                    attempt = self._attempts
                    if client is None:
                        client = self._new_client()
                    stream = client.events(
                        decode=True, filters={"container": self.container, "type": "container"}
                    )
                    if self._thread is not me or self._closed.is_set():
                        stream.close()
                        break
                    self._stream = stream
                    self._live.set()
                    self._post(self._settle, attempt, None)
                    if not first:
                        self._post(self._on_gap)  # events may have been missed meanwhile
                    first = False
                    for event in stream:
                        self._post(self._on_event, event)
                except Exception as exc:
                    if self._thread is me and not self._closed.is_set():
                        if self._live.is_set():
                            log.warning("server=%s: Docker events stream failed: %s", self.server, exc)
                        else:
                            log.debug("server=%s: Docker events subscription failed: %s", self.server, exc)
                            self._post(self._settle, attempt, self._fail(exc))
                if self._thread is me:
                    self._live.clear()
                    self._stream = None
                self._closed.wait(EVENTS_RETRY)
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
