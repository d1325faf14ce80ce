"""The agent: every configured server of one host, on the bus.

For each ``[[servers]]`` entry it starts a :class:`~resofleet.agent.server.ManagedServer` and serves
that server id on the bus; it announces its servers on the presence fanout every
:data:`ANNOUNCE_INTERVAL` seconds and whenever a gateway asks (``discover``). A gateway
forgets a server after three missed announcements.

With an audit sink (``audit=``, any :class:`~resofleet.contracts.AuditSink`; the command line
passes the JSON-lines writer), every console command a client sent and every container
action is recorded there (:mod:`resofleet.agent.audit`). The agent only writes to it:
whoever created the sink starts it before the agent and closes it after.

With ``schedules`` (``[[schedules]]`` entries, :mod:`resofleet.agent.schedules`) the agent
runs them on the servers they match (:mod:`resofleet.agent.scheduler`), keeping their
last slots under ``settings.state_dir``; a bad entry raises
:class:`~resofleet.agent.schedules.ScheduleError` when the agent is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from resofleet.bus import Bus, BusError, Served
from resofleet.contracts import Announce, Discover

from .audit import audited
from .metrics import AgentMetrics
from .scheduler import Scheduler
from .schedules import ScheduleConfig, compile_schedule
from .server import ManagedServer
from .settings import AgentSettings, ServerConfig

if TYPE_CHECKING:
    from resofleet.contracts import AuditSink

    from .scheduler import Clock

__all__ = ["ANNOUNCE_INTERVAL", "Agent", "SERVE_CONCURRENCY"]

log = logging.getLogger(__name__)

#: Seconds between presence announcements. Gateways forget a server after three missed
#: ones, so a vanished agent is noticed within about six seconds.
ANNOUNCE_INTERVAL: Final = 2.0
#: Requests handled at once per server: status and output need no console, so they need
#: not wait behind a slow ``save``; console commands still run one at a time.
SERVE_CONCURRENCY: Final = 4


class Agent:
    """See the module docstring."""

    def __init__(
        self,
        bus: Bus,
        *,
        servers: Sequence[ServerConfig],
        settings: AgentSettings | None = None,
        announce_interval: float = ANNOUNCE_INTERVAL,
        audit: AuditSink | None = None,
        schedules: Sequence[ScheduleConfig] = (),
        clock: Clock | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings or AgentSettings()
        self.id = f"{self.settings.name}-{secrets.token_hex(3)}"
        self.host = socket.gethostname()
        self.announce_interval = announce_interval
        self.audit = audit
        #: This agent's metrics (:mod:`resofleet.agent.metrics`), read from its servers.
        self.metrics = AgentMetrics(lambda: self.servers)
        self.servers = {
            cfg.id: ManagedServer(cfg, bus, self.settings, metrics=self.metrics.server(cfg.id))
            for cfg in servers
        }
        ids = [cfg.id for cfg in servers]
        #: Runs ``schedules`` on this agent's servers (``clock``: tests hold their own).
        self.scheduler = Scheduler(
            [compile_schedule(entry, servers=ids) for entry in schedules],
            self.servers, bus=bus, metrics=self.metrics, audit=audit,
            state_dir=self.settings.state_dir, clock=clock,
        )
        self._served: list[Served] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def ready(self) -> bool:
        """Whether this agent answers for every server it was given: its bus is connected
        and each server's console has answered since its headless last started (the
        agent's health endpoint, :mod:`resofleet.agent.health`, says what is missing)."""
        return self.bus.connected and all(
            s.presence().status == "running" for s in self.servers.values()
        )

    async def start(self) -> None:
        """Claim every server id on the bus, start the headless servers, announce them."""
        try:
            for server in self.servers.values():
                self._served.append(
                    await self.bus.serve(
                        server.id, audited(server.handle, self.audit), concurrency=SERVE_CONCURRENCY
                    )
                )
            for server in self.servers.values():
                await server.start()
            presence = await self.bus.presence()
        except BaseException:
            await self.close()
            raise
        self._tasks = [
            asyncio.create_task(self._announce_loop(), name="agent:announce"),
            asyncio.create_task(self._answer_discover(presence), name="agent:discover"),
        ]
        await self.announce()
        self.scheduler.start()

    async def announce(self) -> None:
        message = Announce(
            agent=self.id,
            host=self.host,
            servers=[s.presence() for s in self.servers.values()],
            interval=self.announce_interval,
        )
        try:
            await self.bus.broadcast(message)
        except BusError as exc:
            log.warning("agent=%s: announcement not sent: %s", self.id, exc)

    async def _announce_loop(self) -> None:
        while True:
            await asyncio.sleep(self.announce_interval)
            await self.announce()

    async def _answer_discover(self, presence) -> None:  # type: ignore[no-untyped-def]
        async for message in presence:
            if isinstance(message, Discover):
                await self.announce()

    async def close(self) -> None:
        """Stop serving, stop announcing, stop the headless servers this agent started."""
        if self._closed:
            return
        self._closed = True
        await self.scheduler.close()
        for served in self._served:
            with contextlib.suppress(Exception):
                await served.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(*(s.close() for s in self.servers.values()), return_exceptions=True)
