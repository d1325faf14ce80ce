"""A real fleet per test: agents driving emulated headless consoles, gateways, a bus.

``fleet`` is parametrized over the two transports (through ``bus_factory``): over
LocalBus everything shares one in-process bus, as in ``resofleet up``; over RabbitMQ each
agent and each gateway has its own connection under the test's own name prefix, as
separate processes on separate hosts would.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from resofleet.gateway import Gateway
from resofleet.audit import AuditLog
from resofleet.agent.settings import AgentSettings, ServerConfig
from tests.integration.gateway.client import Client, wait_until

#: Seconds between an agent's announcements in tests: short, so a vanished agent is
#: noticed quickly (three missed: under a second).
TEST_ANNOUNCE_INTERVAL = 0.3


def emulated(server: str, *args: str, scenario: str = "default") -> ServerConfig:
    return ServerConfig(id=server, runtime="emulator", scenario=scenario, emulator_args=tuple(args))


class Fleet:
    def __init__(self, bus_factory: Any) -> None:
        self.bus_factory = bus_factory
        self.agents: list[Any] = []
        self.gateways: list[Gateway] = []
        self.clients: list[Client] = []

    async def agent(
        self, *servers: str | ServerConfig, name: str | None = None, **options: Any
    ) -> Any:
        """Start an agent serving ``servers`` (ids are emulators with the default scenario)."""
        from resofleet.agent import Agent

        configs = [emulated(s) if isinstance(s, str) else s for s in servers]
        options.setdefault("announce_interval", TEST_ANNOUNCE_INTERVAL)
        options.setdefault("settings", AgentSettings(name=name or f"agent-{len(self.agents) + 1}"))
        agent = Agent(await self.bus_factory(), servers=configs, **options)
        self.agents.append(agent)
        await agent.start()
        return agent

    async def gateway(self, **options: Any) -> Gateway:
        gateway = Gateway(await self.bus_factory(), host="127.0.0.1", port=0, **options)
        await gateway.start()
        self.gateways.append(gateway)
        return gateway

    async def client(self, url: str, *, cls: type[Client] = Client, **kwargs: Any) -> Client:
        """A client of ``url``; ``kwargs`` go to websockets' ``connect`` (headers, origin...)."""
        client = await cls.connect(url, **kwargs)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        for gateway in reversed(self.gateways):
            await gateway.close()
        for agent in reversed(self.agents):
            await agent.close()


@pytest.fixture
async def fleet(bus_factory) -> AsyncIterator[Fleet]:
    fleet = Fleet(bus_factory)
    try:
        yield fleet
    finally:
        await fleet.close()


async def servers_online(client: Client, servers: Sequence[str], timeout: float = 15.0) -> list[dict]:
    """Wait until ``get_servers`` lists exactly ``servers`` online; return the entries."""

    async def check() -> list[dict] | None:
        listed = (await client.request({"type": "get_servers"}))["servers"]
        online = sorted(s["server"] for s in listed if s["online"])
        return listed if online == sorted(servers) else None

    return await wait_until(check, timeout=timeout, what=f"servers {servers} online")


class AuditFile:
    """An audit log a test hands to a gateway or an agent (``.log``), and reads back."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.log = AuditLog(path, source=source)

    async def records(self) -> list[dict[str, Any]]:
        """Every record written so far (flushed first)."""
        await self.log.flush()
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines()]

    async def refusals(self, outcome: str, expected: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The ``outcome`` records once they account for ``expected`` refusals, one entry per
        refusal: alike refusals share a record with ``refusals`` (a count), written when
        their window (about a second) ends."""

        async def counted() -> list[dict[str, Any]] | None:
            found = [r for r in await self.records() if r["outcome"] == outcome]
            expanded = [r for r in found for _ in range(r.get("refusals", 1))]
            return expanded if len(expanded) >= expected else None

        return await wait_until(counted, timeout=timeout, what=f"{expected} {outcome} refusals audited")


@pytest.fixture
async def audit_file(tmp_path: Path) -> AsyncIterator[Callable[[str], Awaitable[AuditFile]]]:
    """Start audit logs under ``tmp_path``: ``await audit_file("gateway")``; closed after."""
    made: list[AuditFile] = []

    async def make(source: str) -> AuditFile:
        audit = AuditFile(tmp_path / f"{source}-{len(made) + 1}.jsonl", source)
        await audit.log.start()
        made.append(audit)
        return audit

    yield make
    for audit in made:
        await audit.log.close()
