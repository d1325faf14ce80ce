"""The channels and queues an :class:`~resofleet.bus.amqp.AmqpBus` opens for its users.

- :class:`BoundQueue`: a private queue with a channel of its own, bound to one exchange
  with the patterns its subscription wants (events) or with the fanout (presence),
  consumed into a bounded drop-oldest :class:`~resofleet.bus.base.Subscription`.
- :class:`AmqpServed`: the queue an agent serves one server from.
- :func:`consume_raw`: a consumer on the hot paths (a gateway's replies, an agent's
  requests) that takes aiormq's messages as they are.

Every method here that talks to the broker runs in the bus's owner task
(:mod:`resofleet.bus.control`), never in a caller's task, so none of them is cancelled
halfway. :meth:`BoundQueue.sync` makes the broker's bindings what the subscription wants,
whatever happened before (a bind refused while the link was down, a queue made again by
a reconnection): it declares the queue again before binding anything to it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractRobustChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from resofleet.contracts import ContractError

from .base import Served, Subscription
from .control import Control
from .errors import BusUnavailable, ServerBusy, ServerOffline

__all__ = [
    "AmqpServed", "BoundQueue", "RawConsumer", "ack_raw", "consume_raw", "delivery_error",
    "publish_raw",
]

log = logging.getLogger(__name__)


class BoundQueue:
    """A subscription's queue on the broker (see the module docstring). ``wanted()`` is
    the routing keys it should be bound with; ``applied`` those it is bound with."""

    def __init__(
        self,
        sub: Subscription[Any],
        exchange: str,
        kind: aio_pika.ExchangeType,
        maxsize: int,
        *,
        decode: Callable[[bytes], Any],
        what: str,
        wanted: Callable[[], Iterable[str]],
        online: Callable[[], bool],
    ) -> None:
        self.sub = sub
        self.exchange_name = exchange
        self.kind = kind
        self.maxsize = maxsize
        self.decode = decode
        self.what = what
        self.wanted = wanted
        self.online = online
        self.channel: AbstractChannel | None = None
        self.exchange: AbstractExchange | None = None
        self.queue: AbstractQueue | None = None
        self.applied: set[str] = set()

    async def open(self, connection: AbstractRobustConnection) -> None:
        """Channel, exchange, a private queue that keeps at most ``maxsize`` messages
        (dropping the oldest: a reader that falls behind loses old messages, never the
        broker's memory), its bindings and its consumer."""
        channel = await connection.channel(publisher_confirms=False)
        self.channel = channel
        try:
            self.exchange = await channel.declare_exchange(
                self.exchange_name, self.kind, durable=True
            )
            self.queue = await channel.declare_queue(
                "",
                exclusive=True,
                auto_delete=True,
                arguments={"x-max-length": self.maxsize, "x-overflow": "drop-head"},
            )
            await self.sync()
            await self.queue.consume(self._on_message, no_ack=True)
        except Exception:
            await self.shut()
            raise

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            self.sub.push(self.decode(message.body))
        except ContractError as exc:
            log.error("bus: dropped an undecodable %s: %s", self.what, exc)

    async def sync(self) -> None:
        """Bind what is wanted and not bound, unbind what is bound and not wanted."""
        queue, exchange = self.queue, self.exchange
        if queue is None or exchange is None or self.sub.closed:
            return
        if not self.online():
            raise BusUnavailable(
                "The message broker is not reachable right now; the binding is made once it is."
            )
        wanted = set(self.wanted())
        missing, extra = wanted - self.applied, self.applied - wanted
        if missing:
            await queue.declare()  # after a reconnection it may be a new queue
        for key in sorted(missing):
            await queue.bind(exchange, routing_key=key)
            self.applied.add(key)
        for key in sorted(extra):
            await queue.unbind(exchange, routing_key=key)
            self.applied.discard(key)

    async def shut(self) -> None:
        """Close the channel (the queue goes with it: exclusive, auto-delete)."""
        channel, self.channel = self.channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()


class AmqpServed(Served):
    """One server's request queue and consumer; :meth:`close` stops serving it."""

    def __init__(self, control: Control, server: str) -> None:
        self.server = server
        self.channel: AbstractChannel | None = None
        self.queue: AbstractQueue | None = None
        self.tag: str | None = None
        self._control = control
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(BusUnavailable):
            await self._control.call(self.shut, what=f"stopping serving {self.server!r}")

    def retag(self, tag: str) -> None:
        """The consumer's tag after the channel reopened (:func:`consume_raw`)."""
        self.tag = tag

    async def shut(self) -> None:
        """Cancel the consumer, then close the channel (runs in the owner task)."""
        if self.queue is not None and self.tag is not None:
            with contextlib.suppress(Exception):
                await self.queue.cancel(self.tag)
        channel, self.channel = self.channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()


async def publish_raw(
    channel: AbstractChannel,
    exchange: str,
    body: bytes,
    key: str,
    properties: aiormq.spec.Basic.Properties,
    *,
    mandatory: bool = False,
) -> None:
    """``Exchange.publish`` without an ``aio_pika.Message``: the same frames, written by the
    channel's aiormq channel, minus the Message object and its conversion to properties
    (about 5% of the gateway's and the agent's CPU per request, py-spy). Raises as
    ``Exchange.publish`` does: ``DeliveryError`` on a nack, ``PublishError`` on a return
    (the channel's ``on_return_raises``), ``AMQPError`` on a closed channel."""
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    underlay = await channel.get_underlay_channel()
    await underlay.basic_publish(
        body, exchange=exchange, routing_key=key, properties=properties, mandatory=mandatory
    )


#: A consumer of :func:`consume_raw`: aiormq's message (``body``, ``header.properties``,
#: ``delivery``, and the ``channel`` it came on, to acknowledge it there).
RawConsumer = Callable[[aiormq.abc.DeliveredMessage], Awaitable[None]]


async def consume_raw(
    channel: AbstractRobustChannel, queue: str, callback: RawConsumer, *, no_ack: bool = False,
    tagged: Callable[[str], None] | None = None,
) -> str:
    """Consume ``queue`` on ``channel``'s aiormq channel: ``callback`` gets aiormq's
    message, without the :class:`aio_pika.IncomingMessage` built around it and the second
    task aio-pika starts per message (aiormq runs each delivery in a task already): about
    5% of a gateway's CPU per request, and of an agent's (py-spy, bench/README.md).

    aio-pika restores only its own consumers after a reconnection, so this one registers
    itself again whenever the robust channel reopens (after aio-pika has declared its
    queues again); ``tagged`` is told each new consumer tag. Returns the first tag."""

    async def register(*_: object) -> str:
        underlay = await channel.get_underlay_channel()
        tag = (await underlay.basic_consume(queue, callback, no_ack=no_ack)).consumer_tag
        assert tag is not None
        if tagged is not None:
            tagged(tag)
        return tag

    channel.reopen_callbacks.add(register)
    return await register()


async def ack_raw(message: aiormq.abc.DeliveredMessage) -> None:
    """Acknowledge a :func:`consume_raw` message on the channel it came on (a channel that
    has gone took the delivery with it: nothing to do)."""
    with contextlib.suppress(Exception):
        await message.channel.basic_ack(message.delivery.delivery_tag)  # type: ignore[union-attr]


def delivery_error(server: str, exc: aiormq.exceptions.DeliveryError) -> Exception:
    """A returned request means no queue is bound (offline); a nack means the queue is full."""
    frame = getattr(exc, "frame", None)
    if frame is not None and type(frame).__name__ == "Nack":
        return ServerBusy(server)
    return ServerOffline(server)
