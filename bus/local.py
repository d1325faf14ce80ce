"""LocalBus: the bus inside one process, for ``resofleet up`` and for tests.

It keeps the semantics of :class:`~resofleet.bus.amqp.AmqpBus` where a caller can see them:
``server_offline`` at once for an unserved server, a second ``serve`` of one server id
refused, requests waiting in a bounded per-server queue where an expired one is dropped
unseen, ``timeout`` at the deadline, and bounded drop-oldest subscriptions. Messages are
passed as objects (no encoding): receivers treat them as read-only. Work queues
(:class:`~resofleet.bus.work.LocalWorkQueue`) live as long as the bus and get events
encoded, as they would from the broker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from resofleet.contracts import BusEvent, BusReply, BusRequest, PresenceMessage

from .base import (
    DEFAULT_EVENT_QUEUE,
    DEFAULT_PRESENCE_QUEUE,
    Bus,
    EventSubscription,
    Handler,
    Served,
    Subscription,
    serve_deadline,
    stamp,
    topic_matches,
)
from .work import LocalWorkQueue, Overflow
from .errors import (
    AlreadyServed,
    BusUnavailable,
    RequestTimeout,
    ServerBusy,
    ServerOffline,
    reply_for,
)

__all__ = ["COMMAND_QUEUE_LIMIT", "LocalBus"]

#: Requests that may wait for one server before new ones are refused (``rate_limited``).
#: The console runs one command at a time; a thousand waiting means something is wrong.
COMMAND_QUEUE_LIMIT: Final = 1000


@dataclass(eq=False)
class _Pending:
    request: BusRequest
    arrived: float
    reply: asyncio.Future[BusReply]


def _expire(item: _Pending) -> None:
    """The requester's timer: its request timed out (run by the loop at its timeout)."""
    if not item.reply.done():
        item.reply.set_exception(RequestTimeout(item.request.server, item.request.timeout))


@dataclass(eq=False)
class _LocalServed(Served):
    """One server's requests: a bounded line of waiting requests and its workers.

    A worker with nothing to do parks on a future of its own in ``idle``; a request
    appended to ``waiting`` wakes one. That is what ``asyncio.Queue`` does, without its
    task accounting (``join``) that nothing here uses, a few microseconds a request."""

    bus: LocalBus
    server: str
    handler: Handler
    waiting: collections.deque[_Pending] = field(default_factory=collections.deque)
    idle: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    workers: list[asyncio.Task[None]] = field(default_factory=list)

    def offer(self, item: _Pending) -> None:
        """Queue ``item`` and wake an idle worker; :class:`ServerBusy` past the bound."""
        if len(self.waiting) >= COMMAND_QUEUE_LIMIT:
            raise ServerBusy(self.server)
        self.waiting.append(item)
        idle = self.idle
        while idle:
            wake = idle.popleft()
            if not wake.done():
                wake.set_result(None)
                break

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        waiting = self.waiting
        while True:
            if not waiting:
                wake = loop.create_future()
                self.idle.append(wake)
                try:
                    await wake
                finally:
                    if not wake.done():  # cancelled while parked
                        wake.cancel()
                continue
            item = waiting.popleft()
            now = loop.time()
            # one process, one clock: no skew to allow for
            deadline = serve_deadline(
                item.request, arrived=item.arrived, now=now, wall=time.time(), skew=0.0
            )
            if item.reply.done() or now >= deadline:
                continue  # the requester gave up: a late command is never run
            try:
                reply = await self.handler(item.request, deadline)
            except asyncio.CancelledError:
                if not item.reply.done():
                    item.reply.set_exception(BusUnavailable("The agent stopped."))
                raise
            except Exception as exc:  # a handler bug must not kill the worker
                reply = reply_for(exc, server=self.server)
            if not item.reply.done():
                item.reply.set_result(reply)

    async def close(self) -> None:
        if self.bus._served.get(self.server) is self:
            del self.bus._served[self.server]
        for task in self.workers:
            task.cancel()
        for task in self.workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self.waiting:
            item = self.waiting.popleft()
            if not item.reply.done():
                item.reply.set_exception(ServerOffline(self.server))


