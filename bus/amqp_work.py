"""Work queues over RabbitMQ (:mod:`resofleet.bus.work` says what they promise).

- A work queue is a durable queue of that name, declared with ``x-max-length`` and
  ``x-overflow`` (``drop-head`` for ``drop-oldest``, ``reject-publish`` for ``reject``),
  and ``x-single-active-consumer`` when asked. RabbitMQ refuses to declare an existing
  queue with other arguments (``PRECONDITION_FAILED``): that is a ``ValueError`` here.
  Bindings to the events exchange are added, never removed: a pattern dropped from a
  later declaration stays bound until the queue is deleted (``rabbitmqctl delete_queue``).
- :meth:`AmqpWorkQueue.put` publishes persistent, ``mandatory``, through the default
  exchange on a channel with publisher confirms, and returns once the broker confirmed:
  a nack (``reject-publish``: the queue is full) is :class:`~resofleet.bus.errors.QueueFull`,
  a return (the queue was deleted) or a link down is
  :class:`~resofleet.bus.errors.BusUnavailable`.
- Each :meth:`AmqpWorkQueue.consume` is a channel of its own with ``basic.qos`` =
  ``prefetch`` and manual acknowledgement. Closing it (or the connection dropping) makes
  the broker requeue what it had not acknowledged; an ack for a delivery of a channel
  that is gone is dropped (the broker has requeued that message already). aio-pika's
  robust channel declares the queue and consumes again after a reconnection.

Caveat: RabbitMQ closes a channel that holds a delivery unacknowledged for longer than its
``consumer_timeout`` (30 minutes by default), and requeues it. Consumers here acknowledge
within minutes (the notifier's retries are bounded well below that).

The channel calls run in the bus's owner task (:mod:`resofleet.bus.control`); the mixin
:class:`AmqpWorkQueues` gives :class:`~resofleet.bus.AmqpBus` its
:meth:`~resofleet.bus.base.Bus.work_queue`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from .amqp_queues import publish_raw
from .base import Subscription
from .errors import BusUnavailable, QueueFull
from .work import DEFAULT_PREFETCH, Delivery, Overflow, WorkQueue

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustConnection

    from resofleet.contracts import Topology

    from .control import Control

__all__ = ["AmqpWorkQueue", "AmqpWorkQueues", "PUT_TIMEOUT"]

log = logging.getLogger(__name__)

#: Seconds a :meth:`AmqpWorkQueue.put` waits for the broker's confirm: it writes the
#: message to disk first (persistent), which takes milliseconds, or a second or two on a
#: busy disk; longer is a broker that is not answering.
PUT_TIMEOUT: Final = 10.0
_PERSISTENT: Final = int(aio_pika.DeliveryMode.PERSISTENT)
_CONTENT_TYPE: Final = "application/msgpack"
_OVERFLOW: Final = {"drop-oldest": "drop-head", "reject": "reject-publish"}


class _AmqpDelivery(Delivery):
    __slots__ = ("_message",)

    def __init__(self, message: AbstractIncomingMessage) -> None:
        super().__init__(message.body, redelivered=bool(message.redelivered))
        self._message = message

    async def ack(self) -> None:
        with contextlib.suppress(Exception):  # its channel is gone: the broker requeued it
            await self._message.ack()

    async def requeue(self) -> None:
        with contextlib.suppress(Exception):
            await self._message.reject(requeue=True)


class _Consumer:
    """One consume: a channel with ``prefetch`` and a consumer feeding a subscription."""

    def __init__(self, queue: AmqpWorkQueue, prefetch: int) -> None:
        self.queue = queue
        self.prefetch = prefetch
        self.channel: AbstractChannel | None = None
        self.amqp_queue: AbstractQueue | None = None
        self.tag: str | None = None
        # twice the prefetch: after a reconnection the broker redelivers what the old
        # channel held while stale deliveries may still wait here (their acks are no-ops)
        self.sub: Subscription[Delivery] = Subscription(2 * prefetch, on_close=self._on_close)

    async def open(self, connection: AbstractRobustConnection) -> None:
        channel = await connection.channel(publisher_confirms=False)
        self.channel = channel
        try:
            await channel.set_qos(prefetch_count=self.prefetch)
            self.amqp_queue = await self.queue._declare_on(channel)
            self.tag = await self.amqp_queue.consume(self._on_message, no_ack=False)
        except Exception:
            await self.shut()
            raise

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.sub.push(_AmqpDelivery(message))

    async def _on_close(self) -> None:
        bus = self.queue.bus
        if bus._closed:  # the channel goes with the connection
            return
        with contextlib.suppress(BusUnavailable):
            await bus._control.call(self.shut, what=f"closing a consumer of {self.queue.name!r}")

    async def shut(self) -> None:
        """Cancel the consumer and close the channel; the broker requeues what it held."""
        if self.amqp_queue is not None and self.tag is not None:
            with contextlib.suppress(Exception):
                await self.amqp_queue.cancel(self.tag)
        channel, self.channel = self.channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()


class AmqpWorkQueue(WorkQueue):
    """A durable RabbitMQ queue as a :class:`~resofleet.bus.work.WorkQueue`."""

    def __init__(
        self,
        bus: AmqpWorkQueues,
        name: str,
        *,
        events: Iterable[str],
        maxsize: int,
        overflow: Overflow,
        single_active: bool,
    ) -> None:
        super().__init__(name, maxsize=maxsize, overflow=overflow)
        self.bus = bus
        self.patterns = tuple(events)
        self.single_active = single_active
        self._channel: AbstractChannel | None = None  # for put, with publisher confirms

    @property
    def arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-max-length": self.maxsize, "x-overflow": _OVERFLOW[self.overflow],
        }
        if self.single_active:
            arguments["x-single-active-consumer"] = True
        return arguments

    async def _declare_on(self, channel: AbstractChannel) -> AbstractQueue:
        try:
            return await channel.declare_queue(self.name, durable=True, arguments=self.arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise ValueError(
                f"the work queue {self.name!r} exists with other arguments ({exc}); keep "
                "the settings it was made with, or delete it (rabbitmqctl delete_queue) "
                "and what it holds"
            ) from None

    async def declare(self) -> AmqpWorkQueue:
        """The queue, its bindings and the channel :meth:`put` publishes on (owner task)."""
        connection = self.bus._connection
        assert connection is not None
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel = channel
        try:
            queue = await self._declare_on(channel)
            if self.patterns:
                events = await channel.declare_exchange(
                    self.bus.topology.events, aio_pika.ExchangeType.TOPIC, durable=True
                )
                for pattern in self.patterns:
                    await queue.bind(events, routing_key=pattern)
        except Exception:
            await self.shut()
            raise
        return self

    async def shut(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()

    async def put(self, body: bytes) -> None:
        channel = self._channel
        if channel is None or not self.bus.connected:
            raise BusUnavailable("The message broker is not reachable right now.")
        properties = aiormq.spec.Basic.Properties(
            content_type=_CONTENT_TYPE, delivery_mode=_PERSISTENT
        )
        try:
            async with asyncio.timeout(PUT_TIMEOUT):
                await publish_raw(channel, "", body, self.name, properties, mandatory=True)
        except aiormq.exceptions.PublishError:
            raise BusUnavailable(f"The queue {self.name!r} is gone; the message was not taken.") from None
        except aiormq.exceptions.DeliveryError:
            raise QueueFull(self.name) from None
        except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BusUnavailable(f"The message could not be queued: {exc}.") from None

    async def consume(self, *, prefetch: int = DEFAULT_PREFETCH) -> Subscription[Delivery]:
        bus = self.bus
        if not bus.connected:
            raise BusUnavailable("The message broker is not reachable right now.")
        connection = bus._connection
        assert connection is not None
        consumer = _Consumer(self, max(1, prefetch))

        async def open_() -> _Consumer:
            await consumer.open(connection)
            return consumer

        await bus._control.call(open_, what=f"consuming {self.name!r}", orphan=_Consumer.shut)
        return consumer.sub


class AmqpWorkQueues:
    """What :class:`~resofleet.bus.AmqpBus` needs for :meth:`work_queue` (a mixin)."""

    if TYPE_CHECKING:
        _connection: AbstractRobustConnection | None
        _control: Control
        _closed: bool
        topology: Topology

        @property
        def connected(self) -> bool: ...

    async def work_queue(
        self,
        name: str,
        *,
        events: Iterable[str] = (),
        maxsize: int,
        overflow: Overflow = "drop-oldest",
        single_active: bool = False,
    ) -> AmqpWorkQueue:
        if not self.connected:
            raise BusUnavailable("The message broker is not reachable right now.")
        queue = AmqpWorkQueue(
            self, name, events=events, maxsize=maxsize, overflow=overflow,
            single_active=single_active,
        )
        return await self._control.call(
            queue.declare, what=f"declaring the work queue {name!r}", orphan=AmqpWorkQueue.shut
        )
