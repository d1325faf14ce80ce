"""The gateway: the edge, the registry, the fan-out and the sessions, wired together.

Start order: registry (presence, then ``discover``), fan-out (the event subscription),
then the listening socket, so the first client already sees the fleet. Shutdown order
(:meth:`Gateway.close`, idempotent; SIGTERM/SIGINT in the command line call it):

1. stop accepting connections and close every session with 1001 (going away);
2. drain: wait for the closing handshakes and the sessions' handlers, at most
   :data:`DRAIN_TIMEOUT` seconds (sessions cancel their requests still in flight);
3. stop the liveness probes, the fan-out and the registry (their bus subscriptions).

The bus is not the gateway's: whoever made it closes it afterwards (``resofleet gateway``
right after, ``resofleet up`` after the agent), so several parts can share one bus. The
audit sink (any :class:`~resofleet.contracts.AuditSink`) is not the gateway's either:
whoever made it starts it before and closes it after the gateway.

Security (:class:`~resofleet.gateway.security.Security`, default: open mode) is enforced by the
edge (handshakes), the sessions (``auth``, rate limits) and routing (roles, scopes); the
:class:`~resofleet.gateway.guard.Guard` holds its run-time state. Revocations arrive on the presence
fanout: the gateway refuses the token from then on and closes its sessions with 4403.
When another gateway starts (its ``discover``), this one repeats the bus revocations it
holds, so the newcomer learns them (see :mod:`resofleet.gateway.guard`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from websockets.asyncio.server import ServerConnection

from resofleet.bus import Bus, BusError
from resofleet.contracts import Discover, Revoke

from .errors import CLOSE_REVOKED
from .fanout import SLOW_CLIENT_BUFFER, SLOW_CLIENTS_BUDGET, Fanout
from .guard import Guard
from .liveness import Liveness
from .metrics import GatewayMetrics
from .registry import Registry
from .routing import Timeouts
from .security import Security
from .server import CLOSE_TIMEOUT, Admission, Edge
from .session import MAX_IN_FLIGHT, Session
from .settings import DEFAULT_BULK_CONCURRENCY, DEFAULT_HOST, DEFAULT_PORT

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from resofleet.contracts import AuditSink

__all__ = ["DRAIN_TIMEOUT", "Gateway"]

log = logging.getLogger(__name__)

#: Seconds shutdown waits for sessions to close: the close handshake's own bound plus a
#: margin for handlers to cancel their requests.
DRAIN_TIMEOUT: Final = CLOSE_TIMEOUT + 2.0


class Gateway:
    """One gateway over ``bus``. ``await start()``, then serve until ``await close()``."""

    def __init__(
        self,
        bus: Bus,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        name: str | None = None,
        timeouts: Timeouts = Timeouts(),
        slow_client_buffer: int = SLOW_CLIENT_BUFFER,
        slow_clients_budget: int = SLOW_CLIENTS_BUDGET,
        max_in_flight: int = MAX_IN_FLIGHT,
        bulk_concurrency: int = DEFAULT_BULK_CONCURRENCY,
        ssl_context: ssl.SSLContext | None = None,
        security: Security = Security(),
        audit: AuditSink | None = None,
        compression: bool = False,
        scraped: Sequence[CollectorRegistry] = (),
    ) -> None:
        self.bus = bus
        #: This gateway's metrics; ``/metrics`` serves them, then ``scraped`` (the agent's,
        #: in ``resofleet up``).
        self.metrics = GatewayMetrics()
        self.metrics.watch(connections=self._connections, ready=lambda: self._not_ready() is None)
        self.timeouts = timeouts
        self.max_in_flight = max_in_flight
        #: Servers one bulk request has in flight at once (``[gateway] bulk_concurrency``).
        self.bulk_concurrency = bulk_concurrency
        self.security = security
        self.guard = Guard(
            security, audit=audit, tls=ssl_context is not None, metrics=self.metrics
        )
        self.registry = Registry(bus, gateway=name)
        self.registry.on_revoke = self._on_revoke
        self.registry.on_discover = self._on_discover
        self.fanout = Fanout(
            bus, self.registry, slow_client_buffer=slow_client_buffer,
            slow_clients_budget=slow_clients_budget, metrics=self.metrics,
        )
        self.liveness = Liveness(bus, self.registry)
        self.liveness.on_lost = self.fanout.server_offline
        self.registry.on_offline = self._on_offline
        self.registry.on_online = self.fanout.servers_changed
        self.edge = Edge(
            self._session, host=host, port=port, ready=self._not_ready, guard=self.guard,
            ssl_context=ssl_context, compression=compression,
            registries=(self.metrics.registry, *scraped),
        )
        self._unlink: Callable[[], None] | None = None
        self._gossip: asyncio.Task[None] | None = None
        self.sessions: set[Session] = set()
        self._ids = itertools.count(1)
        self._started = False
        self._closing: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    @property
    def name(self) -> str:
        return self.registry.gateway

    @property
    def port(self) -> int:
        return self.edge.port

    @property
    def url(self) -> str:
        """``ws://host:port/ws``, with the real port once started."""
        return self.edge.url

    def _connections(self) -> tuple[int, int]:
        """Sessions (unauthenticated, authenticated), for the metrics."""
        authenticated = sum(1 for s in self.sessions if s.principal is not None)
        return len(self.sessions) - authenticated, authenticated

    def _on_link(self, up: bool) -> None:
        if up:
            self.metrics.bus_reconnects.inc()

    def _not_ready(self) -> str | None:
        if self._closing is not None:
            return "shutting down"
        if not self._started:
            return "starting"
        return self.bus.problem

    async def start(self) -> None:
        self._unlink = self.bus.on_link(self._on_link)
        await self.registry.start()
        await self.fanout.start()
        await self.edge.start()
        self._started = True
        mode = "open: no secret, every client is admin" if self.guard.open else "auth: tokens"
        log.info("gateway %s: listening on %s (%s)", self.name, self.url, mode)

    # -- servers going -----------------------------------------------------------------

    def _on_offline(self, server: str, how: str) -> None:
        """The registry took ``server`` offline (its announcements lapsed, or its agent
        dropped it): fail its requests in flight and tell the clients watching it."""
        self.liveness.fail(server, how)
        self.fanout.server_offline(server)

    # -- revocation ------------------------------------------------------------------

    def _on_revoke(self, message: Revoke) -> None:
        """A token id revoked on the bus: refuse it, and close the sessions using it."""
        if not self.guard.revoke(message.jti, message.until):
            return  # known already (gossip repeats revocations)
        closed = 0
        for session in list(self.sessions):
            principal = session.principal
            if principal is not None and principal.jti == message.jti:
                self.metrics.cut_off["revoked"].inc()
                session.end(CLOSE_REVOKED, "token revoked")
                closed += 1
        log.info(
            "gateway %s: token %s revoked; %d session(s) closed", self.name, message.jti, closed
        )

    def _on_discover(self, message: Discover) -> None:
        """Another gateway started: repeat the bus revocations it may have missed."""
        if message.gateway == self.name or self._closing is not None:
            return
        revocations = self.guard.gossip()
        if revocations and (self._gossip is None or self._gossip.done()):
            self._gossip = asyncio.get_running_loop().create_task(
                self._repeat(revocations), name="gateway:gossip"
            )

    async def _repeat(self, revocations: list[Revoke]) -> None:
        try:
            for revoke in revocations:
                await self.bus.broadcast(revoke)
        except BusError as exc:
            log.warning("gateway %s: could not repeat revocations: %s", self.name, exc)
        else:
            log.info("gateway %s: repeated %d revocation(s) for a new gateway", self.name, len(revocations))

    # -- sessions --------------------------------------------------------------------

    async def _session(self, connection: ServerConnection, admission: Admission) -> None:
        conn_id = f"c{next(self._ids)}"
        principal = admission.principal
        session = Session(
            connection,
            conn_id=conn_id,
            bus=self.bus,
            registry=self.registry,
            fanout=self.fanout,
            liveness=self.liveness,
            principal=principal,
            guard=self.guard,
            client=admission.client,
            pinned=admission.target.pinned,
            timeouts=self.timeouts,
            max_in_flight=self.max_in_flight,
            bulk_concurrency=self.bulk_concurrency,
        )
        if principal is None:
            who = "unauthenticated"
        else:
            via = f", {admission.source}" if admission.source else ""
            who = f"as {principal.sub} ({principal.role.label}{via})"
        log.info(
            "conn=%s server=%s: connected from %s %s",
            conn_id, admission.target.pinned or "*", admission.client, who,
        )
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)

    async def close(self) -> None:
        """Shut down in order (see the module docstring). Idempotent; concurrent calls wait
        for the same shutdown."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(), name="gateway:close")
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        log.info("gateway %s: shutting down (%d sessions)", self.name, len(self.sessions))
        try:
            self.edge.close()
            try:
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    await self.edge.wait_closed()
            except TimeoutError:
                log.warning("gateway %s: sessions did not close within %g s", self.name, DRAIN_TIMEOUT)
            await self.liveness.close()
            await self.fanout.close()
            await self.registry.close()
            if self._gossip is not None:
                self._gossip.cancel()
        finally:
            if self._unlink is not None:
                self._unlink()
            self.guard.flush_held()
            self._closed.set()
            log.info("gateway %s: closed", self.name)

    async def wait_closed(self) -> None:
        """Return once :meth:`close` has finished."""
        await self._closed.wait()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
