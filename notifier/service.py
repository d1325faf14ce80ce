"""The notifier: events from the bus in, notices to webhooks out.

Queues (names from :class:`~resofleet.contracts.Topology`), all work queues
(:mod:`resofleet.bus.work`), durable over RabbitMQ:

- ``notify_events``: bound to the ``state``, ``status``, ``worlds`` and ``schedule``
  events of every server (never ``output``), so events published while no notifier runs
  wait for one. Consumed with a *single active consumer*: of several notifiers, one
  takes events at a time, in order (the :class:`~resofleet.notifier.watch.Watcher`'s
  state needs every snapshot of a server, in order), and another takes over when it goes.
- ``notify_queue(<webhook>)``: each webhook's notices, consumed by every notifier's
  :class:`~resofleet.notifier.delivery.Sender` for it, so delivery is shared.
- ``notify_dead``: notices a webhook did not take (bounded; the oldest are dropped).

Routing one event: decode it, let the watcher make its notices, put each notice into the
queue of every webhook that wants it (its events, its server patterns), then commit the
watcher's state and acknowledge the event. A webhook whose queue is full gets the notice
dead-lettered at once (its backlog must not grow without bound). If the bus fails
meanwhile, the event is not acknowledged and goes back to the queue, and the watcher's
state stays as it was, so the event is judged again when it comes back, into notices
with the same ids, which a sender that queued them before recognises and does not send
again (:mod:`resofleet.notifier.delivery`). An
event whose routing fails for another reason (a bug) goes back once and is dropped, with
the traceback logged, if it fails again: one bad event never blocks the queue.

Presence: each notifier also watches the agents' announcements
(:mod:`resofleet.notifier.presence`) and, when a server's agent goes silent or comes back,
puts a ``lost`` or ``announced`` server state into ``notify_events``. Several notifiers
put the same state; the watcher sends one notice for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

import aiohttp

from resofleet.bus import Bus, BusError, Delivery, QueueFull, Subscription, WorkQueue
from resofleet.contracts import (
    Announce, BusEvent, ContractError, Discover, PresenceMessage, ServerState, Topology,
    decode_event, encode_bus,
)

from .delivery import Sender, next_delivery
from .metrics import NotifierMetrics
from .notices import Notice, encode
from .presence import PresenceWatch
from .settings import NotifierSettings, WebhookSettings
from .watch import ANNOUNCED, LOST, Watcher

__all__ = ["DEAD_QUEUE", "EVENT_KINDS", "Notifier"]

log = logging.getLogger(__name__)

#: The event kinds the notifier acts on (``output`` and ``bans`` are never queued for it).
EVENT_KINDS: Final = ("state", "status", "worlds", "schedule")
#: Dead letters kept on the broker (the oldest dropped beyond): enough for days of a
#: receiver that refuses everything; an operator reads them with any AMQP tool.
DEAD_QUEUE: Final = 10_000
#: How the notifier names itself to webhook receivers.
USER_AGENT: Final = "resofleet-notifier"
#: Seconds to wait before taking an event again after the bus failed while routing it.
ROUTE_RETRY_PAUSE: Final = 1.0
#: Seconds closing waits for the event being routed: its notices are put into the
#: webhook queues (a broker round trip each, confirmed), so a second is plenty; past it
#: the event goes back to the queue and may be routed again by the next notifier.
ROUTE_CLOSE_TIMEOUT: Final = 5.0
#: Presence messages a notifier may fall behind by (they are small and rare).
PRESENCE_QUEUE: Final = 1_000
#: Longest wait, in seconds, between looks at the presence clock.
PRESENCE_TICK: Final = 1.0


class Notifier:
    """One notifier process's work (see the module docstring). :meth:`start` declares the
    queues and starts consuming; :meth:`close` stops in order and is idempotent."""

    def __init__(
        self,
        bus: Bus,
        *,
        webhooks: Sequence[WebhookSettings],
        secrets: dict[str, str | None],
        settings: NotifierSettings | None = None,
        topology: Topology | None = None,
        clock: Callable[[], float] = time.time,
        name: str = "notifier",
    ) -> None:
        unresolved = [w.name for w in webhooks if w.url is None]
        if unresolved:  # url_env / url_file are read by read_webhooks, once, at start
            raise ValueError(f"webhooks without a resolved url: {', '.join(unresolved)}")
        self.bus = bus
        self.settings = settings or NotifierSettings()
        self.topology = topology or Topology()
        self.webhooks = tuple(webhooks)
        self.name = name
        self.metrics = NotifierMetrics()
        self.watcher = Watcher(
            users_threshold=self.settings.users_threshold,
            users_hysteresis=self.settings.users_hysteresis,
        )
        self.senders: list[Sender] = []
        self._secrets = secrets
        self._clock = clock
        self._events: WorkQueue | None = None
        self._dead: WorkQueue | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sub: Subscription[Delivery] | None = None
        self._presence_sub: Subscription[PresenceMessage] | None = None
        self._presence = PresenceWatch()
        self._tasks: list[asyncio.Task[None]] = []
        self._unlink: Callable[[], None] | None = None
        self._router: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._closed = False

    @property
    def problems(self) -> list[str]:
        """Why the notifier is not ready (for ``/readyz``); empty when it is."""
        found = [] if self.bus.connected else [self.bus.problem or "the bus is not connected"]
        if self._sub is None:
            found.append("starting")
        return found

    async def start(self) -> None:
        bus, topology = self.bus, self.topology
        self._events = await bus.work_queue(
            topology.notify_events, events=[f"*.{kind}" for kind in EVENT_KINDS],
            maxsize=self.settings.events_queue, single_active=True,
        )
        self._dead = await bus.work_queue(topology.notify_dead, maxsize=DEAD_QUEUE)
        # one connection per worker at most, so no webhook waits for another's connections
        connector = aiohttp.TCPConnector(limit=max(1, sum(w.concurrency for w in self.webhooks)))
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": USER_AGENT}, raise_for_status=False,
        )
        for webhook in self.webhooks:
            queue = await bus.work_queue(
                topology.notify_queue(webhook.name), maxsize=webhook.backlog, overflow="reject",
            )
            sender = Sender(
                webhook, secret=self._secrets.get(webhook.name), queue=queue, dead=self._dead,
                session=self._session, metrics=self.metrics, clock=self._clock,
            )
            await sender.start()
            self.senders.append(sender)
        presence = self._presence_sub = await bus.presence(maxsize=PRESENCE_QUEUE)
        self._unlink = bus.on_link(self._link_changed)
        self._tasks.append(asyncio.create_task(self._watch_presence(presence), name="notifier:presence"))
        with contextlib.suppress(BusError):  # announcements arrive anyway, every interval
            await bus.broadcast(Discover(gateway=self.name))
        self._sub = await self._events.consume(prefetch=self.settings.prefetch)
        self._router = asyncio.create_task(self._route_all(self._sub), name="notifier:route")
        log.info("notifier %s: delivering to %d webhook(s): %s", self.name, len(self.senders),
                 ", ".join(w.name for w in self.webhooks) or "none")

    async def close(self) -> None:
        """Stop every webhook's taking of notices at once and stop routing (the event being
        routed is finished, within :data:`ROUTE_CLOSE_TIMEOUT`; those not taken yet stay
        queued); then the POSTs in progress end, all webhooks' together (so a stop takes
        one webhook's ``timeout`` at most, however many webhooks there are); then the
        HTTP session. The bus is its owner's to close."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        for sender in self.senders:  # every webhook at once, not each after the one before
            sender.stop()
        if self._unlink is not None:
            self._unlink()
        if self._router is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ROUTE_CLOSE_TIMEOUT):
                    await asyncio.shield(self._router)
            self._tasks.append(self._router)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in (self._sub, self._presence_sub):
            if sub is not None:
                await sub.close()
        # together: a stop takes one POST's time (a webhook's timeout), not one per webhook
        await asyncio.gather(*(sender.close() for sender in self.senders))
        if self._session is not None:
            await self._session.close()

    # -- routing ---------------------------------------------------------------------

    async def _route_all(self, sub: Subscription[Delivery]) -> None:
        while True:
            try:
                delivery = await next_delivery(sub, self._stopping)
            except EOFError:
                return
            if delivery is None:
                return
            try:
                await self.route(delivery)
            except BusError as exc:
                log.warning("notifier: an event goes back to the queue: %s", exc)
                await delivery.requeue()
                await asyncio.sleep(ROUTE_RETRY_PAUSE)
            except Exception:  # a bug must not stop routing, nor one event block the queue
                if delivery.redelivered:
                    log.exception("notifier: routing an event failed again; it is dropped")
                    await delivery.ack()
                else:
                    log.exception("notifier: routing an event failed; it goes back to the queue")
                    await delivery.requeue()
                    await asyncio.sleep(ROUTE_RETRY_PAUSE)

    async def route(self, delivery: Delivery) -> None:
        """Handle one event (the module docstring); raises :class:`~resofleet.bus.BusError`
        when a notice could not be queued (nothing is committed or acknowledged then)."""
        try:
            event = decode_event(delivery.body)
        except ContractError as exc:
            log.error("notifier: dropped an undecodable event: %s", exc)
            await delivery.ack()
            return
        self.metrics.events.labels(event.kind).inc()
        step = self.watcher.feed(event, now=self._clock())
        for notice in step.notices:
            self.metrics.notices.labels(notice.event).inc()
            log.info("server=%s: %s: %s", notice.server, notice.event, notice.text)
            await self._fan_out(notice)
        step.commit()
        await delivery.ack()

    async def _fan_out(self, notice: Notice) -> None:
        body = encode(notice)
        for sender in self.senders:
            if not sender.wants(notice):
                continue
            try:
                await sender.queue.put(body)
            except QueueFull:
                await sender.dead_letter(
                    notice, f"its queue holds {sender.webhook.backlog} notices already", attempts=0
                )

    # -- presence --------------------------------------------------------------------

    def _link_changed(self, up: bool) -> None:
        if up:
            self._presence.link_up(now=asyncio.get_running_loop().time())
        else:
            self._presence.link_down()

    async def _watch_presence(self, sub: Subscription[PresenceMessage]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = self._presence.next_due()
            wait = PRESENCE_TICK if due is None else min(PRESENCE_TICK, max(0.0, due - loop.time()))
            message: PresenceMessage | None = None
            try:
                async with asyncio.timeout(wait):
                    message = await sub.get()
            except TimeoutError:
                pass
            except EOFError:
                return
            now = loop.time()
            if isinstance(message, Announce):
                back, dropped = self._presence.announce(message, now=now)
                for server in back:
                    await self._note(server, ANNOUNCED, f"agent {message.agent} announces it again")
                for server in dropped:
                    await self._note(server, LOST, f"agent {message.agent} no longer serves it")
            for server in self._presence.lapsed(now=now):
                await self._note(server, LOST, "its agent stopped announcing it")

    async def _note(self, server: str, state: str, detail: str) -> None:
        """Put one of the notifier's own states into the events queue (for whichever
        notifier is the active consumer)."""
        assert self._events is not None
        event = BusEvent(server=server, kind="state", body=ServerState(server=server, state=state, detail=detail))
        try:
            await self._events.put(encode_bus(event))
        except BusError as exc:
            log.warning("server=%s: could not queue %r from presence: %s", server, state, exc)
