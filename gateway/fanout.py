"""Fan-out: server events from the bus to every session watching that server.

One bus subscription per gateway, bound to exactly the servers its sessions watch (``#``
as soon as one session watches everything it may see), so a gateway with no clients
receives nothing. Each event is encoded once per form and written to all its sessions with
:func:`websockets.asyncio.server.broadcast`:

- ``output`` events (a :class:`~contracts.ContainerOutputBatch` from the agent) become one
  ``container_output`` message per line for sessions in line mode (the default, what the
  seed's clients expect), each line encoded once; sessions that subscribed with
  ``"batch": true`` get the batch as one ``container_output_batch``;
- ``status``, ``worlds`` and ``bans`` events are client messages already;
- ``state`` events (a server starting, ready, exited ...) update the registry.

Slow clients. ``broadcast`` never waits: a message for a client whose socket is full piles
up in that connection's write buffer. After every round of events each targeted
connection's buffer is measured; one over :data:`SLOW_CLIENT_BUFFER` bytes is taken out of
the fan-out and closed with 1013 (:data:`~gateway.errors.CLOSE_TOO_SLOW`). The close frame
queues behind what is buffered, and websockets drops the TCP connection if the client has
not finished the close handshake within the close timeout, so a stalled client holds at
most this bound (plus one round) for a few seconds and never slows the others. Cut-offs are
counted in :attr:`Fanout.cut_off`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Final, Protocol

from websockets.asyncio.server import ServerConnection, broadcast

from bus import Bus, BusError, EventSubscription
from contracts import (
    BansUpdate,
    BusEvent,
    ContainerOutputBatch,
    ServerState,
    StatusUpdate,
    WorldsUpdate,
    encode_server,
)

from .registry import Registry
from .routing import output_lines

__all__ = ["EVENT_QUEUE", "EVENTS_PER_ROUND", "Fanout", "Listener", "SLOW_CLIENT_BUFFER"]

log = logging.getLogger(__name__)

#: Bytes a connection's write buffer may hold, beyond what the kernel's socket buffer
#: already took, before the client is cut off. About ten thousand console lines: a reader
#: that lags this far is not reading (a stalled tab, a stopped process), and holding more
#: per client would let a few of them take the gateway's memory.
SLOW_CLIENT_BUFFER: Final = 1024 * 1024
#: Events the gateway's own subscription may fall behind by before the oldest are
#: dropped (by the broker, ``x-max-length``/``drop-head``, and in process).
EVENT_QUEUE: Final = 10_000
#: Events dispatched between two slow-client checks: checking after every event would
#: cost a syscall-free but O(clients) scan per event; a round bounds the lag instead.
EVENTS_PER_ROUND: Final = 64


class Listener(Protocol):
    """What the fan-out needs from a session."""

    conn_id: str
    batch: bool

    @property
    def connection(self) -> ServerConnection: ...

    def watches(self, server: str) -> bool: ...

    def patterns(self) -> Iterable[str]: ...

    def cut_off(self, reason: str) -> None: ...


_Targets = tuple[list[ServerConnection], list[ServerConnection], list[Listener]]


class Fanout:
    """Events from the bus to sessions (see the module docstring)."""

    def __init__(
        self,
        bus: Bus,
        registry: Registry,
        *,
        slow_client_buffer: int = SLOW_CLIENT_BUFFER,
        queue: int = EVENT_QUEUE,
    ) -> None:
        self.bus = bus
        self.registry = registry
        self.slow_client_buffer = slow_client_buffer
        self.queue = queue
        self.listeners: set[Listener] = set()
        #: Clients cut off for falling behind, since start.
        self.cut_off = 0
        #: Events dispatched, since start.
        self.events = 0
        self._targets: dict[str, _Targets] = {}
        self._sub: EventSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._bind_lock = asyncio.Lock()
        self._closed = False

    @property
    def dropped(self) -> int:
        """Events this gateway fell behind on and dropped (its own subscription's count)."""
        return self._sub.dropped if self._sub is not None else 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._sub = await self.bus.subscribe((), maxsize=self.queue)
        self._task = asyncio.create_task(self._run(self._sub), name="gateway:fanout")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sub is not None:
            await self._sub.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- listeners -------------------------------------------------------------------

    async def add(self, listener: Listener) -> None:
        self.listeners.add(listener)
        await self.changed()

    async def remove(self, listener: Listener) -> None:
        # Always rebind: a listener cut off for slowness left the set without unbinding.
        self.listeners.discard(listener)
        await self.changed()

    async def changed(self) -> None:
        """A listener came, went or changed what it watches: rebuild targets and bindings."""
        self._targets.clear()
        await self._rebind()

    async def _rebind(self) -> None:
        if self._sub is None or self._closed:
            return
        async with self._bind_lock:
            wanted: set[str] = set()
            for listener in self.listeners:
                wanted.update(listener.patterns())
            if "#" in wanted:
                wanted = {"#"}
            current = set(self._sub.patterns)
            try:
                for pattern in wanted - current:  # bind first: never a gap for a watcher
                    await self._sub.bind(pattern)
                for pattern in current - wanted:
                    await self._sub.unbind(pattern)
            except BusError as exc:
                log.warning("fanout: could not update event bindings: %s", exc)
            except Exception as exc:  # a broker hiccup here must not end a session
                log.warning("fanout: could not update event bindings: %r", exc)

    def _targets_for(self, server: str) -> _Targets:
        targets = self._targets.get(server)
        if targets is None:
            watching = [listener for listener in self.listeners if listener.watches(server)]
            targets = (
                [w.connection for w in watching if not w.batch],
                [w.connection for w in watching if w.batch],
                watching,
            )
            self._targets[server] = targets
        return targets

    # -- dispatch --------------------------------------------------------------------

    async def _run(self, sub: EventSubscription) -> None:
        while True:
            try:
                first = await sub.get()
            except EOFError:
                return
            touched: dict[str, None] = {}
            for event in [first, *sub.drain(EVENTS_PER_ROUND - 1)]:
                try:
                    self.dispatch(event)
                except Exception:  # one bad event must not stop the fan-out
                    log.exception("server=%s: failed to dispatch a %s event", event.server, event.kind)
                touched[event.server] = None
            self.check_slow(touched)

    def dispatch(self, event: BusEvent) -> None:
        """Encode ``event`` once per form and write it to every session watching its server."""
        self.events += 1
        body = event.body
        if isinstance(body, ServerState):
            self.registry.note_state(body)
            return
        lines, batches, _ = self._targets_for(event.server)
        if not lines and not batches:
            return
        if isinstance(body, ContainerOutputBatch):
            if lines:
                for message in output_lines(body):
                    broadcast(lines, encode_server(message), text=True)
            if batches:
                broadcast(batches, encode_server(body), text=True)
        elif isinstance(body, (StatusUpdate, WorldsUpdate, BansUpdate)):
            data = encode_server(body)
            broadcast(lines, data, text=True)
            broadcast(batches, data, text=True)
        else:
            log.warning("server=%s: ignored an event of kind %s", event.server, event.kind)

    def check_slow(self, servers: Iterable[str]) -> None:
        """Cut off every session of ``servers``' events whose write buffer is over the bound."""
        slow: list[tuple[Listener, int]] = []
        for server in servers:
            for listener in self._targets_for(server)[2]:
                transport = listener.connection.transport
                size = transport.get_write_buffer_size() if transport is not None else 0
                if size > self.slow_client_buffer:
                    slow.append((listener, size))
        for listener, size in slow:
            if listener not in self.listeners:
                continue  # already cut off (it watched several servers)
            self.listeners.discard(listener)
            self._targets.clear()
            self.cut_off += 1
            log.warning(
                "conn=%s: cut off: %d bytes waiting to be sent (bound %d)",
                listener.conn_id, size, self.slow_client_buffer,
            )
            listener.cut_off(
                f"too slow: fell {size // 1024} KiB behind; reconnect and use get_output since"
            )
