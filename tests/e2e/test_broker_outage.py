"""A fleet whose broker freezes: `resofleet agent` as its own process, a gateway, and a
RabbitMQ node of the test's own that the test stops with SIGSTOP and resumes with
SIGCONT (the shared broker is never touched).

A frozen broker keeps its TCP connections open and answers nothing, so nobody sees a
disconnection; what it held comes out when it resumes, however late."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from resofleet.agent.service import ANNOUNCE_INTERVAL
from resofleet.bus import AmqpBus
from resofleet.bus.amqp import PROBE_INTERVAL, PROBE_TIMEOUT
from resofleet.contracts import Topology
from resofleet.gateway import Gateway
from resofleet.contracts import MISSED_ANNOUNCEMENTS
from resofleet.gateway.routing import Timeouts
from tests.integration.gateway.client import Client, http_get, wait_until
from tests.support.rabbit_node import RabbitNode, rabbit_node
from tests.support.timing import AT_ONCE

from .agent_cli import start_agent
from .test_commands import START_TIMEOUT

pytestmark = pytest.mark.amqp

#: The gateway's timeout for a console command in these tests: short, so that the broker
#: can stay frozen past it without the heartbeats giving up on the connections (18 s).
COMMAND_TIMEOUT = 3.0
#: Seconds the broker stays frozen: past the command timeout, well within the heartbeat.
FREEZE = 2 * COMMAND_TIMEOUT
#: Seconds the agent has to write an audit record (it flushes at least every 0.2 s).
AUDIT_WITHIN = 5.0
#: Seconds within which the gateway notices a frozen broker: the probe's documented bound.
DETECTED_WITHIN = PROBE_INTERVAL + PROBE_TIMEOUT + AT_ONCE
#: Seconds after which a server whose announcements stopped is taken for offline.
EXPIRY = MISSED_ANNOUNCEMENTS * ANNOUNCE_INTERVAL
#: Seconds within which a resumed broker serves requests again (the issue's bound).
BACK_WITHIN = 2.0


@dataclass
class Outage:
    node: RabbitNode
    gateway: Gateway
    client: Client
    audit: Path
    agent_log: Path

    async def audited(self, command: str) -> list[dict[str, Any]]:
        """The agent's audit records of ``command`` once there is one."""

        def records() -> list[dict[str, Any]]:
            if not self.audit.exists():
                return []
            lines = self.audit.read_text(encoding="utf-8").splitlines()
            return [r for r in map(json.loads, lines) if r["command"] == command]

        return await wait_until(records, timeout=AUDIT_WITHIN, what=f"{command!r} audited")

    async def served(self, within: float) -> None:
        """Wait until a command goes through again."""

        async def answered() -> bool:
            reply = await self.client.request(
                {"type": "command", "command": "version", "server": "eu-1"}, timeout=COMMAND_TIMEOUT + 1
            )
            return reply["type"] == "command_response"

        await wait_until(answered, timeout=within, what="a command answered")


@contextlib.asynccontextmanager
async def outage(tmp_path: Path) -> AsyncIterator[Outage]:
    """A private broker, `resofleet agent` serving eu-1 (an emulator) with an audit log,
    an in-process gateway with :data:`COMMAND_TIMEOUT`, and a client that sees eu-1."""
    async with rabbit_node(tmp_path / "broker") as node:
        prefix = f"outage-{uuid.uuid4().hex[:8]}."
        cli = await start_agent(tmp_path, bus_url=f'"{node.url}"', prefix=prefix)
        audit = cli.audit
        bus = AmqpBus(node.url, topology=Topology(prefix=prefix), name="outage-gateway")
        gateway = Gateway(bus, host="127.0.0.1", port=0, timeouts=Timeouts(command=COMMAND_TIMEOUT))
        client: Client | None = None
        try:
            await cli.serving()
            await bus.start()
            await gateway.start()
            client = await Client.connect(gateway.url)

            async def listed() -> bool:
                reply = await client.request({"type": "get_servers"})
                return [s["server"] for s in reply["servers"] if s["online"]] == ["eu-1"]

            await wait_until(listed, timeout=START_TIMEOUT, what="eu-1 online")
            yield Outage(node, gateway, client, audit, cli.log)
        finally:
            node.thaw()
            if client is not None:
                await client.close()
            await gateway.close()
            await bus.close()
            await cli.stop()