class LocalBus(Bus):
    """An in-process bus (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._served: dict[str, _LocalServed] = {}
        self._subscriptions: set[EventSubscription] = set()
        self._presence: set[Subscription[PresenceMessage]] = set()
        self._work: dict[str, LocalWorkQueue] = {}
        self._started = False
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._started and not self._closed

    async def start(self) -> None:
        if not self._started:
            self._started = True
            self._notify_link(self.connected)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._notify_link(False)
        for served in list(self._served.values()):
            await served.close()
        for sub in list(self._subscriptions):
            await sub.close()
        for psub in list(self._presence):
            await psub.close()
        for queue in self._work.values():
            await queue.close()

    def _check(self) -> None:
        if not self.connected:
            raise BusUnavailable("The in-process bus is not running.")

    async def request(self, request: BusRequest) -> BusReply:
        self._check()
        served = self._served.get(request.server)
        if served is None:
            raise ServerOffline(request.server)
        request = stamp(request, now=time.time())
        loop = asyncio.get_running_loop()
        item = _Pending(request, loop.time(), loop.create_future())
        served.offer(item)
        # the timeout is a timer that fails the reply, not ``asyncio.timeout()`` (which
        # cancels this task and takes the cancellation back): a few microseconds a request
        timer = loop.call_later(request.timeout, _expire, item)
        try:
            return await item.reply
        finally:
            timer.cancel()
            # not shielded: a cancelled requester cancels its reply, which tells the
            # worker the requester gave up
            if not item.reply.done():
                item.reply.cancel()

    async def serve(self, server: str, handler: Handler, *, concurrency: int = 1) -> Served:
        self._check()
        if server in self._served:
            raise AlreadyServed(server)
        served = _LocalServed(self, server, handler)
        served.workers = [
            asyncio.create_task(served._work(), name=f"serve:{server}:{i}")
            for i in range(max(1, concurrency))
        ]
        self._served[server] = served
        return served

    async def publish(self, event: BusEvent) -> bool:
        self._check()
        key = f"{event.server}.{event.kind}"
        taken = False
        for sub in self._subscriptions:
            if any(topic_matches(p, key) for p in sub.patterns):
                sub.push(event)
                taken = True
        for queue in self._work.values():
            taken = queue.offer(event, key) or taken
        return taken

    async def subscribe(
        self, patterns: Iterable[str] = ("#",), *, maxsize: int = DEFAULT_EVENT_QUEUE
    ) -> EventSubscription:
        self._check()

        async def nothing(_: str) -> None:
            return None

        sub: EventSubscription

        async def on_close() -> None:
            self._subscriptions.discard(sub)

        sub = EventSubscription(maxsize, bind=nothing, unbind=nothing, on_close=on_close)
        for pattern in patterns:
            await sub.bind(pattern)
        self._subscriptions.add(sub)
        return sub

    async def work_queue(
        self,
        name: str,
        *,
        events: Iterable[str] = (),
        maxsize: int,
        overflow: Overflow = "drop-oldest",
        single_active: bool = False,
    ) -> LocalWorkQueue:
        self._check()
        events = tuple(events)
        queue = self._work.get(name)
        if queue is None:
            queue = LocalWorkQueue(
                name, events=events, maxsize=maxsize, overflow=overflow, single_active=single_active
            )
            self._work[name] = queue
        elif not queue.same_shape(
            events=events, maxsize=maxsize, overflow=overflow, single_active=single_active
        ):
            raise ValueError(f"the work queue {name!r} exists with other arguments")
        return queue

    async def broadcast(self, message: PresenceMessage) -> None:
        self._check()
        for sub in self._presence:
            sub.push(message)

    async def presence(
        self, *, maxsize: int = DEFAULT_PRESENCE_QUEUE
    ) -> Subscription[PresenceMessage]:
        self._check()
        sub: Subscription[PresenceMessage]

        async def on_close() -> None:
            self._presence.discard(sub)

        sub = Subscription(maxsize, on_close=on_close)
        self._presence.add(sub)
        return sub
