"""The server registry: which servers exist, from the agents' presence announcements.

Agents announce their servers every ``interval`` seconds on the presence fanout, and at
once when a gateway broadcasts ``discover`` (which this registry does when it starts, so a
new gateway replica knows the fleet within a round trip, not an interval).

- A server is *online* while its agent keeps announcing it. After :data:`MISSED_ANNOUNCEMENTS`
  intervals without an announcement its agent is taken for gone: the server is reported
  ``offline`` in ``get_servers`` and no longer counts for server selection. Requests to it
  still go to the bus, which answers ``server_offline`` at once when nobody serves it.
- An agent that announces without a server it announced before has stopped serving it:
  that server is offline at once.
- An offline entry is kept for :data:`OFFLINE_RETENTION` seconds so clients see *what*
  went away, then forgotten.
- A server whose agent the gateway found gone some other way (its command queue vanished:
  :mod:`resofleet.gateway.liveness`) is offline at once (:meth:`Registry.mark_lost`), until
  its agent announces it again.

The gateway's own link. Announcements stop arriving when this gateway loses its bus (the
broker froze, the connection dropped): that says nothing about the servers, so while the
link is down (:meth:`Registry.link_changed`, told by the bus) no server expires, servers
keep the state they had when it went down, and :meth:`Registry.offline` names none, so
that requests reach the bus and are answered ``bus_unavailable``, the true cause, not
``server_offline``. When the link is back, every server that was online when it went
down gets :data:`MISSED_ANNOUNCEMENTS` intervals afresh, counted from then, to be
announced again, and the registry broadcasts ``discover`` so that agents announce at once
rather than at their next interval.

The registry keeps no other state: a gateway replica that restarts rebuilds it from the
next announcements. Expiry is computed when read, against the loop's clock, and also
pushed: with a running loop, a timer per server calls :attr:`Registry.on_offline` the moment its
announcements lapse (unless the gateway's own bus link is down: then the silence is the
gateway's, and the check waits for the link), and when its agent drops it;
:attr:`Registry.on_online` hears of servers that appear or come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from resofleet.bus import Bus, BusError, Subscription
from resofleet.contracts import (
    MISSED_ANNOUNCEMENTS, Announce, Discover, PresenceMessage, Revoke, ServerInfo, ServerState,
)

__all__ = ["OFFLINE_RETENTION", "Registry"]

log = logging.getLogger(__name__)
#: ``server_state`` values of the agent's console health check, not lifecycle states.
_HEALTH_STATES: Final = frozenset({"healthy", "unhealthy"})

#: Seconds an offline server stays listed (with ``online: false``) before it is forgotten:
#: long enough for a dashboard to show what went away, short enough not to accumulate.
OFFLINE_RETENTION: Final = 600.0


@dataclass(slots=True)
class _Entry:
    server: str
    agent: str
    host: str
    status: str
    worlds: int
    users: int
    runtime: str
    last_seen: float  # wall clock (epoch seconds), for clients
    seen_at: float  # loop clock, when last announced
    interval: float
    gone_at: float | None = None  # loop clock when the agent dropped it, or it was lost
    timer: asyncio.TimerHandle | None = None  # checks for the lapse (see _arm)
    #: loop clock from which missed announcements count: ``seen_at``, or the moment the
    #: gateway's own link came back after an outage (see the module docstring)
    counted_from: float = 0.0

    def online(self, now: float) -> bool:
        if self.gone_at is not None:
            return False
        return now - max(self.seen_at, self.counted_from) <= MISSED_ANNOUNCEMENTS * self.interval

    def offline_since(self, now: float) -> float:
        if self.gone_at is not None:
            return self.gone_at
        if self.online(now):
            return now
        return max(self.seen_at, self.counted_from) + MISSED_ANNOUNCEMENTS * self.interval


class Registry:
    """Servers from presence (see the module docstring). ``start``, then read
    :meth:`online` and :meth:`snapshot`; :meth:`close` is idempotent."""

    def __init__(
        self,
        bus: Bus,
        *,
        gateway: str | None = None,
        clock: Callable[[], float] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.gateway = gateway or f"gw-{uuid.uuid4().hex[:8]}"
        self._clock = clock
        self._wall = wall
        self._entries: dict[str, _Entry] = {}
        self._sub: Subscription[PresenceMessage] | None = None
        self._task: asyncio.Task[None] | None = None
        self._rediscover: asyncio.Task[None] | None = None
        self._unwatch: Callable[[], None] | None = None
        #: Loop clock when this gateway's own link went down; None while it is up.
        self._down_at: float | None = None
        self._closed = False
        #: Called with each token id revoked on the bus (the gateway refuses it).
        self.on_revoke: Callable[[Revoke], None] | None = None
        #: Called with each gateway's ``discover`` (its own too): the gateway answers with
        #: the revocations it holds, so a gateway started later learns them.
        self.on_discover: Callable[[Discover], None] | None = None
        #: Called with a server and how it went, when its announcements lapse or its agent
        #: stops serving it: the gateway fails what it had in flight and tells clients.
        self.on_offline: Callable[[str, str], None] | None = None
        #: Called with the servers an announcement brought online (new, or back).
        self.on_online: Callable[[Sequence[str]], None] | None = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _as_of(self) -> float:
        """The moment servers are judged at: now, or while the link is down the moment it
        went down (an outage of our own link costs no server its standing)."""
        return self._down_at if self._down_at is not None else self._now()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._sub = await self.bus.presence()
        self._task = asyncio.create_task(self._run(self._sub), name="gateway:registry")
        self._unwatch = self.bus.on_link(self.link_changed)
        await self._discover()

    async def _discover(self) -> None:
        try:
            await self.bus.broadcast(Discover(gateway=self.gateway))
        except BusError as exc:  # announcements arrive anyway, every interval
            log.warning("registry: could not send discover: %s", exc)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for entry in self._entries.values():
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None
        if self._unwatch is not None:
            self._unwatch()
        if self._rediscover is not None:
            self._rediscover.cancel()
        if self._sub is not None:
            await self._sub.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, sub: Subscription[PresenceMessage]) -> None:
        async for message in sub:
            try:
                self.handle(message)
            except Exception:  # one bad message must not stop the registry
                log.exception("registry: failed to handle %s", type(message).__name__)

    # -- updates (also called directly by tests) -------------------------------------

    def handle(self, message: PresenceMessage) -> None:
        match message:
            case Announce():
                self._announce(message)
            case Revoke():
                if self.on_revoke is not None:
                    self.on_revoke(message)
            case Discover():
                if self.on_discover is not None:  # agents announce; gateways gossip
                    self.on_discover(message)

    def _announce(self, message: Announce) -> None:
        now, wall = self._now(), self._wall()
        named = set()
        came: list[str] = []
        for presence in message.servers:
            named.add(presence.server)
            entry = self._entries.get(presence.server)
            if entry is None or not entry.online(now):
                came.append(presence.server)
                log.info(
                    "server=%s: online (agent %s on %s)", presence.server, message.agent,
                    message.host,
                )
            elif entry.agent != message.agent:
                log.warning(
                    "server=%s: now announced by agent %s (was %s)",
                    presence.server, message.agent, entry.agent,
                )
            self._entries[presence.server] = _Entry(
                server=presence.server,
                agent=message.agent,
                host=message.host,
                status=presence.status,
                worlds=presence.worlds,
                users=presence.users,
                runtime=presence.runtime,
                last_seen=wall,
                seen_at=now,
                interval=max(message.interval, 0.1),
                timer=entry.timer if entry is not None else None,
                counted_from=now,
            )
            self._arm(self._entries[presence.server])
        dropped = []
        for entry in self._entries.values():
            if entry.agent == message.agent and entry.server not in named and entry.gone_at is None:
                log.info("server=%s: no longer served by agent %s", entry.server, message.agent)
                entry.gone_at = now
                dropped.append(entry.server)
        if came and self.on_online is not None:
            self.on_online(came)
        for server in dropped:
            if self.on_offline is not None:
                self.on_offline(server, f"agent {message.agent} stopped serving it")

    # -- lapses, pushed --------------------------------------------------------------

    def _arm(self, entry: _Entry) -> None:
        """Check ``entry`` when its announcements would lapse (once per lapse period, not
        per announcement: the check re-arms itself while they keep coming). Only with a
        running loop: a registry driven by hand (tests) is read, not pushed."""
        if entry.timer is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        counted = max(entry.seen_at, entry.counted_from)
        due = counted + MISSED_ANNOUNCEMENTS * entry.interval - self._now()
        entry.timer = loop.call_later(max(0.0, due), self._lapse, entry.server)

    def _lapse(self, server: str) -> None:
        entry = self._entries.get(server)
        if entry is None:
            return
        entry.timer = None
        if entry.gone_at is not None:
            return  # dropped or lost: reported then
        now = self._now()
        if entry.online(now):
            self._arm(entry)  # announced since this check was armed
            return
        if self._down_at is not None or not self.bus.connected:
            # the gateway's own link is down: look again once it may be back
            entry.timer = asyncio.get_running_loop().call_later(entry.interval, self._lapse, server)
            return
        entry.gone_at = now
        silent = now - entry.seen_at
        log.info("server=%s: offline: agent %s silent for %.1f s", server, entry.agent, silent)
        if self.on_offline is not None:
            self.on_offline(
                server, f"its agent has not announced it for {silent:.{0 if silent >= 1 else 1}f} s"
            )

    def mark_lost(self, server: str) -> bool:
        """``server``'s agent is gone (found another way than by its silence): offline now,
        until it is announced again. True if that is news (it was not reported offline)."""
        entry = self._entries.get(server)
        if entry is None or entry.gone_at is not None:
            return False
        entry.gone_at = self._now()
        log.info("server=%s: offline: agent %s lost", server, entry.agent)
        return True

    def link_changed(self, up: bool) -> None:
        """This gateway's bus link went down or came back (see the module docstring)."""
        now = self._now()
        if not up:
            if self._down_at is None:
                self._down_at = now
                log.warning(
                    "registry: the bus link is down; servers keep their state until it is back"
                )
            return
        down_at, self._down_at = self._down_at, None
        if down_at is None:
            return
        kept = 0
        for entry in self._entries.values():
            if entry.online(down_at):
                entry.counted_from = now
                kept += 1
        log.info(
            "registry: the bus link is back after %.1f s; %d server(s) have %d intervals to "
            "be announced again", now - down_at, kept, MISSED_ANNOUNCEMENTS,
        )
        if self._sub is not None and not self._closed:
            if self._rediscover is None or self._rediscover.done():
                self._rediscover = asyncio.get_running_loop().create_task(
                    self._discover(), name="gateway:rediscover"
                )

    def note_state(self, event: ServerState) -> None:
        """Record a lifecycle event (starting, ready, exited, ...) of a known server: its
        status until the next announcement says otherwise. The console health check's
        verdicts (healthy, unhealthy) share the event but are no lifecycle state: they
        reach clients in ``status_update``'s ``health`` and leave the status alone."""
        entry = self._entries.get(event.server)
        if entry is not None and event.state not in _HEALTH_STATES:
            entry.status = event.state

    # -- reads -----------------------------------------------------------------------

    def _prune(self, now: float) -> None:
        for server in [
            e.server for e in self._entries.values()
            if not e.online(now) and now - e.offline_since(now) > OFFLINE_RETENTION
        ]:
            del self._entries[server]

    def online(self) -> list[str]:
        """The ids of the servers whose agents are announcing them, sorted."""
        now = self._as_of()
        return sorted(s for s, e in self._entries.items() if e.online(now))

    def offline(self) -> dict[str, float]:
        """Servers known to have gone offline, with the seconds since their agent last
        announced them (servers never seen are not here: the bus decides for those).
        Empty while this gateway's own link is down: the bus answers for them then."""
        if self._down_at is not None:
            return {}
        now = self._now()
        return {s: now - e.seen_at for s, e in self._entries.items() if not e.online(now)}

    def for_route(self, server: str | None) -> tuple[list[str], dict[str, float]]:
        """:meth:`online` and :meth:`offline` as routing a request for ``server`` needs
        them (None: the request names none): for a named server, nothing about the others
        (no list of every server to build per request)."""
        if server is None:
            return self.online(), self.offline()
        entry = self._entries.get(server)
        if entry is None or self._down_at is not None:
            return [], {}
        now = self._now()
        return [], ({} if entry.online(now) else {server: now - entry.seen_at})

    def is_online(self, server: str) -> bool:
        entry = self._entries.get(server)
        return entry is not None and entry.online(self._as_of())

    def snapshot(self) -> list[ServerInfo]:
        """Every known server, online or recently gone, for ``servers_update`` (while the
        link is down, as they were when it went down)."""
        now = self._as_of()
        self._prune(now)
        infos = []
        for server in sorted(self._entries):
            e = self._entries[server]
            online = e.online(now)
            infos.append(
                ServerInfo(
                    server=e.server,
                    host=e.host,
                    status=e.status if online else "offline",
                    worlds=e.worlds if online else 0,
                    users=e.users if online else 0,
                    last_seen=e.last_seen,
                    runtime=e.runtime,
                    agent=e.agent,
                    online=online,
                )
            )
        return infos