async def test_a_command_held_by_a_frozen_broker_never_runs_after_its_timeout(tmp_path):
    """A command sent while the broker is frozen is answered `timeout` at the gateway's
    timeout; when the broker resumes and delivers it, the agent does not run it (its
    audit log says `timeout`, never `ok`), and commands are served again."""
    async with outage(tmp_path) as fleet:
        reply = await fleet.client.request({"type": "command", "command": "worlds", "server": "eu-1"})
        assert reply["type"] == "command_response"  # the path works before the freeze

        fleet.node.freeze()
        frozen_at = time.monotonic()
        started = time.perf_counter()
        reply = await fleet.client.request(
            {"type": "command", "command": "users", "server": "eu-1"}, timeout=COMMAND_TIMEOUT + AT_ONCE
        )
        assert (reply["type"], reply["code"]) == ("error", "timeout"), reply
        assert time.perf_counter() - started >= COMMAND_TIMEOUT - 0.01
        await asyncio.sleep(FREEZE - (time.monotonic() - frozen_at))  # the broker holds it
        fleet.node.thaw()

        [record] = await fleet.audited("users")  # delivered at last, and refused
        assert record["outcome"] == "timeout", record
        await fleet.served(within=START_TIMEOUT)
        assert [r["outcome"] for r in await fleet.audited("users")] == ["timeout"]
        assert "it is not run" in fleet.agent_log.read_text()


async def test_a_frozen_broker_is_bus_unavailable_not_an_offline_server(tmp_path, caplog):
    """Within the probe's bound of the broker freezing, /readyz answers 503 with the reason
    and requests are answered `bus_unavailable` at once, still after the servers'
    announcements would have expired (the fault is the gateway's link, not the servers);
    once the broker resumes, the gateway is ready and serves commands within 2 s. Nothing
    is left failed unseen, in the gateway or in the agent."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    async with outage(tmp_path) as fleet:
        port = fleet.gateway.port
        assert (await http_get(port, "/readyz"))[0] == 200
        fleet.node.freeze()
        frozen = time.perf_counter()

        async def not_ready() -> tuple[int, str] | None:
            status, body = await http_get(port, "/readyz")
            return (status, body) if status != 200 else None

        status, body = await wait_until(not_ready, timeout=DETECTED_WITHIN, what="/readyz 503")
        assert status == 503 and "not answered" in body, body

        async def refused_at_once() -> None:
            for request in (
                {"type": "command", "command": "worlds", "server": "eu-1"},
                {"type": "get_status"},  # no server named: the one the client sees
            ):
                started = time.perf_counter()
                reply = await fleet.client.request(request, timeout=AT_ONCE)
                assert (reply["type"], reply["code"]) == ("error", "bus_unavailable"), reply
                assert time.perf_counter() - started < AT_ONCE

        await refused_at_once()
        # the outage outlasts the servers' announcements; still the link's fault
        await asyncio.sleep(max(0.0, EXPIRY + 1 - (time.perf_counter() - frozen)))
        await refused_at_once()

        fleet.node.thaw()
        thawed = time.perf_counter()

        async def ready() -> bool:
            return (await http_get(port, "/readyz"))[0] == 200

        await wait_until(ready, timeout=BACK_WITHIN, what="/readyz 200")
        # ready means served: no server is called offline for the silence of the outage
        reply = await fleet.client.request({"type": "command", "command": "worlds", "server": "eu-1"})
        assert reply["type"] == "command_response", reply
        assert time.perf_counter() - thawed < BACK_WITHIN
    gc.collect()
    unseen = [str(r.msg) for r in caplog.records if "never retrieved" in str(r.msg)]
    assert not unseen, unseen[:3]
    assert "never retrieved" not in fleet.agent_log.read_text()
