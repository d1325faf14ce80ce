"""AmqpBus: the bus over RabbitMQ, with aio-pika.

Topology (names from :class:`resofleet.contracts.Topology`):

- ``resofleet.commands`` (direct). Each served server has an exclusive queue bound with
  the server id, with ``x-max-length`` and ``reject-publish`` so a flood is refused, not
  buffered. Requests go out with ``mandatory=True`` on a channel with publisher confirms,
  so an unroutable request (no agent) is returned by the broker and answered
  ``server_offline`` within a round trip. Each request carries ``expiration`` = its
  timeout, so one that waits too long in the queue is dropped by the broker; the serving
  side also drops one whose timeout ran out before the handler could take it.
- Replies use RabbitMQ's direct reply-to (``amq.rabbitmq.reply-to``), consumed with
  ``no_ack`` on the one channel requests are published from.
- ``resofleet.events`` (topic), key ``<server>.<kind>``. Each subscription is an exclusive
  queue bounded with ``x-max-length`` / ``drop-head``, consumed with ``no_ack`` into a
  bounded drop-oldest buffer.
- ``resofleet.presence`` (fanout): announcements, discover requests, revocations.

The connection is aio-pika's robust connection: after the link drops it reconnects and
restores channels, queues and consumers. Pending requests are failed with
``bus_unavailable`` the moment the link drops, and new ones are refused at once until it
is back, rather than hanging until their timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable
from typing import Any, Final

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from resofleet.contracts import (
    BusEvent,
    BusReply,
    BusRequest,
    ContractError,
    PresenceMessage,
    Topology,
    decode_event,
    decode_presence,
    decode_reply,
    decode_request,
    encode_bus,
)

from .base import (
    DEFAULT_EVENT_QUEUE,
    DEFAULT_PRESENCE_QUEUE,
    Bus,
    EventSubscription,
    Handler,
    Served,
    Subscription,
)
from .errors import (
    AlreadyServed,
    BusUnavailable,
    RequestTimeout,
    ServerBusy,
    ServerOffline,
    reply_for,
)
from .local import COMMAND_QUEUE_LIMIT

__all__ = ["AmqpBus", "CONNECT_TIMEOUT", "RECONNECT_INTERVAL"]

log = logging.getLogger(__name__)

#: Seconds to wait for the broker at start before giving up with a clear error.
CONNECT_TIMEOUT: Final = 10.0
#: Seconds between reconnection attempts after the link drops: short, since a control
#: plane without its bus answers nothing.
RECONNECT_INTERVAL: Final = 1.0
#: Seconds a single publish may take before the bus is considered unavailable.
PUBLISH_TIMEOUT: Final = 5.0
#: Seconds by which a request's queue TTL undercuts its timeout (see :func:`_queue_ttl`).
QUEUE_TTL_MARGIN: Final = 0.05
_REPLY_TO: Final = "amq.rabbitmq.reply-to"
_CONTENT_TYPE: Final = "application/msgpack"
_NOT_PERSISTENT: Final = int(aio_pika.DeliveryMode.NOT_PERSISTENT)


class _AmqpServed(Served):
    def __init__(self, channel: AbstractChannel, queue: AbstractQueue, tag: str) -> None:
        self._channel = channel
        self._queue = queue
        self._tag = tag
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._queue.cancel(self._tag)
        with contextlib.suppress(Exception):
            await self._channel.close()


class AmqpBus(Bus):
    """The bus over RabbitMQ (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        topology: Topology | None = None,
        name: str = "resofleet",
    ) -> None:
        self.url = url
        self.topology = topology or Topology()
        self.name = name
        self._connection: AbstractRobustConnection | None = None
        self._rpc: AbstractChannel | None = None
        self._commands: AbstractExchange | None = None
        self._events_channel: AbstractChannel | None = None
        self._events: AbstractExchange | None = None
        self._presence_ex: AbstractExchange | None = None
        self._pending: dict[str, asyncio.Future[BusReply]] = {}
        self._online = False
        self._closed = False
        self._closers: list[Any] = []

    # -- lifecycle -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return (
            self._online
            and not self._closed
            and self._connection is not None
            and not self._connection.is_closed
            and self._rpc is not None
            and not self._rpc.is_closed
        )

    async def start(self) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                self._connection = await aio_pika.connect_robust(
                    self.url,
                    reconnect_interval=RECONNECT_INTERVAL,
                    client_properties={"connection_name": self.name},
                )
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            raise BusUnavailable(
                f"Cannot reach the message broker at {_redact(self.url)}: {exc or 'timed out'}."
            ) from None
        self._connection.close_callbacks.add(self._on_connection_lost)
        self._connection.reconnect_callbacks.add(self._on_reconnected)

        self._rpc = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._commands = await self._rpc.declare_exchange(
            self.topology.commands, aio_pika.ExchangeType.DIRECT, durable=True
        )
        reply_queue = await self._rpc.declare_queue(_REPLY_TO, passive=True)
        await reply_queue.consume(self._on_reply, no_ack=True)

        self._events_channel = await self._connection.channel(publisher_confirms=False)
        self._events = await self._events_channel.declare_exchange(
            self.topology.events, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._presence_ex = await self._events_channel.declare_exchange(
            self.topology.presence, aio_pika.ExchangeType.FANOUT, durable=True
        )
        self._online = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._online = False
        self._fail_pending(BusUnavailable("The bus is closing."))
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                await closer()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    def _on_connection_lost(self, _: object, exc: BaseException | None = None) -> None:
        self._online = False
        if not self._closed:
            log.warning("bus: lost the broker connection (%s); reconnecting", exc)
        self._fail_pending(BusUnavailable("The connection to the message broker dropped."))

    def _on_reconnected(self, *_: object) -> None:
        log.info("bus: reconnected to the broker")
        self._online = True

    def _fail_pending(self, exc: BusUnavailable) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)

    def _check(self) -> None:
        if not self.connected:
            raise BusUnavailable(
                "The message broker is not reachable right now; the gateway is reconnecting."
            )

    # -- requests --------------------------------------------------------------------

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is None or future.done():
            return  # the requester timed out already
        try:
            future.set_result(decode_reply(message.body))
        except ContractError as exc:
            future.set_exception(BusUnavailable(str(exc)))

    async def request(self, request: BusRequest) -> BusReply:
        self._check()
        assert self._commands is not None and self._rpc is not None
        loop = asyncio.get_running_loop()
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[BusReply] = loop.create_future()
        self._pending[correlation_id] = future
        properties = aiormq.spec.Basic.Properties(
            content_type=_CONTENT_TYPE,
            delivery_mode=_NOT_PERSISTENT,
            correlation_id=correlation_id,
            # the message id lets a returned request find its confirm; ours is unique
            message_id=correlation_id,
            reply_to=_REPLY_TO,
            expiration=str(int(_queue_ttl(request.timeout) * 1000)),
        )
        try:
            async with asyncio.timeout(request.timeout):
                try:
                    await _publish(
                        self._rpc, self._commands.name, encode_bus(request), request.server,
                        properties, mandatory=True,
                    )
                except aio_pika.exceptions.DeliveryError as exc:
                    raise _delivery_error(request.server, exc) from None
                except aiormq.exceptions.PublishError as exc:
                    raise ServerOffline(request.server) from exc
                except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                    raise BusUnavailable(f"The request could not be sent: {exc}.") from None
                return await future
        except TimeoutError:
            raise RequestTimeout(request.server, request.timeout) from None
        finally:
            self._pending.pop(correlation_id, None)

    async def serve(self, server: str, handler: Handler, *, concurrency: int = 1) -> Served:
        self._check()
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=max(1, concurrency))
        commands = await channel.declare_exchange(
            self.topology.commands, aio_pika.ExchangeType.DIRECT, durable=True
        )
        try:
            queue = await channel.declare_queue(
                self.topology.command_queue(server),
                exclusive=True,
                auto_delete=True,
                arguments={"x-max-length": COMMAND_QUEUE_LIMIT, "x-overflow": "reject-publish"},
            )
        except aiormq.exceptions.ChannelLockedResource:
            with contextlib.suppress(Exception):
                await channel.close()
            raise AlreadyServed(server) from None
        await queue.bind(commands, routing_key=server)
        loop = asyncio.get_running_loop()

        async def on_request(message: AbstractIncomingMessage) -> None:
            arrived = loop.time()
            try:
                request = decode_request(message.body)
            except ContractError as exc:
                log.error("server=%s: dropped an undecodable request: %s", server, exc)
                await message.ack()
                return
            deadline = arrived + request.timeout
            try:
                reply = await handler(request, deadline)
            except Exception as exc:  # a handler bug must not stop the consumer
                reply = reply_for(exc, server=server)
            if message.reply_to and loop.time() < deadline:
                with contextlib.suppress(Exception):
                    await _publish(
                        channel, "", encode_bus(reply), message.reply_to,
                        aiormq.spec.Basic.Properties(
                            content_type=_CONTENT_TYPE,
                            delivery_mode=_NOT_PERSISTENT,
                            correlation_id=message.correlation_id,
                        ),
                    )
            with contextlib.suppress(Exception):
                await message.ack()

        tag = await queue.consume(on_request)
        served = _AmqpServed(channel, queue, tag)
        self._closers.append(served.close)
        return served

    # -- events ----------------------------------------------------------------------

    async def publish(self, event: BusEvent) -> None:
        self._check()
        assert self._events is not None
        await self._send(self._events, encode_bus(event), f"{event.server}.{event.kind}", "event")

    async def _bounded_queue(
        self, exchange_name: str, kind: aio_pika.ExchangeType, maxsize: int
    ) -> tuple[AbstractChannel, AbstractExchange, AbstractQueue]:
        """A channel of its own, the exchange, and a private queue for it that keeps at
        most ``maxsize`` messages, dropping the oldest (a reader that falls behind loses
        old events, never the broker's memory)."""
        self._check()
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        exchange = await channel.declare_exchange(exchange_name, kind, durable=True)
        queue = await channel.declare_queue(
            "",
            exclusive=True,
            auto_delete=True,
            arguments={"x-max-length": maxsize, "x-overflow": "drop-head"},
        )
        return channel, exchange, queue

    async def subscribe(
        self, patterns: Iterable[str] = ("#",), *, maxsize: int = DEFAULT_EVENT_QUEUE
    ) -> EventSubscription:
        channel, exchange, queue = await self._bounded_queue(
            self.topology.events, aio_pika.ExchangeType.TOPIC, maxsize
        )

        async def bind(pattern: str) -> None:
            await queue.bind(exchange, routing_key=pattern)

        async def unbind(pattern: str) -> None:
            await queue.unbind(exchange, routing_key=pattern)

        async def on_close() -> None:
            with contextlib.suppress(Exception):
                await channel.close()

        sub = EventSubscription(maxsize, bind=bind, unbind=unbind, on_close=on_close)

        async def on_event(message: AbstractIncomingMessage) -> None:
            try:
                sub.push(decode_event(message.body))
            except ContractError as exc:
                log.error("bus: dropped an undecodable event: %s", exc)

        for pattern in patterns:
            await sub.bind(pattern)
        await queue.consume(on_event, no_ack=True)
        self._closers.append(sub.close)
        return sub

    # -- presence --------------------------------------------------------------------

    async def broadcast(self, message: PresenceMessage) -> None:
        self._check()
        assert self._presence_ex is not None
        await self._send(self._presence_ex, encode_bus(message), "", "presence message")

    async def _send(self, exchange: AbstractExchange, body: bytes, key: str, what: str) -> None:
        """Publish without confirms or persistence; a failure becomes BusUnavailable."""
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                assert self._events_channel is not None
                await _publish(
                    self._events_channel, exchange.name, body, key,
                    # new per message: aiormq writes a message id into the properties
                    aiormq.spec.Basic.Properties(
                        content_type=_CONTENT_TYPE, delivery_mode=_NOT_PERSISTENT
                    ),
                )
        except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BusUnavailable(f"The {what} could not be published: {exc}.") from None

    async def presence(
        self, *, maxsize: int = DEFAULT_PRESENCE_QUEUE
    ) -> Subscription[PresenceMessage]:
        channel, exchange, queue = await self._bounded_queue(
            self.topology.presence, aio_pika.ExchangeType.FANOUT, maxsize
        )
        await queue.bind(exchange)

        async def on_close() -> None:
            with contextlib.suppress(Exception):
                await channel.close()

        sub: Subscription[PresenceMessage] = Subscription(maxsize, on_close=on_close)

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                sub.push(decode_presence(message.body))
            except ContractError as exc:
                log.error("bus: dropped an undecodable presence message: %s", exc)

        await queue.consume(on_message, no_ack=True)
        self._closers.append(sub.close)
        return sub


async def _publish(
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


def _queue_ttl(timeout: float) -> float:
    """How long a request may wait in the broker's queue: a little less than the
    requester waits, since the broker's clock starts after the requester's. A request
    taken by the agent right at the deadline would otherwise run after the requester
    has given up."""
    return max(0.001, timeout - min(QUEUE_TTL_MARGIN, timeout / 10))


def _delivery_error(server: str, exc: aio_pika.exceptions.DeliveryError) -> Exception:
    """A returned request means no queue is bound (offline); a nack means the queue is full."""
    frame = getattr(exc, "frame", None)
    if frame is not None and type(frame).__name__ == "Nack":
        return ServerBusy(server)
    return ServerOffline(server)


def _redact(url: str) -> str:
    """``amqp://user:secret@host/`` -> ``amqp://user:***@host/`` for messages and logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
