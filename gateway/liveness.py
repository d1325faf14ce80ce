"""Liveness: requests in flight per server, answered at once when the server's agent is lost.

A request handed to the bus waits for its agent's reply until its timeout (15 s for a
command, minutes for some). If the agent dies meanwhile, nothing on the bus says so: over
RabbitMQ its requests simply vanish with its queue. So the gateway watches the servers it
has requests in flight for, and when one's agent is *lost* it fails every one of them at
once with :class:`~resofleet.gateway.errors.ServerLost` (``server_lost``: the command may
or may not have run), marks the server offline, and has the clients told
(:attr:`Liveness.on_lost`: ``status_update`` offline and ``servers_update``).

How a loss is learnt, soonest first:

- The bus returns a request to the server as undeliverable
  (:class:`~resofleet.bus.ServerOffline`) while the registry still lists it: nobody serves
  it any more, so what it held is lost. Over RabbitMQ this follows the agent at once: its
  command queue is exclusive to its connection, and the broker deletes it the moment that
  connection closes (a process killed, a host's link reset).
- A probe: while a server has a request in flight longer than :data:`PROBE_INTERVAL`, the
  gateway sends it a cheap request (one line of output history) every
  :data:`PROBE_INTERVAL`, with a :data:`PROBE_TIMEOUT` it lets run out; a probe the bus
  returns undeliverable is the first case. So a request whose agent is killed is answered
  within about two probe intervals and a broker round trip (half a second), however long
  its own timeout. A probe that is delivered costs the agent a ring-buffer read, or
  nothing when its queue is busy (the probe expires there unread); a probe that times out
  or fails otherwise proves nothing.
- The bus fails a request with :class:`~resofleet.bus.BusUnavailable` while the gateway's
  own link is up (the in-process bus does so when an agent closes with requests in hand):
  one probe at once tells whether the agent is gone.
- Its announcements lapse (:class:`~resofleet.gateway.registry.Registry` calls
  :meth:`Liveness.lose`): the fallback for an agent that is silent but still connected
  (frozen, partitioned with its TCP connection open), three announcement intervals.

Requests are watched the way :func:`asyncio.timeout` watches a deadline: a loss cancels
the task that waits, and the request turns the cancellation into ``ServerLost``; a task
cancelled for another reason (its client left) stays cancelled. A loss found by a request
itself fails the others and raises for that one directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from resofleet.bus import Bus, BusUnavailable, ServerOffline
from resofleet.contracts import BusReply, BusRequest, OutputRequest

from .errors import ServerLost
from .registry import Registry

__all__ = ["PROBE_INTERVAL", "PROBE_TIMEOUT", "QUEUE_GONE", "Liveness"]

log = logging.getLogger(__name__)

#: Seconds between probes of a server that has a request in flight, and how long a request
#: waits before its server is probed at all. A command usually answers in milliseconds, so
#: only slow ones are watched; a quarter second keeps a lost agent's requests answered
#: within about half a second at four small messages a second per slow server.
PROBE_INTERVAL: Final = 0.25
#: Seconds a probe may take: long enough for the broker to return it (a round trip, a
#: millisecond on a LAN), short enough that a probe stuck behind busy commands in the
#: agent's queue expires there instead of being answered late.
PROBE_TIMEOUT: Final = 0.2
#: How a loss found through the bus is told (see the module docstring).
QUEUE_GONE: Final = "its agent stopped or lost its link to the bus"
#: Who a probe is from, as the agent's logs name it.
PROBE_SUB: Final = "gateway:probe"


class _Watch:
    """One request waiting on the bus, as :meth:`Liveness.request` watches it."""

    __slots__ = ("cancelling", "lost", "started", "task")

    def __init__(self, task: asyncio.Task[object], started: float) -> None:
        self.task = task
        self.started = started
        self.cancelling = task.cancelling()  # cancellations asked of it before ours
        self.lost: str | None = None  # how its agent was lost, once it is


class Liveness:
    """Requests in flight, failed at once when their server's agent is lost (see the
    module docstring). :meth:`close` is idempotent."""

    def __init__(
        self,
        bus: Bus,
        registry: Registry,
        *,
        probe_interval: float = PROBE_INTERVAL,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.bus = bus
        self.registry = registry
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        #: Called with a server whose agent was lost (the gateway tells its clients).
        self.on_lost: Callable[[str], None] | None = None
        #: Requests in flight per server, oldest first (dicts keep insertion order).
        self._flights: dict[str, dict[_Watch, None]] = {}
        self._prober: asyncio.Task[None] | None = None
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    # -- requests --------------------------------------------------------------------

    async def request(self, request: BusRequest) -> BusReply:
        """``bus.request(request)``, failed with :class:`ServerLost` as soon as the server's
        agent is lost while it waits."""
        server = request.server
        task = asyncio.current_task()
        assert task is not None
        watch = _Watch(task, asyncio.get_running_loop().time())
        flights = self._flights.setdefault(server, {})
        flights[watch] = None
        if self._prober is None and not self._closed:
            self._prober = asyncio.create_task(self._probe_loop(), name="gateway:liveness")
        try:
            try:
                return await self.bus.request(request)
            except ServerOffline:
                if self.registry.is_online(server) or len(flights) > 1:
                    self.lose(server, QUEUE_GONE)  # nobody serves it: the others are lost
                raise
            except BusUnavailable:
                if not self.bus.connected or not await self._gone(server):
                    raise
                self.lose(server, QUEUE_GONE)
                raise ServerLost(server, QUEUE_GONE) from None
        except asyncio.CancelledError:
            if watch.lost is not None and task.uncancel() <= watch.cancelling:
                raise ServerLost(server, watch.lost) from None
            raise
        finally:
            del flights[watch]
            if not flights and self._flights.get(server) is flights:
                del self._flights[server]

    def lose(self, server: str, how: str) -> None:
        """``server``'s agent is gone, found through the bus: offline in the registry, its
        requests in flight failed (:meth:`fail`), and :attr:`on_lost` told, once."""
        changed = self.registry.mark_lost(server)
        failed = self.fail(server, how)
        if changed or failed:
            log.warning("server=%s: agent lost (%s); %d request(s) failed", server, how, failed)
            if self.on_lost is not None:
                self.on_lost(server)

    def fail(self, server: str, how: str) -> int:
        """Fail every request in flight to ``server`` with :class:`ServerLost` (the registry
        already knows it is offline); how many."""
        current = asyncio.current_task()
        failed = 0
        for watch in self._flights.get(server, ()):
            if watch.lost is None:
                watch.lost = how
                failed += 1
                if watch.task is not current:  # the caller raises for its own
                    watch.task.cancel()
        return failed

    # -- probes ----------------------------------------------------------------------

    async def _gone(self, server: str) -> bool:
        """Whether one probe finds nobody serving ``server``."""
        try:
            await self.bus.request(
                BusRequest(
                    server=server, body=OutputRequest(limit=1), timeout=self.probe_timeout,
                    sub=PROBE_SUB,
                )
            )
        except ServerOffline:
            return True
        except Exception:  # a timeout, a busy queue, a link down: proves nothing
            return False
        return False

    async def _probe(self, server: str) -> None:
        try:
            if await self._gone(server) and server in self._flights:
                self.lose(server, QUEUE_GONE)
        finally:
            self._probes.pop(server, None)

    async def _probe_loop(self) -> None:
        """Probe every server with a request in flight longer than the interval, once per
        interval; ends when nothing is in flight."""
        loop = asyncio.get_running_loop()
        try:
            while self._flights:
                await asyncio.sleep(self.probe_interval)
                now = loop.time()
                for server, flights in self._flights.items():
                    oldest = next(iter(flights))
                    if now - oldest.started >= self.probe_interval and server not in self._probes:
                        self._probes[server] = asyncio.create_task(
                            self._probe(server), name=f"gateway:probe:{server}"
                        )
        finally:
            self._prober = None

    async def close(self) -> None:
        """Stop probing (requests in flight are their sessions' to cancel)."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._prober, *self._probes.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
