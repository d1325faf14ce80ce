"""Fan-out: server events from the bus to every session watching that server.

One bus subscription per gateway, bound to exactly the servers its sessions watch (``#``
as soon as one session watches everything it may see), so a gateway with no clients
receives nothing.

Rounds. The fan-out takes everything the subscription has ready, up to a quarter of
:data:`SLOW_CLIENT_BUFFER` of console text, as one round, and :mod:`resofleet.gateway.rounds` merges
it: one ``container_output_batch`` per server per round for batch clients, one
``container_output`` message per line for clients in line mode (the default, what the
seed's clients expect: every line stays a WebSocket message of its own), each message
encoded and framed once. An event after a quiet moment goes out at once; a steady stream
is gathered, rounds starting :data:`ROUND_INTERVAL` apart or more as clients grow in
number (:data:`ROUND_WRITES`, up to :data:`MAX_ROUND_INTERVAL`), so the frames a gateway
writes and its clients decode stay bounded while the lines they carry grow. When the
gateway falls behind, rounds grow too, and frames get fewer: throughput adjusts itself.

Writes. Sessions that watch the same servers in the same form make one *class*; a round's
frames for a class are joined once, and each of its connections gets them with one
``transport.write`` (one ``send()``), not one per message: the frames are the exact bytes
:func:`websockets.asyncio.server.broadcast` would write, whole, on an open connection with
no fragmented message in progress. A connection that negotiated compression (browsers
offer permessage-deflate) has its frames made by its own protocol, still written at once.

Slow clients. A write never waits: what the socket does not take piles up in that
connection's write buffer, measured right after the write; a connection over
:data:`SLOW_CLIENT_BUFFER` bytes is taken out of the fan-out and closed with 1013
(:data:`~resofleet.gateway.errors.CLOSE_TOO_SLOW`). The close frame queues behind what is buffered,
and websockets drops the TCP connection if the client has not finished the close
handshake within the close timeout, so a stalled client holds at most this bound (plus one
round) for a few seconds and never slows the others. A round adds at most about a quarter
of the bound to a buffer, so a client that reads is never cut off for one burst. All
buffers written in a round together stay within :data:`SLOW_CLIENTS_BUDGET`: past it the
clients furthest behind are cut off first. Cut-offs are counted in :attr:`Fanout.cut_off`.

Order: per server, lines in ``seq`` order, updates in their place among them, and no
``seq`` twice (:class:`~resofleet.gateway.rounds.Sequencer`). Scope: a session gets a server's bytes
only if :meth:`Listener.watches` it.

Bindings. The subscription is bound to the union of what the listeners watch, kept as a
count per pattern: a listener that comes, goes or changes what it watches costs the
servers it names, never all listeners' (a subscribe, a connect, a disconnect is O(its own
ids)). Only a count leaving or reaching zero changes a binding, and no session waits for
the broker: changes are applied by one background task, in passes (whatever changed
meanwhile goes into the next pass, so bursts are batched), binding before unbinding so a
watcher never misses events; a pass the broker fails is retried after
:data:`REBIND_RETRY`. :meth:`Fanout.settled` lets a ``subscribe`` wait, within a bound,
until its bindings are in place. A listener holds nothing once removed, and a session
removes itself first thing when it ends, so nothing leaks.

Servers coming and going. The gateway's own news goes out here too: when a server's agent
is lost, :meth:`Fanout.server_offline` sends everyone watching it a ``status_update`` whose
status is ``offline`` (the last status seen, its live figures zeroed), in its place in
that server's stream; when servers come online or go, :meth:`Fanout.servers_changed` has
every session watching one of them send itself a ``servers_update`` (without an ``id``),
listing what that session may see.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec
from websockets.asyncio.server import ServerConnection
from websockets.protocol import OPEN

from resofleet.bus import Bus, BusError, EventSubscription
from resofleet.contracts import BusEvent, ServerInfo, Status, StatusUpdate

from .metrics import GatewayMetrics
from .registry import Registry
from .rounds import Piece, Sequencer, weight
from .routing import View

__all__ = [
    "EVENT_QUEUE", "Fanout", "Listener", "MAX_ROUND_INTERVAL", "REBIND_RETRY", "ROUND_INTERVAL",
    "ROUND_WRITES", "SUBSCRIBE_BIND_WAIT",
    "SLOW_CLIENT_BUFFER",
    "SLOW_CLIENTS_BUDGET",
]

log = logging.getLogger(__name__)

#: Bytes a connection's write buffer may hold, beyond what the kernel's socket buffer
#: already took, before the client is cut off. About ten thousand console lines: a reader
#: that lags this far is not reading (a stalled tab, a stopped process), and holding more
#: per client would let a few of them take the gateway's memory.
SLOW_CLIENT_BUFFER: Final = 1024 * 1024
#: Bytes all connections' write buffers may hold together. The per-client bound alone
#: lets a thousand clients stalling at once (a network blip at a customer's office) hold a
#: gigabyte; past this budget the clients furthest behind are cut off first, until the
#: rest fit. 256 MiB: a few hundred clients can lag by a fair amount at the same time.
SLOW_CLIENTS_BUDGET: Final = 256 * 1024 * 1024
#: Seconds before the bindings are tried again after the broker failed a bind or unbind
#: (a slow or restarting broker): soon enough that watchers get their events shortly
#: after it recovers, rarely enough not to add to its trouble.
REBIND_RETRY: Final = 1.0
#: Seconds a ``subscribe`` waits for the broker to bind what it newly watches before it is
#: answered anyway (:meth:`Fanout.settled`): a healthy broker takes milliseconds; a slow
#: one delays only that client's reply, never a session's life, and events start flowing
#: as soon as the bindings are in place.
SUBSCRIBE_BIND_WAIT: Final = 2.0
#: Events the gateway's own subscription may fall behind by before the oldest are
#: dropped (by the broker, ``x-max-length``/``drop-head``, and in process).
EVENT_QUEUE: Final = 10_000
#: Seconds between the starts of two rounds at least. The first event after a quiet
#: moment does not wait; a steady stream is gathered for this long, far below what a
#: person reading a console notices.
ROUND_INTERVAL: Final = 0.01
#: Seconds between rounds at most, however many clients: output then reaches a client
#: within this (plus the agent's batch delay), still a fraction of a second.
MAX_ROUND_INTERVAL: Final = 0.1
#: Writes per second all rounds may make together: the interval grows with the
#: connections so that rounds x connections stays under this (1,000 clients: 50 ms).
#: A round costs a ``send()`` per connection whatever it carries, and each client decodes
#: a frame per server per round: the bound keeps both the gateway's write cost and the
#: frames a client must decode per second in check as clients grow (bench/README.md has
#: the measurements behind the figure).
ROUND_WRITES: Final = 20_000


class Listener(Protocol):
    """What the fan-out needs from a session."""

    conn_id: str
    batch: bool

    @property
    def view(self) -> View:
        """What the client may see of host details (see :func:`~.routing.view_of`)."""

    @property
    def connection(self) -> ServerConnection: ...

    def watches(self, server: str) -> bool: ...

    def patterns(self) -> Iterable[str]: ...

    def cut_off(self, reason: str) -> None: ...

    def servers_changed(self, infos: list[ServerInfo]) -> None:
        """Send the client a ``servers_update`` from ``infos`` (every known server)."""


@dataclass(slots=True)
class _Class:
    """Sessions that watch the same (known) servers in the same form."""

    batch: bool
    servers: frozenset[str]
    #: What its clients may see: a restricted view gets status and ban updates with the
    #: hidden fields emptied, encoded once per view and round.
    view: View
    #: An ordered set: a listener leaves its class in O(1).
    listeners: dict[Listener, None]


class Fanout:
    """Events from the bus to sessions (see the module docstring)."""

    def __init__(
        self,
        bus: Bus,
        registry: Registry,
        *,
        slow_client_buffer: int = SLOW_CLIENT_BUFFER,
        slow_clients_budget: int = SLOW_CLIENTS_BUDGET,
        queue: int = EVENT_QUEUE,
        round_interval: float = ROUND_INTERVAL,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.bus = bus
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self._events = self.metrics.events
        self._sent = self.metrics.sent_bytes
        self.registry = registry
        self.slow_client_buffer = slow_client_buffer
        self.slow_clients_budget = slow_clients_budget
        self.queue = queue
        self.round_interval = round_interval
        #: Bytes of events (:func:`~resofleet.gateway.rounds.weight`) a round takes at most; always
        #: at least one event.
        self.round_bytes = max(1, slow_client_buffer // 4)
        self.listeners: set[Listener] = set()
        #: Clients cut off for falling behind, since start.
        self.cut_off = 0
        self._sequencer = Sequencer()
        #: Servers that have sent events: the classes are drawn over these.
        self._known: set[str] = set()
        #: The last status each server published, for the one sent when it goes offline.
        self._statuses: dict[str, Status] = {}
        #: Listeners by what they watch among the known servers and their form, kept as
        #: each listener changes (cost: the known servers, never every listener).
        self._classes: dict[tuple[bool, View, frozenset[str]], _Class] = {}
        self._class_of: dict[Listener, tuple[bool, View, frozenset[str]]] = {}
        #: Patterns each listener holds, and how many listeners hold each one.
        self._held: dict[Listener, frozenset[str]] = {}
        self._refs: collections.Counter[str] = collections.Counter()
        #: Bumped when the wanted bindings change; :attr:`_applied`: the generation the
        #: bindings last matched; :attr:`_progress` is set (and replaced) after each pass.
        self._generation = 0
        self._applied = 0
        self._progress = asyncio.Event()
        self._binder: asyncio.Task[None] | None = None
        self._sub: EventSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def dropped(self) -> int:
        """Events this gateway fell behind on and dropped (its own subscription's count)."""
        return self._sub.dropped if self._sub is not None else 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._sub = await self.bus.subscribe((), maxsize=self.queue)
        self._task = asyncio.create_task(self._run(self._sub), name="gateway:fanout")
        if self._refs:  # listeners came before the subscription
            self._schedule()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._progress.set()
        if self._binder is not None:
            self._binder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._binder
        if self._sub is not None:
            await self._sub.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- listeners -------------------------------------------------------------------

    def add(self, listener: Listener) -> None:
        """Register ``listener`` (at once: the bindings it needs follow in the background)."""
        self.listeners.add(listener)
        self.update(listener)

    def remove(self, listener: Listener) -> None:
        """Forget ``listener`` (idempotent; a listener cut off for slowness is gone already)."""
        self.listeners.discard(listener)
        self._unplace(listener)
        self._hold(listener, frozenset())

    def update(self, listener: Listener | None = None) -> None:
        """``listener`` changed what it watches, its form or its principal (None: every
        listener, at a cost per listener): re-place it and schedule the bindings."""
        for one in (listener,) if listener is not None else tuple(self.listeners):
            if one in self.listeners:
                self._place(one)
                self._hold(one, frozenset(one.patterns()))

    async def changed(self, listener: Listener | None = None) -> None:
        """:meth:`update`, for callers that await it; it never waits for the broker."""
        self.update(listener)

    async def settled(self, timeout: float) -> bool:
        """Wait until the bindings match what every listener watched when this was called,
        at most ``timeout`` seconds; whether they do."""
        target = self._generation
        try:
            async with asyncio.timeout(timeout):
                while self._applied < target and not self._closed and self._sub is not None:
                    await self._progress.wait()
        except TimeoutError:
            return False
        return True

    def _hold(self, listener: Listener, patterns: frozenset[str]) -> None:
        """Count ``listener``'s patterns (replacing what it held); a pattern whose count
        leaves or reaches zero needs a binding change: schedule it."""
        held = self._held.get(listener, frozenset())
        if patterns == held:
            return
        refs = self._refs
        dirty = False
        for pattern in patterns - held:
            refs[pattern] += 1
            dirty |= refs[pattern] == 1
        for pattern in held - patterns:
            refs[pattern] -= 1
            if refs[pattern] <= 0:
                del refs[pattern]
                dirty = True
        if patterns:
            self._held[listener] = patterns
        else:
            self._held.pop(listener, None)
        if dirty:
            self._generation += 1
            self._schedule()

    def _wanted(self, pattern: str) -> bool:
        """Whether the subscription should be bound to ``pattern`` now (``#`` alone when
        anyone watches everything)."""
        if "#" in self._refs:
            return pattern == "#"
        return pattern in self._refs

    def _schedule(self) -> None:
        if self._binder is None and self._sub is not None and not self._closed:
            self._binder = asyncio.get_running_loop().create_task(
                self._bind(self._sub), name="gateway:fanout-bindings"
            )

    async def _bind(self, sub: EventSubscription) -> None:
        """Bring the bindings to what the listeners want, in passes, until a pass ends with
        nothing changed meanwhile (see the module docstring)."""
        try:
            while not self._closed and self._applied < self._generation:
                generation = self._generation
                wanted = {"#"} if "#" in self._refs else set(self._refs)
                current = set(sub.patterns)
                try:
                    for pattern in wanted - current:  # bind first: never a gap for a watcher
                        if self._wanted(pattern):
                            await sub.bind(pattern)
                    for pattern in current - wanted:
                        if not self._wanted(pattern):
                            await sub.unbind(pattern)
                except Exception as exc:  # the broker is slow or away: try again, never end
                    log.warning("fanout: could not update event bindings: %r; retrying in %g s",
                                exc, REBIND_RETRY)
                    await asyncio.sleep(REBIND_RETRY)
                    continue
                self._applied = generation
                progress, self._progress = self._progress, asyncio.Event()
                progress.set()
        finally:
            self._binder = None

    def _place(self, listener: Listener) -> None:
        """Put ``listener`` in the class of what it watches among the known servers."""
        watched = frozenset(s for s in self._known if listener.watches(s))
        view = listener.view
        key = (listener.batch, view, watched)
        if self._class_of.get(listener) == key:
            return
        self._unplace(listener)
        if watched:
            cls = self._classes.get(key)
            if cls is None:
                cls = self._classes[key] = _Class(listener.batch, watched, view, {})
            cls.listeners[listener] = None
            self._class_of[listener] = key

    def _unplace(self, listener: Listener) -> None:
        key = self._class_of.pop(listener, None)
        if key is None:
            return
        cls = self._classes[key]
        cls.listeners.pop(listener, None)
        if not cls.listeners:
            del self._classes[key]

    # -- rounds ----------------------------------------------------------------------

    async def _run(self, sub: EventSubscription) -> None:
        loop = asyncio.get_running_loop()
        next_round = 0.0
        while True:
            try:
                first = await sub.get()
            except EOFError:
                return
            pause = next_round - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)  # gather a steady stream (ROUND_INTERVAL)
            next_round = loop.time() + self.interval()
            events = [first]
            budget = self.round_bytes - weight(first)
            while budget > 0:
                event = sub.get_nowait()
                if event is None:
                    break
                events.append(event)
                budget -= weight(event)
            try:
                self.deliver(events)
            except Exception:  # one bad round must not stop the fan-out
                log.exception("fanout: failed to deliver a round of %d events", len(events))

    def interval(self) -> float:
        """Seconds until the next round may start (see :data:`ROUND_WRITES`)."""
        spread = len(self.listeners) / ROUND_WRITES
        return min(max(self.round_interval, spread), MAX_ROUND_INTERVAL)

    def deliver(self, events: list[BusEvent]) -> None:
        """Merge ``events`` into a round and write it to every session watching its servers."""
        self._events.inc(len(events))
        round_ = self._sequencer.round(events)
        for state in round_.states:
            self.registry.note_state(state)
        for event in round_.unknown:
            log.warning("server=%s: ignored an event of kind %s", event.server, event.kind)
        if round_.repeated:
            log.warning("fanout: dropped %d output lines sent already", round_.repeated)
        if not round_.pieces:
            return
        for piece in round_.pieces:
            if type(piece.body) is StatusUpdate:
                self._statuses[piece.server] = piece.body.status
        servers = round_.servers
        if not servers <= self._known:
            self._known |= servers
            for listener in tuple(self.listeners):  # rare: a server's first events
                self._place(listener)
        slow: list[tuple[Listener, int]] = []
        behind: list[tuple[Listener, int]] = []
        for cls in list(self._classes.values()):
            pieces = [
                p.viewed(cls.view) for p in (round_.pieces if cls.batch else round_.events)
                if p.server in cls.servers
            ]
            if pieces:
                self._write(cls, pieces, slow, behind)
        self._cut(slow, "slow")
        self._cut(self._over_budget(behind), "budget")

    # -- the gateway's own news ------------------------------------------------------

    def server_offline(self, server: str) -> None:
        """``server``'s agent is lost: ``status_update`` offline to everyone watching it,
        then ``servers_update`` (see the module docstring)."""
        last = self._statuses.get(server)
        if last is None:
            status = Status(
                status="offline", name=server, id="", cpu_usage=0.0, memory_percent=0.0,
                memory_used="0B", memory_total="0B",
            )
        else:
            status = msgspec.structs.replace(
                last, status="offline", cpu_usage=0.0, memory_percent=0.0, memory_used="0B",
                memory_used_bytes=0, uptime="",
            )
        update = StatusUpdate(status=status, server=server)
        event = BusEvent(server=server, kind="status", body=update)
        try:
            self.deliver([event])
        except Exception:  # telling clients must not stop what told us
            log.exception("server=%s: failed to send the offline status", server)
        self.servers_changed([server])

    def servers_changed(self, servers: Iterable[str]) -> None:
        """``servers`` came online or went offline: each session watching one of them gets
        a ``servers_update`` of its own (scopes differ; this is rare)."""
        changed = set(servers)
        infos = self.registry.snapshot()
        for listener in list(self.listeners):
            if any(listener.watches(server) for server in changed):
                listener.servers_changed(infos)

    def _over_budget(self, behind: list[tuple[Listener, int]]) -> list[tuple[Listener, int]]:
        """The clients to cut off so that the buffers written this round fit in
        :attr:`slow_clients_budget`: the ones furthest behind first."""
        total = sum(size for _, size in behind)
        if total <= self.slow_clients_budget:
            return []
        cut = []
        for listener, size in sorted(behind, key=lambda item: item[1], reverse=True):
            if total <= self.slow_clients_budget:
                break
            cut.append((listener, size))
            total -= size
        log.warning("fanout: %d clients held more than the budget of %d bytes together",
                    len(cut), self.slow_clients_budget)
        return cut

    def _write(
        self,
        cls: _Class,
        pieces: list[Piece],
        slow: list[tuple[Listener, int]],
        behind: list[tuple[Listener, int]],
    ) -> None:
        data = b"".join([frame for piece in pieces for frame in piece.frames(cls.batch)])
        bound = self.slow_client_buffer
        written = 0
        for listener in cls.listeners:
            connection = listener.connection
            protocol = connection.protocol
            transport = connection.transport
            if protocol.state is not OPEN:
                continue  # closing: its close frame may already be out
            if connection.send_in_progress is not None:
                log.warning("conn=%s: skipped a round: a fragmented message is being sent",
                            listener.conn_id)
                continue
            try:
                if protocol.extensions:
                    # Compression keeps state per connection: its protocol makes the frames.
                    for piece in pieces:
                        for message in piece.messages(cls.batch):
                            protocol.send_text(message)
                    compressed = b"".join(protocol.data_to_send())
                    transport.write(compressed)
                    written += len(compressed)
                else:
                    transport.write(data)
                    written += len(data)
            except Exception as exc:
                log.warning("conn=%s: failed to write a round: %r", listener.conn_id, exc)
                continue
            size = transport.get_write_buffer_size()
            if size > bound:
                slow.append((listener, size))
            elif size:
                behind.append((listener, size))
        if written:
            self._sent.inc(written)

    def _cut(self, slow: list[tuple[Listener, int]], reason: str) -> None:
        for listener, size in slow:
            self.cut(listener, size, reason=reason)

    def cut(self, listener: Listener, size: int, *, reason: str = "slow") -> None:
        """Cut ``listener`` off (1013): ``size`` bytes wait to be sent to it, over the bound
        (a round's write found it so, or a reply's: see the session)."""
        if listener in self.listeners:  # else already cut off (several writes found it)
            self.remove(listener)
            self.cut_off += 1
            self.metrics.cut_off[reason].inc()
            log.warning(
                "conn=%s: cut off: %d bytes waiting to be sent (bound %d)",
                listener.conn_id, size, self.slow_client_buffer,
            )
            listener.cut_off(
                f"too slow: fell {size // 1024} KiB behind; reconnect and use get_output since"
            )
