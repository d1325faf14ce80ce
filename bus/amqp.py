"""AmqpBus: the bus over RabbitMQ, with aio-pika.

Topology (names from :class:`resofleet.contracts.Topology`):

- ``resofleet.requests`` (topic, keys matched exactly; topic so that the broker can check
  an agent's binding keys against its user's topic permissions). Each served server has
  an exclusive queue ``resofleet.commands.<server>`` bound with the server id, with ``x-max-length`` and ``reject-publish`` so a flood is refused, not
  buffered. Requests go out with ``mandatory=True`` on a channel with publisher confirms,
  so an unroutable request (no agent) is returned by the broker and answered
  ``server_offline`` within a round trip. Each request carries ``expiration`` = its
  timeout, so one that waits too long in the queue is dropped by the broker, and its
  absolute ``deadline`` (:func:`~resofleet.bus.base.stamp`), so one the broker held back
  and delivered late is refused by the serving side (:func:`~resofleet.bus.base.serve_deadline`:
  its handler gets a deadline that has passed, and runs nothing).
- Replies use RabbitMQ's direct reply-to (``amq.rabbitmq.reply-to``), consumed with
  ``no_ack`` on the one channel requests are published from.
- ``resofleet.events`` (topic), key ``<server>.<kind>``. Each subscription is an exclusive
  queue bounded with ``x-max-length`` / ``drop-head``, consumed with ``no_ack`` into a
  bounded drop-oldest buffer.
- ``resofleet.presence`` (fanout): announcements, discover requests, revocations.
- Work queues: durable, shared, acknowledged (:mod:`resofleet.bus.amqp_work`).

Channel calls. Every call that opens, changes or closes a channel or a queue (serving,
subscribing, binding, closing) runs in one owner task (:mod:`resofleet.bus.control`),
never in its caller's task: a caller cancelled halfway (a session that ends) would
otherwise make aiormq close the channel, and a cancelled close costs the whole
connection. A subscription's ``patterns`` is what it wants bound; the owner binds what is
missing and unbinds what is extra, declaring the queue again first, and does so again
after every reconnection, so a binding asked for while the link was down is made once it
is back.

The link (:attr:`AmqpBus.connected`, :attr:`AmqpBus.problem`, :meth:`~resofleet.bus.base.Bus.on_link`):

- aio-pika's robust connection reconnects after a drop and restores channels, queues and
  consumers; every attempt is bounded by :data:`CONNECT_TIMEOUT` (a frozen broker
  accepts TCP connections and never answers).
- Several brokers (the nodes of a RabbitMQ cluster): ``url`` may be a list of URLs, or one
  string of URLs separated by commas or spaces (:mod:`resofleet.bus.amqp_failover`).
  :meth:`AmqpBus.start` connects to the first that answers, trying them in order, each
  within :data:`CONNECT_TIMEOUT`; after a drop, and after every failed attempt, the next
  attempt goes to the next URL, round the list, so a process whose node died is on another
  node within a round trip (one :data:`RECONNECT_INTERVAL` per further node down too),
  restoring its queues after :mod:`~resofleet.bus.amqp_failover`'s settle. What comes back
  is what a reconnection to the same broker restores; on another node of a cluster that
  means: exchanges (durable, cluster-wide) are there already; every queue this bus uses is
  exclusive to its connection and died with it, so it is declared anew on the new node (a
  server is ``server_offline`` from the drop until its agent is back; events published
  meanwhile are not delivered to a gateway that was away: its clients catch up with
  ``get_output``). :attr:`AmqpBus.broker` names the node in use.
- AMQP heartbeats (:data:`HEARTBEAT`) drop a connection whose peer went silent.
- A liveness probe (a ``basic.qos`` round trip on a channel of its own, every
  :data:`PROBE_INTERVAL` s) marks the link down when the broker has not answered within
  :data:`PROBE_TIMEOUT` s, long before the heartbeat gives up on a frozen or cut-off
  broker, and up again when it answers. A probe is never cancelled (see above).

While the link is down new requests fail at once with ``bus_unavailable``. When the
connection itself drops, the requests waiting for a reply fail at once too (whether they
reached their agent is unknown); when only the probe failed they keep waiting for their
reply or their timeout, since the broker may still deliver both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Final

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
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

from .amqp_failover import broker_urls, connect, redact
from .amqp_queues import (AmqpServed, BoundQueue, ack_raw, consume_raw, delivery_error,
                          publish_raw)
from .amqp_work import AmqpWorkQueues
from .base import (
    DEFAULT_EVENT_QUEUE,
    DEFAULT_PRESENCE_QUEUE,
    MAX_CLOCK_SKEW,
    Bus,
    EventSubscription,
    Handler,
    Served,
    Subscription,
    queue_ttl,
    serve_deadline,
    stamp,
)
from .control import Control
from .errors import (AlreadyServed, BusUnavailable, NotPermitted, RequestTimeout,
                     ServerOffline, reply_for)
from .local import COMMAND_QUEUE_LIMIT

__all__ = [
    "AmqpBus",
    "CONNECT_TIMEOUT",
    "HEARTBEAT",
    "PROBE_INTERVAL",
    "PROBE_TIMEOUT",
    "RECONNECT_INTERVAL",
]

log = logging.getLogger(__name__)

#: Seconds to wait for the broker at start before giving up with a clear error, and for
#: each reconnection attempt: a frozen broker accepts the TCP connection and never
#: answers, and an attempt without a bound would wait for it forever.
CONNECT_TIMEOUT: Final = 10.0
#: Seconds between reconnection attempts after the link drops: short, since a control
#: plane without its bus answers nothing.
RECONNECT_INTERVAL: Final = 1.0
#: AMQP heartbeat, in seconds (the ``heartbeat=`` URL parameter overrides it). The broker
#: drops a silent peer after two missed ones (10 s: a dead agent's queues go, and its
#: servers are answered ``server_offline`` rather than timing out); aiormq drops a silent
#: broker after (5 + 1) x 3 = 18 s. aiormq's default of 60 s is minutes of either.
HEARTBEAT: Final = 5
#: Seconds between liveness probes: a round trip costs the broker next to nothing, and a
#: frozen or cut-off broker is noticed within this plus :data:`PROBE_TIMEOUT`.
PROBE_INTERVAL: Final = 1.0
#: Seconds a probe may go unanswered before the link is marked down: a healthy broker
#: answers in a millisecond, a busy one in tens; two seconds leaves room for a pause.
PROBE_TIMEOUT: Final = 2.0
#: Seconds a single publish may take before the bus is considered unavailable.
PUBLISH_TIMEOUT: Final = 5.0
#: Seconds closing waits for a channel call in progress before the connection goes.
CLOSE_TIMEOUT: Final = 2.0
_REPLY_TO, _CONTENT_TYPE = "amq.rabbitmq.reply-to", "application/msgpack"
_NOT_PERSISTENT: Final = int(aio_pika.DeliveryMode.NOT_PERSISTENT)


class AmqpBus(AmqpWorkQueues, Bus):
    """The bus over RabbitMQ (see the module docstring). ``url``: one broker URL, or several
    (a list, or one string separated by commas or spaces), tried in order. ``clock_skew``:
    seconds by which this host's clock may differ from its peers'
    (:data:`~resofleet.bus.base.MAX_CLOCK_SKEW`). ``ValueError`` for no URL or a URL that
    is not ``amqp://`` or ``amqps://``."""

    def __init__(
        self,
        url: str | Iterable[str],
        *,
        topology: Topology | None = None,
        name: str = "resofleet",
        clock_skew: float = MAX_CLOCK_SKEW,
        requesters: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        #: Broker users whose requests the servers served here accept (checked against the
        #: broker-verified ``user_id`` of each request); ``None``: anyone's.
        self.requesters = frozenset(requesters) if requesters is not None else None
        #: The brokers, in the order they are tried.
        self.urls = broker_urls(url)
        self.topology = topology or Topology()
        self.name = name
        self.clock_skew = clock_skew
        self._connection: AbstractRobustConnection | None = None
        self._rpc: AbstractChannel | None = None
        self._commands: AbstractExchange | None = None
        self._events_channel: AbstractChannel | None = None
        self._events: AbstractExchange | None = None
        self._presence_ex: AbstractExchange | None = None
        self._probe_channel: AbstractChannel | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._control = Control(name=name)
        self._pending: dict[str, asyncio.Future[BusReply]] = {}
        self._queues: set[BoundQueue] = set()
        self._started = False
        self._closed = False
        self._dropped: str | None = None  # why the connection is down, while it is
        self._unanswered = False  # a probe went unanswered past PROBE_TIMEOUT
        self._up = False  # what listeners were last told

    # -- the link --------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return (
            self._started
            and not self._closed
            and self._dropped is None
            and not self._unanswered
            and self._connection is not None
            and not self._connection.is_closed
            and self._rpc is not None
            and not self._rpc.is_closed
        )

    @property
    def problem(self) -> str | None:
        if self.connected:
            return None
        if self._closed:
            why = "it is closed"
        elif not self._started:
            why = "it has not started"
        elif self._dropped is not None:
            why = self._dropped
        elif self._unanswered:
            why = (
                f"the message broker has not answered for over {PROBE_TIMEOUT:g} s "
                "(frozen, overloaded or cut off)"
            )
        else:
            why = "the connection to the message broker is being restored"
        return f"the message bus is not connected: {why}"

    def _update_link(self) -> None:
        """Tell the listeners (and the log) when :attr:`connected` changed."""
        up = self.connected
        if up == self._up:
            return
        self._up = up
        if up:
            log.info("bus %s: the link to the broker is up", self.name)
            for queue in list(self._queues):  # bindings asked for while it was down
                self._control.submit(queue.sync, what="binding events again")
        elif not self._closed:
            log.warning("bus %s: %s", self.name, self.problem)
        self._notify_link(up)

    def _on_connection_lost(self, _: object, exc: BaseException | None = None) -> None:
        self._dropped = f"the connection to the message broker dropped ({exc or 'closed'}); reconnecting"
        self._fail_pending(
            BusUnavailable(
                "The connection to the message broker dropped; the request may or may not "
                "have reached its server."
            )
        )
        self._update_link()

    def _on_reconnected(self, *_: object) -> None:
        self._dropped = None
        self._unanswered = False
        self._update_link()

    def _fail_pending(self, exc: BusUnavailable) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)
                # its requester may still be publishing, fail there and never await it
                future.exception()

    def _check(self) -> None:
        if not self.connected:
            raise BusUnavailable(
                "The message broker is not reachable right now; the gateway is reconnecting."
            )

    async def _probe_loop(self) -> None:
        """Mark the link down while the broker leaves a probe unanswered (module docstring)."""
        probe: asyncio.Task[None] | None = None
        try:
            while True:
                if probe is None:
                    await asyncio.sleep(PROBE_INTERVAL)
                    probe = asyncio.create_task(self._probe_once(), name=f"bus-probe:{self.name}")
                done, _ = await asyncio.wait({probe}, timeout=PROBE_TIMEOUT)
                if not done:  # never cancelled: wait on for the same probe
                    if not self._unanswered and self._dropped is None:
                        self._unanswered = True
                        self._update_link()
                    continue
                failed = probe.cancelled() or probe.exception() is not None
                probe = None
                if not failed and self._unanswered:
                    self._unanswered = False
                    self._update_link()
        finally:
            if probe is not None:  # closing: the connection's end ends it; nobody awaits it
                probe.add_done_callback(_seen)

    async def _probe_once(self) -> None:
        assert self._probe_channel is not None
        channel = await self._probe_channel.get_underlay_channel()
        await channel.basic_qos(prefetch_count=0)

    # -- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The broker URLs, separated by commas (as :class:`AmqpBus` accepts them)."""
        return ", ".join(self.urls)

    @property
    def broker(self) -> str | None:
        """The URL (password hidden) of the broker this bus is connected to or trying next."""
        return None if self._connection is None else redact(self._connection.url.with_query(None))

    async def start(self) -> None:
        self._connection = await connect(
            self.urls, name=self.name, timeout=CONNECT_TIMEOUT,
            reconnect_interval=RECONNECT_INTERVAL, heartbeat=HEARTBEAT,
        )
        self._connection.close_callbacks.add(self._on_connection_lost)
        self._connection.reconnect_callbacks.add(self._on_reconnected)

        self._rpc = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._commands = await self._rpc.declare_exchange(
            self.topology.commands, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await self._rpc.declare_queue(_REPLY_TO, passive=True)
        await consume_raw(self._rpc, _REPLY_TO, self._on_reply, no_ack=True)  # type: ignore[arg-type]

        self._events_channel = await self._connection.channel(  # confirms, returns: see publish
            publisher_confirms=True, on_return_raises=True)
        self._events = await self._events_channel.declare_exchange(
            self.topology.events, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._presence_ex = await self._events_channel.declare_exchange(
            self.topology.presence, aio_pika.ExchangeType.FANOUT, durable=True
        )
        self._probe_channel = await self._connection.channel(publisher_confirms=False)
        self._control.start()
        self._probe_task = asyncio.create_task(self._probe_loop(), name=f"bus-link:{self.name}")
        self._started = True
        self._update_link()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._update_link()
        self._fail_pending(BusUnavailable("The bus is closing."))
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        await self._control.close(timeout=CLOSE_TIMEOUT)
        for queue in list(self._queues):  # their channels close with the connection
            await queue.sub.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    # -- requests --------------------------------------------------------------------

    async def _on_reply(self, message: aiormq.abc.DeliveredMessage) -> None:
        future = self._pending.pop(message.header.properties.correlation_id or "", None)
        if future is None or future.done():
            return  # the requester timed out already
        try:
            future.set_result(decode_reply(message.body))
        except ContractError as exc:
            future.set_exception(BusUnavailable(str(exc)))

    async def request(self, request: BusRequest) -> BusReply:
        self._check()
        assert self._commands is not None and self._rpc is not None
        request = stamp(request, now=time.time())
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
            expiration=str(int(queue_ttl(request.timeout) * 1000)),
            user_id=self._user(),  # verified by the broker: see ``requesters``
        )
        try:
            async with asyncio.timeout(request.timeout):
                try:
                    await publish_raw(
                        self._rpc, self._commands.name, encode_bus(request), request.server,
                        properties, mandatory=True,
                    )
                except aio_pika.exceptions.DeliveryError as exc:
                    raise delivery_error(request.server, exc) from None
                except aiormq.exceptions.PublishError as exc:
                    raise ServerOffline(request.server) from exc
                except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                    raise BusUnavailable(f"The request could not be sent: {exc}.") from None
                return await future
        except TimeoutError:
            raise RequestTimeout(request.server, request.timeout) from None
        finally:
            self._pending.pop(correlation_id, None)

    def _user(self) -> str | None:
        """The connection's broker user when its URL names one (the broker refuses any
        other ``user_id``; with EXTERNAL authentication the URL names none)."""
        return (self._connection.url.user or None) if self._connection is not None else None

    async def serve(self, server: str, handler: Handler, *, concurrency: int = 1) -> Served:
        self._check()
        served = AmqpServed(self._control, server)

        async def open_() -> AmqpServed:
            await self._open_served(served, handler, concurrency)
            return served

        await self._control.call(open_, what=f"serving {server!r}", orphan=AmqpServed.shut)
        return served

    async def _open_served(self, served: AmqpServed, handler: Handler, concurrency: int) -> None:
        """Runs in the owner task: the server's channel, queue, binding and consumer."""
        assert self._connection is not None
        try:
            await self._claim(served, handler, concurrency)
        except aiormq.exceptions.ChannelAccessRefused as exc:
            await served.shut()
            raise NotPermitted(served.server, str(exc.args[0] if exc.args else exc)) from None

    async def _claim(self, served: AmqpServed, handler: Handler, concurrency: int) -> None:
        assert self._connection is not None
        server = served.server
        channel = await self._connection.channel(publisher_confirms=False)
        served.channel = channel
        await channel.set_qos(prefetch_count=max(1, concurrency))
        commands = await channel.declare_exchange(
            self.topology.commands, aio_pika.ExchangeType.TOPIC, durable=True
        )
        try:
            queue = await channel.declare_queue(
                self.topology.command_queue(server),
                exclusive=True,
                auto_delete=True,
                arguments={"x-max-length": COMMAND_QUEUE_LIMIT, "x-overflow": "reject-publish"},
            )
        except aiormq.exceptions.ChannelLockedResource:
            await served.shut()
            raise AlreadyServed(server) from None
        await queue.bind(commands, routing_key=server)
        loop = asyncio.get_running_loop()

        async def on_request(message: aiormq.abc.DeliveredMessage) -> None:
            arrived = loop.time()
            props = message.header.properties
            if self.requesters is not None and props.user_id not in self.requesters:
                # e.g. another host's agent writing into this queue through the default exchange
                log.warning("server=%s: dropped a request from broker user %r, not one of "
                            "[bus] requesters", server, props.user_id)
                return await ack_raw(message)
            try:
                request = decode_request(message.body)
            except ContractError as exc:
                log.error("server=%s: dropped an undecodable request: %s", server, exc)
                return await ack_raw(message)
            deadline = serve_deadline(
                request, arrived=arrived, now=arrived, wall=time.time(), skew=self.clock_skew
            )
            if deadline <= arrived:
                log.warning(
                    "server=%s: a request arrived %.1f s after its requester stopped waiting "
                    "(the broker held it back, or this host's clock is ahead of the "
                    "requester's by more than %g s); it is not run",
                    server, arrived - deadline, self.clock_skew,
                )
            try:
                reply = await handler(request, deadline)
            except Exception as exc:  # a handler bug must not stop the consumer
                reply = reply_for(exc, server=server)
            if props.reply_to and loop.time() < deadline:
                with contextlib.suppress(Exception):
                    await publish_raw(
                        channel, "", encode_bus(reply), props.reply_to,
                        aiormq.spec.Basic.Properties(
                            content_type=_CONTENT_TYPE,
                            delivery_mode=_NOT_PERSISTENT,
                            correlation_id=props.correlation_id,
                        ),
                    )
            await ack_raw(message)

        served.queue = queue
        served.tag = await consume_raw(
            channel, queue.name, on_request, tagged=served.retag  # type: ignore[arg-type]
        )

    # -- events ----------------------------------------------------------------------

    async def publish(self, event: BusEvent) -> bool:
        """Mandatory: the broker returns an event no queue is bound for (False)."""
        self._check()
        assert self._events is not None
        key = f"{event.server}.{event.kind}"
        return await self._send(self._events, encode_bus(event), key, "event", mandatory=True)

    async def _bound_queue(self, queue: BoundQueue, what: str) -> None:
        """Open ``queue`` in the owner task; a caller that gave up leaves it closed."""
        self._check()
        assert self._connection is not None
        connection = self._connection

        async def open_() -> BoundQueue:
            await queue.open(connection)
            return queue

        await self._control.call(open_, what=what, orphan=BoundQueue.shut)
        self._queues.add(queue)

    async def subscribe(
        self, patterns: Iterable[str] = ("#",), *, maxsize: int = DEFAULT_EVENT_QUEUE
    ) -> EventSubscription:
        bound: BoundQueue

        async def sync(_: str) -> None:
            if self._closed:
                return
            self._check()
            await self._control.call(bound.sync, what="binding events")

        async def on_close() -> None:
            await self._forget(bound)

        sub = EventSubscription(maxsize, bind=sync, unbind=sync, on_close=on_close)
        sub.patterns.update(patterns)
        bound = BoundQueue(
            sub, self.topology.events, aio_pika.ExchangeType.TOPIC, maxsize,
            decode=decode_event, what="event", wanted=lambda: sub.patterns,
            online=lambda: self.connected,
        )
        await self._bound_queue(bound, "subscribing to events")
        return sub

    async def _forget(self, queue: BoundQueue) -> None:
        """A subscription closed: its channel goes (in the owner task), unless the whole
        connection is going anyway."""
        self._queues.discard(queue)
        if self._closed:
            return
        with contextlib.suppress(BusUnavailable):
            await self._control.call(queue.shut, what="closing a subscription")

    # -- presence --------------------------------------------------------------------

    async def broadcast(self, message: PresenceMessage) -> None:
        self._check()
        assert self._presence_ex is not None
        await self._send(self._presence_ex, encode_bus(message), "", "presence message")

    async def _send(self, exchange: AbstractExchange, body: bytes, key: str, what: str,
                    *, mandatory: bool = False) -> bool:
        """Publish, not persistent, and wait for the broker's confirm; whether a queue took
        it (a ``mandatory`` message none took comes back); a failure is BusUnavailable."""
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                assert self._events_channel is not None
                await publish_raw(
                    self._events_channel, exchange.name, body, key,
                    # new per message: aiormq writes a message id into the properties
                    aiormq.spec.Basic.Properties(
                        content_type=_CONTENT_TYPE, delivery_mode=_NOT_PERSISTENT
                    ), mandatory=mandatory,
                )
            return True
        except aiormq.exceptions.PublishError:
            return False  # returned: no queue is bound for it
        except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BusUnavailable(f"The {what} could not be published: {exc}.") from None

    async def presence(
        self, *, maxsize: int = DEFAULT_PRESENCE_QUEUE
    ) -> Subscription[PresenceMessage]:
        bound: BoundQueue

        async def on_close() -> None:
            await self._forget(bound)

        sub: Subscription[PresenceMessage] = Subscription(maxsize, on_close=on_close)
        bound = BoundQueue(
            sub, self.topology.presence, aio_pika.ExchangeType.FANOUT, maxsize,
            decode=decode_presence, what="presence message", wanted=lambda: {""},
            online=lambda: self.connected,
        )
        await self._bound_queue(bound, "subscribing to presence")
        return sub


def _seen(task: asyncio.Task[None]) -> None:
    """Retrieve a finished task's exception, so that asyncio does not report it."""
    if not task.cancelled():
        task.exception()
