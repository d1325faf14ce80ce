"""Work queues: named queues that outlive their consumers, shared by them, acknowledged.

The event subscriptions of :class:`~resofleet.bus.base.Bus` are private and lossy by
design (a gateway that falls behind loses old output, never memory). A service that must
act on every event once (the notifier) needs the opposite, and
:meth:`~resofleet.bus.base.Bus.work_queue` gives it:

- **Named and lasting.** A work queue is declared by name and keeps its messages while
  nobody consumes it; over RabbitMQ it is a durable queue (it survives its consumers and a
  broker restart; the *messages* survive a broker restart only when published persistent:
  :meth:`WorkQueue.put` publishes persistent, the events agents publish are not). The
  in-process twin keeps them for the life of its :class:`~resofleet.bus.LocalBus`.
- **Fed by events** (``events``: topic patterns bound on the events exchange, so every
  event published while the queue exists is kept), **or by** :meth:`WorkQueue.put`.
- **Shared.** Several consumers of one queue each get different messages (round robin),
  so several processes may share the work without doing it twice. With
  ``single_active=True`` only one consumer at a time gets messages (RabbitMQ's single
  active consumer): the others wait, and take over, in order, when it goes. That keeps the
  messages in order for a consumer that keeps state across them.
- **Acknowledged.** Each :class:`Delivery` is :meth:`~Delivery.ack`-ed once handled. A
  consumer holds at most ``prefetch`` unacknowledged deliveries; the ones it still holds
  when it closes (or dies, or loses its link) go back to the queue, marked
  :attr:`~Delivery.redelivered`, for the next consumer. So a message is handled at least
  once; it is handled twice only when a consumer dies after acting on it and before
  acknowledging it.
- **Bounded.** ``maxsize`` messages wait at most. ``overflow="drop-oldest"`` drops the
  oldest waiting message when a new one arrives (events: a publisher is never refused);
  ``overflow="reject"`` refuses the new one (:meth:`WorkQueue.put` raises
  :class:`~resofleet.bus.errors.QueueFull`). Messages out with a consumer do not count.

Bodies are bytes (events arrive as :func:`~resofleet.contracts.encode_bus` encodes them),
so both transports hand their consumers the same thing.

This module holds the interface and the in-process twin (:class:`LocalWorkQueue`); the
RabbitMQ one is :mod:`resofleet.bus.amqp_work`.
"""

from __future__ import annotations

import abc
import collections
import logging
from collections.abc import Iterable
from typing import Final, Literal

from resofleet.contracts import BusEvent, encode_bus

from .base import Subscription, topic_matches
from .errors import BusUnavailable, QueueFull

__all__ = [
    "DEFAULT_PREFETCH",
    "DEFAULT_WORK_QUEUE",
    "Delivery",
    "LocalWorkQueue",
    "Overflow",
    "WorkQueue",
]

log = logging.getLogger(__name__)

#: Messages a work queue keeps waiting by default: a notifier that is away for an hour
#: from a busy fleet (a hundred servers, one event a minute each) finds them all, and at a
#: few hundred bytes each the broker's memory stays in the megabytes.
DEFAULT_WORK_QUEUE: Final = 100_000
#: Unacknowledged deliveries a consumer holds by default: enough to keep a consumer busy
#: across a broker round trip, few enough that a consumer that dies hands back little.
DEFAULT_PREFETCH: Final = 32

Overflow = Literal["drop-oldest", "reject"]


class Delivery(abc.ABC):
    """One message out with a consumer. :meth:`ack` once it is handled; :meth:`requeue`
    gives it back to the queue (the next consumer gets it, marked redelivered). Either is
    a no-op once the delivery went back to the queue on its own (its consumer closed)."""

    __slots__ = ("body", "redelivered")

    def __init__(self, body: bytes, *, redelivered: bool) -> None:
        self.body = body
        #: Whether a consumer had it before (and may have acted on it).
        self.redelivered = redelivered

    @abc.abstractmethod
    async def ack(self) -> None: ...

    @abc.abstractmethod
    async def requeue(self) -> None: ...


class WorkQueue(abc.ABC):
    """A named, shared, acknowledged queue (see the module docstring)."""

    def __init__(self, name: str, *, maxsize: int, overflow: Overflow) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.name = name
        self.maxsize = maxsize
        self.overflow: Overflow = overflow

    @abc.abstractmethod
    async def put(self, body: bytes) -> None:
        """Add a message (persistent). Raises :class:`~resofleet.bus.errors.QueueFull` when
        a queue with ``overflow="reject"`` is full, and
        :class:`~resofleet.bus.errors.BusUnavailable` when the link is down; when it
        returns, the queue has the message (over RabbitMQ: the broker confirmed it)."""

    @abc.abstractmethod
    async def consume(self, *, prefetch: int = DEFAULT_PREFETCH) -> Subscription[Delivery]:
        """Deliveries from the queue, at most ``prefetch`` unacknowledged at a time. Closing
        the subscription gives back every delivery not acknowledged yet."""


