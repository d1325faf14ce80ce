"""The bus interface both transports implement, and the pieces they share.

A bus carries three things between gateways and agents:

- requests for one server and their replies (:meth:`Bus.request`, :meth:`Bus.serve`);
- events from servers, routed by ``<server>.<kind>`` (:meth:`Bus.publish`,
  :meth:`Bus.subscribe`);
- presence: announcements, discover requests and revocations on one fanout
  (:meth:`Bus.broadcast`, :meth:`Bus.presence`);
- work queues: named, lasting, shared and acknowledged queues, fed by events or by their
  users, for services that must act on every event once (:meth:`Bus.work_queue`,
  :mod:`resofleet.bus.work`).

Every consumer-side queue is bounded and drops its OLDEST item when full, counting what it
dropped: a slow reader loses history, never memory, and never slows the publisher.

Deadlines. A request's ``timeout`` is counted by its requester from the moment it sends,
and :func:`stamp` writes that moment plus the timeout into the request as ``deadline``
(wall clock, epoch seconds). The serving side hands its handler the earlier of two
bounds (:func:`serve_deadline`): the request's arrival plus its timeout (no clocks
compared), and its absolute deadline less :data:`MAX_CLOCK_SKEW`. The second catches a
request the broker held (frozen, overloaded) and delivered after its requester had been
told ``timeout``: such a request is past its deadline on arrival and is never run.

The skew is subtracted, not added: a request is run only while ``now < deadline - skew``
on the agent's clock. If the agent's clock is behind the gateway's by up to the skew, the
agent's ``now`` is at most ``skew`` earlier than the gateway's, so the request still starts
before the gateway's deadline, when the requester is still waiting: nothing runs after its
requester was told ``timeout`` as long as the hosts' clocks agree within the skew. (Adding
it would instead let a request start up to twice the skew late.) The price: a request
has its timeout less the skew to get to its agent and start (13 s of a command's 15 s,
3 s of ``get_output``'s 5 s), less again by as much as an agent's clock runs ahead. The
skew never takes more than half of a timeout (:data:`MAX_SKEW_SHARE`).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Final, Generic, TypeVar

import msgspec

from resofleet.contracts import BusEvent, BusReply, BusRequest, PresenceMessage

if TYPE_CHECKING:
    from .work import Overflow, WorkQueue

__all__ = [
    "QUEUE_TTL_MARGIN",
    "queue_ttl",
    "Bus",
    "DEFAULT_EVENT_QUEUE",
    "DEFAULT_PRESENCE_QUEUE",
    "Handler",
    "LinkListener",
    "MAX_CLOCK_SKEW",
    "Served",
    "Subscription",
    "serve_deadline",
    "stamp",
    "topic_matches",
]

log = logging.getLogger(__name__)

#: Events a subscriber may fall behind by before the oldest are dropped. An output event
#: carries a batch of up to a few hundred lines, so this is tens of thousands of lines: far
#: more than a live reader lags, small enough to bound memory (a few MB).
DEFAULT_EVENT_QUEUE: Final = 10_000

#: Presence messages are small and rare (one per agent every few seconds).
DEFAULT_PRESENCE_QUEUE: Final = 1_000

#: Seconds by which the clocks of two hosts of a fleet may differ (see the module
#: docstring): hosts kept by NTP agree within milliseconds; two seconds also covers a
#: host that syncs rarely, and leaves 3 s of the shortest timeout (get_output's 5 s).
MAX_CLOCK_SKEW: Final = 2.0
#: Share of a request's timeout the skew may take at most: requests with timeouts under
#: twice the skew (tests; no real request is that short) keep half of their time.
MAX_SKEW_SHARE: Final = 0.5

#: ``handler(request, deadline)``: ``deadline`` is on the loop's clock (``loop.time()``),
#: from :func:`serve_deadline`. It may have passed already when the handler is called (the
#: broker held the request): the handler then answers ``timeout`` and runs nothing, so
#: that its own records (the agent's audit log) show what did not run.
Handler = Callable[[BusRequest, float], Awaitable[BusReply]]

#: ``listener(up)``: called whenever :attr:`Bus.connected` changes after start.
LinkListener = Callable[[bool], None]


def stamp(request: BusRequest, *, now: float) -> BusRequest:
    """``request`` with its absolute ``deadline`` (``now``, wall clock, plus its timeout),
    unless it has one already."""
    if request.deadline is not None:
        return request
    return msgspec.structs.replace(request, deadline=now + request.timeout)


def serve_deadline(
    request: BusRequest, *, arrived: float, now: float, wall: float, skew: float = MAX_CLOCK_SKEW
) -> float:
    """The loop-clock deadline for serving ``request``, which arrived at ``arrived`` (loop
    clock; ``now`` is the loop clock and ``wall`` the wall clock at the same moment): the
    earlier of its arrival plus its timeout and its absolute deadline less the skew
    (capped at :data:`MAX_SKEW_SHARE` of the timeout). See the module docstring."""
    relative = arrived + request.timeout
    if request.deadline is None:  # an older requester: only the relative bound
        return relative
    margin = min(skew, request.timeout * MAX_SKEW_SHARE)
    return min(relative, now + (request.deadline - margin - wall))

T = TypeVar("T")


class Subscription(Generic[T]):
    """A bounded, drop-oldest stream of items; iterate it or :meth:`get` from it. Several
    tasks may :meth:`get` at once (a webhook's workers share one): each item wakes one of
    them, in the order they started waiting."""

    def __init__(self, maxsize: int, *, on_close: Callable[[], Awaitable[None]] | None = None):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.dropped = 0
        self._items: collections.deque[T] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._on_close = on_close

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def push(self, item: T) -> None:
        """Add ``item``; when full, drop the oldest item and count it. Never blocks."""
        if self._closed:
            return
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        if self._waiters:
            self._wake_one()

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def get_nowait(self) -> T | None:
        return self._items.popleft() if self._items else None

    async def get(self) -> T:
        """The next item; raises :class:`EOFError` once the subscription is closed."""
        while not self._items:
            if self._closed:
                raise EOFError("subscription closed")
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                woken = waiter.done() and not waiter.cancelled()
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                if woken and self._items:  # woken, then cancelled: pass the item on
                    self._wake_one()
                raise
        return self._items.popleft()

    def drain(self, limit: int | None = None) -> list[T]:
        """Take every queued item (up to ``limit``) without waiting."""
        n = len(self._items) if limit is None else min(limit, len(self._items))
        return [self._items.popleft() for _ in range(n)]

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            try:
                yield await self.get()
            except EOFError:
                return

    async def close(self) -> None:
        """Stop receiving; pending :meth:`get` calls end with :class:`EOFError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if self._on_close is not None:
            await self._on_close()


class EventSubscription(Subscription[BusEvent]):
    """Events for the topic patterns it is bound to; bindings change while it runs."""

    def __init__(
        self,
        maxsize: int,
        *,
        bind: Callable[[str], Awaitable[None]],
        unbind: Callable[[str], Awaitable[None]],
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(maxsize, on_close=on_close)
        self.patterns: set[str] = set()
        self._bind = bind
        self._unbind = unbind

    async def bind(self, pattern: str) -> None:
        """Receive the events ``pattern`` matches. ``patterns`` is what the subscription
        wants: a pattern stays in it even if binding failed (the link was down), and the
        transport binds it once the link is back."""
        if pattern not in self.patterns:
            self.patterns.add(pattern)
            await self._bind(pattern)

    async def unbind(self, pattern: str) -> None:
        if pattern in self.patterns:
            self.patterns.discard(pattern)
            await self._unbind(pattern)


class Served(abc.ABC):
    """A running :meth:`Bus.serve`; :meth:`close` stops taking requests."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class Bus(abc.ABC):
    """One small async interface over a message bus (see the module docstring)."""

    def __init__(self) -> None:
        self._link_listeners: list[LinkListener] = []

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether requests and publishes can go out right now."""

    @property
    def problem(self) -> str | None:
        """Why the bus is not :attr:`connected` (a phrase for logs and ``/readyz``), or
        ``None`` when it is."""
        return None if self.connected else "the message bus is not connected"

    def on_link(self, listener: LinkListener) -> Callable[[], None]:
        """Call ``listener(up)`` each time :attr:`connected` changes after start (the link
        dropped or froze, the link is back); returns a function that stops the calls."""
        self._link_listeners.append(listener)

        def remove() -> None:
            if listener in self._link_listeners:
                self._link_listeners.remove(listener)

        return remove

    def _notify_link(self, up: bool) -> None:
        for listener in list(self._link_listeners):
            try:
                listener(up)
            except Exception:  # one listener's bug must not stop the others
                log.exception("bus: a link listener failed")

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Fail pending requests, stop serving and subscriptions, disconnect. Idempotent."""

    @abc.abstractmethod
    async def request(self, request: BusRequest) -> BusReply:
        """Send ``request`` to the agent serving ``request.server`` and await its reply.

        Raises :class:`~resofleet.bus.errors.ServerOffline` at once when nobody serves it,
        :class:`~resofleet.bus.errors.RequestTimeout` after ``request.timeout`` seconds, and
        :class:`~resofleet.bus.errors.BusUnavailable` when (or the moment) the link is down.
        """

    @abc.abstractmethod
    async def serve(self, server: str, handler: Handler, *, concurrency: int = 1) -> Served:
        """Take requests for ``server``, at most ``concurrency`` at a time; requests wait
        their turn in the bus, where a request whose timeout runs out is dropped unseen.
        Raises :class:`~resofleet.bus.errors.AlreadyServed` if another agent serves ``server``."""

    @abc.abstractmethod
    async def publish(self, event: BusEvent) -> bool:
        """Send ``event`` to every subscription whose pattern matches ``<server>.<kind>``
        (and every work queue bound to it); whether any took it (none: nobody listens,
        and the event is gone)."""

    @abc.abstractmethod
    async def subscribe(
        self, patterns: Iterable[str] = ("#",), *, maxsize: int = DEFAULT_EVENT_QUEUE
    ) -> EventSubscription:
        """Events whose routing key matches any of ``patterns`` (AMQP topic syntax)."""

    @abc.abstractmethod
    async def broadcast(self, message: PresenceMessage) -> None:
        """Send an announcement, discover request or revocation to every presence reader."""

    @abc.abstractmethod
    async def presence(
        self, *, maxsize: int = DEFAULT_PRESENCE_QUEUE
    ) -> Subscription[PresenceMessage]:
        """Every presence message sent from now on."""

    @abc.abstractmethod
    async def work_queue(
        self,
        name: str,
        *,
        events: Iterable[str] = (),
        maxsize: int,
        overflow: Overflow = "drop-oldest",
        single_active: bool = False,
    ) -> WorkQueue:
        """Declare the work queue ``name`` (or find it), bound to the events ``events``
        matches (AMQP topic syntax; none: only :meth:`WorkQueue.put` feeds it). See
        :mod:`resofleet.bus.work`. A queue declared again must be declared alike:
        ``ValueError`` otherwise."""

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_topic_cache: dict[str, re.Pattern[str]] = {}


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: words split on ``.``, ``*`` is one word, ``#`` zero or more."""
    rx = _topic_cache.get(pattern)
    if rx is None:
        parts = []
        for word in pattern.split("."):
            if word == "#":
                parts.append(r"(?:[^.]+(?:\.[^.]+)*)?")
            elif word == "*":
                parts.append(r"[^.]+")
            else:
                parts.append(re.escape(word))
        body = r"\.".join(parts).replace(r"(?:[^.]+(?:\.[^.]+)*)?\.", r"(?:[^.]+\.)*")
        body = body.replace(r"\.(?:[^.]+(?:\.[^.]+)*)?", r"(?:\.[^.]+)*")
        rx = _topic_cache.setdefault(pattern, re.compile(body))
    return rx.fullmatch(key) is not None


#: Seconds by which a request's queue TTL undercuts its timeout (see :func:`queue_ttl`).
QUEUE_TTL_MARGIN: Final = 0.05


def queue_ttl(timeout: float) -> float:
    """How long a request may wait in the broker's queue: a little less than the
    requester waits, since the broker's clock starts after the requester's. A request
    taken by the agent right at the deadline would otherwise run after the requester
    has given up."""
    return max(0.001, timeout - min(QUEUE_TTL_MARGIN, timeout / 10))
