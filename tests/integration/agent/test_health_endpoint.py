"""The agent's health endpoint on a real socket: a real agent over the in-process bus with
the emulator as its headless, and `resofleet agent` as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from resofleet.agent import Agent
from resofleet.agent import health as health_module
from resofleet.agent.health import MAX_PROBES, HealthServer, problems
from resofleet.agent.settings import AgentSettings, ServerConfig
from resofleet.bus import LocalBus
from resofleet.contracts import ServerState, Topology

from tests.support.lines import Lines

#: Seconds for the emulator to start and its console to answer.
READY_TIMEOUT = 30.0
#: Seconds one probe may take on a loaded machine.
PROBE_TIMEOUT = 5.0


async def probe(port: int, path: str = "/readyz", *, method: str = "GET") -> tuple[int, str]:
    """One HTTP/1.1 request, as a container health check sends it: status and body."""
    async with asyncio.timeout(PROBE_TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: agent\r\n\r\n".encode())
        response = await reader.read()
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


@pytest.fixture
async def running() -> AsyncIterator[tuple[Agent, HealthServer, LocalBus]]:
    """An agent with one emulated headless, not started yet, and its endpoint, listening."""
    bus = LocalBus()
    await bus.start()
    agent = Agent(
        bus,
        servers=[ServerConfig(id="one", runtime="emulator", scenario="default")],
        settings=AgentSettings(name="health-test", audit_log=None),
    )
    health = HealthServer(lambda: problems(agent), host="127.0.0.1", port=0)
    await health.start()
    try:
        yield agent, health, bus
    finally:
        await health.close()
        await agent.close()
        await bus.close()


async def test_readyz_turns_200_once_every_console_answered(running) -> None:
    """Before the agent starts: 503 naming the server; after its console synchronised: 200;
    /healthz is 200 throughout."""
    agent, health, bus = running
    assert await probe(health.port, "/healthz") == (200, "ok\n")
    assert await probe(health.port) == (503, "not ready: one created\n")
    states = await bus.subscribe(["one.state"])
    await agent.start()
    async with asyncio.timeout(READY_TIMEOUT):
        async for event in states:
            if isinstance(event.body, ServerState) and event.body.state == "ready":
                break
    assert agent.ready
    assert await probe(health.port) == (200, "ready\n")
    assert await probe(health.port, method="HEAD") == (200, "")


async def test_readyz_is_503_when_the_bus_is_down(running) -> None:
    """A disconnected bus is named first among the reasons."""
    agent, health, bus = running
    await bus.close()
    status, body = await probe(health.port)
    assert status == 503 and body.startswith("not ready: bus not connected; ")
    assert not agent.ready


async def test_a_stalled_client_does_not_hold_up_probes(running) -> None:
    """A connection that sends nothing is dropped after its timeout; probes beside it are
    answered at once."""
    _, health, _ = running
    _, stalled = await asyncio.open_connection("127.0.0.1", health.port)
    try:
        assert (await probe(health.port, "/healthz"))[0] == 200
    finally:
        stalled.close()


async def test_a_flood_of_connections_is_refused_beyond_the_limit(running) -> None:
    """With MAX_PROBES connections stalled, one more is closed unanswered; once they go,
    probes are answered again."""
    _, health, _ = running
    stalled = [await asyncio.open_connection("127.0.0.1", health.port) for _ in range(MAX_PROBES)]
    try:
        await asyncio.sleep(0)  # let the server take them
        with pytest.raises((ConnectionResetError, IndexError)):  # RST, or closed: nothing
            await probe(health.port, "/healthz")
    finally:
        for _, w in stalled:
            w.close()
    async with asyncio.timeout(PROBE_TIMEOUT):
        while True:  # the slots come back as the server sees the closes
            try:
                if (await probe(health.port, "/healthz"))[0] == 200:
                    break
            except (ConnectionResetError, IndexError):
                await asyncio.sleep(0.01)


async def test_scrapers_that_never_read_do_not_hold_the_slots(monkeypatch) -> None:
    """As many clients as there are slots ask for a large /metrics and never read it: each is cut off
    after the request timeout, and health checks are answered again."""
    monkeypatch.setattr(health_module, "REQUEST_TIMEOUT", 0.5)
    monkeypatch.setattr(health_module, "MAX_PROBES", 2)  # two slots are as good as 32 here
    big = b"# a large registry\n" + b"resofleet_x 1\n" * 1_500_000  # 21 MB: more than socket buffers hold
    health = HealthServer(lambda: [], host="127.0.0.1", port=0, metrics=lambda _accept: (big, "text/plain"))
    await health.start()
    stalled = []
    try:
        for _ in range(health_module.MAX_PROBES):
            reader, writer = await asyncio.open_connection("127.0.0.1", health.port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n")
            stalled.append((reader, writer))
        async with asyncio.timeout(PROBE_TIMEOUT):
            while True:  # refused while the scrapers hold every slot, answered once they are cut
                try:
                    if (await probe(health.port, "/healthz"))[0] == 200:
                        break
                except (ConnectionResetError, IndexError):
                    await asyncio.sleep(0.05)
    finally:
        for _, writer in stalled:
            writer.close()
        await health.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _agent_process(tmp_path: Path, amqp_url: str, topology: Topology, health: str):  # type: ignore[no-untyped-def]
    config = tmp_path / "agent.toml"
    config.write_text(
        f"[bus]\nprefix = {json.dumps(topology.prefix)}\n"
        f'[agent]\nname = "health-cli"\naudit_log = false\nhealth = "{health}"\n'
        '[[servers]]\nid = "one"\nruntime = "emulator"\nscenario = "default"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESOFLEET_")}
    env.update(RESOFLEET_AMQP_URL=amqp_url)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resofleet", "agent", "--config", str(config), env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.amqp
async def test_resofleet_agent_serves_health_checks(tmp_path: Path, amqp_url: str, topology: Topology) -> None:
    """`resofleet agent` with ``[agent] health``: the endpoint's address is logged, /readyz
    turns 200 once the emulator answered, and SIGTERM still stops it with status 0."""
    process = await _agent_process(tmp_path, amqp_url, topology, "127.0.0.1:0")
    log = Lines()

    async def read() -> None:
        assert process.stderr is not None
        while raw := await process.stderr.readline():
            log.add(raw.decode().rstrip("\n"))
        log.end()

    reader = asyncio.create_task(read())
    try:
        line = await log.first(lambda line: "health checks on http://" in line, timeout=READY_TIMEOUT)
        found = re.search(r"http://127\.0\.0\.1:(\d+)/readyz", line)
        assert found is not None, line
        port = int(found[1])
        await log.first(lambda line: "console ready" in line, timeout=READY_TIMEOUT)
        assert await probe(port) == (200, "ready\n")
        process.terminate()
        async with asyncio.timeout(READY_TIMEOUT):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await asyncio.wait_for(reader, READY_TIMEOUT)


@pytest.mark.amqp
async def test_a_taken_health_port_stops_the_agent(tmp_path: Path, amqp_url: str, topology: Topology) -> None:
    """A port already taken: one line naming it, exit status 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await _agent_process(tmp_path, amqp_url, topology, f"127.0.0.1:{port}")
        async with asyncio.timeout(READY_TIMEOUT):
            _, err = await process.communicate()
    assert process.returncode == 1
    lines = err.decode().strip().splitlines()
    assert lines[-1].startswith(f"resofleet agent: cannot listen on 127.0.0.1:{port} for health checks: ")