# -- the in-process twin ---------------------------------------------------------------------


class _LocalDelivery(Delivery):
    __slots__ = ("_consumer", "_done")

    def __init__(self, body: bytes, *, redelivered: bool, consumer: _Consumer) -> None:
        super().__init__(body, redelivered=redelivered)
        self._consumer = consumer
        self._done = False

    async def ack(self) -> None:
        self._consumer.settle(self, requeue=False)

    async def requeue(self) -> None:
        self._consumer.settle(self, requeue=True)


class _Consumer:
    """One :meth:`LocalWorkQueue.consume`: its subscription and what it holds unacked."""

    def __init__(self, queue: LocalWorkQueue, prefetch: int) -> None:
        self.queue = queue
        self.prefetch = prefetch
        self.held: dict[_LocalDelivery, None] = {}  # insertion order: oldest first
        self.sub: Subscription[Delivery] = Subscription(prefetch, on_close=self._on_close)

    @property
    def has_room(self) -> bool:
        return not self.sub.closed and len(self.held) < self.prefetch

    def give(self, body: bytes, redelivered: bool) -> None:
        delivery = _LocalDelivery(body, redelivered=redelivered, consumer=self)
        self.held[delivery] = None
        self.sub.push(delivery)  # never full: it holds at most ``prefetch``

    def settle(self, delivery: _LocalDelivery, *, requeue: bool) -> None:
        if delivery._done or delivery not in self.held:
            return
        delivery._done = True
        del self.held[delivery]
        if requeue:
            self.queue._ready.appendleft((delivery.body, True))
        self.queue._dispatch()

    async def _on_close(self) -> None:
        held, self.held = list(self.held), {}
        for delivery in reversed(held):  # back at the head, in their order
            delivery._done = True
            self.queue._ready.appendleft((delivery.body, True))
        self.queue._forget(self)


class LocalWorkQueue(WorkQueue):
    """A work queue inside one process (see the module docstring); made by
    :meth:`resofleet.bus.LocalBus.work_queue`, which feeds it the events it is bound to."""

    def __init__(
        self,
        name: str,
        *,
        events: Iterable[str] = (),
        maxsize: int = DEFAULT_WORK_QUEUE,
        overflow: Overflow = "drop-oldest",
        single_active: bool = False,
    ) -> None:
        super().__init__(name, maxsize=maxsize, overflow=overflow)
        self.patterns = frozenset(events)
        self.single_active = single_active
        #: Messages dropped (``drop-oldest``) since the queue was made.
        self.dropped = 0
        self.closed = False
        self._ready: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._consumers: list[_Consumer] = []
        self._turn = 0

    def __len__(self) -> int:
        """Messages waiting (not out with a consumer)."""
        return len(self._ready)

    def same_shape(
        self, *, events: Iterable[str], maxsize: int, overflow: Overflow, single_active: bool
    ) -> bool:
        """Whether a second declaration asks for this queue as it is (RabbitMQ refuses a
        redeclaration with other arguments; so does the twin)."""
        return (
            frozenset(events) == self.patterns and maxsize == self.maxsize
            and overflow == self.overflow and single_active == self.single_active
        )

    def offer(self, event: BusEvent, key: str) -> bool:
        """Keep ``event`` if the queue is bound to its routing key ``key``; whether it is."""
        if any(topic_matches(p, key) for p in self.patterns):
            self._add(encode_bus(event), drop=True)
            return True
        return False

    async def put(self, body: bytes) -> None:
        if self.closed:
            raise BusUnavailable("The in-process bus is not running.")
        self._add(body, drop=self.overflow == "drop-oldest")

    def _add(self, body: bytes, *, drop: bool) -> None:
        if len(self._ready) >= self.maxsize:
            if not drop:
                raise QueueFull(self.name)
            self._ready.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("bus: work queue %s is full; %d message(s) dropped", self.name, self.dropped)
        self._ready.append((body, False))
        self._dispatch()

    async def consume(self, *, prefetch: int = DEFAULT_PREFETCH) -> Subscription[Delivery]:
        if self.closed:
            raise BusUnavailable("The in-process bus is not running.")
        consumer = _Consumer(self, max(1, prefetch))
        self._consumers.append(consumer)
        self._dispatch()
        return consumer.sub

    def _forget(self, consumer: _Consumer) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand waiting messages to consumers with room: the first one alone when single
        active, else in turn."""
        while self._ready and self._consumers:
            if self.single_active:
                consumer = self._consumers[0]
                if not consumer.has_room:
                    return
            else:
                ready = [c for c in self._consumers if c.has_room]
                if not ready:
                    return
                self._turn = (self._turn + 1) % len(ready)
                consumer = ready[self._turn]
            body, redelivered = self._ready.popleft()
            consumer.give(body, redelivered)

    async def close(self) -> None:
        """The bus closes: consumers end (what they hold is kept, for nobody)."""
        self.closed = True
        for consumer in list(self._consumers):
            await consumer.sub.close()
