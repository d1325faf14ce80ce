"""The agent's ``/metrics`` over both buses, with the emulator as a real child process:
per-server gauges match what get_status and get_worlds answer, counters the traffic."""

from __future__ import annotations

import asyncio

import pytest

from resofleet.agent import Agent
from resofleet.agent.health import HealthServer
from resofleet.agent.metrics import exposition
from resofleet.agent.settings import AgentSettings, ServerConfig
from resofleet.contracts import (
    BusRequest,
    CommandResponse,
    OutputHistory,
    OutputRequest,
    RunCommand,
    StatusRequest,
    StatusUpdate,
    WorldsRequest,
    WorldsUpdate,
)
from tests.integration.gateway.client import wait_until
from tests.support.scrape import get, parse, scrape, value

#: Seconds a test waits for the agent's polls.
WAIT = 30.0
#: Polls far apart: no sample lands between a request and the scrape that checks it.
QUIET = AgentSettings(name="metrics", status_interval=60.0, worlds_interval=60.0, bans_interval=60.0)
BUSY = ServerConfig(
    id="busy", runtime="emulator", scenario="busy",
    emulator_args=("--activity-interval", "0", "--noise-rate", "0"),
)


@pytest.fixture
async def agent(bus_factory):
    made = Agent(await bus_factory(), servers=[BUSY], settings=QUIET, announce_interval=0.5)
    await made.start()
    endpoint = HealthServer(
        lambda: [], host="127.0.0.1", port=0,
        metrics=lambda accept: exposition(made.metrics.registry, accept),
    )
    await endpoint.start()
    made.endpoint = endpoint  # type: ignore[attr-defined]
    yield made
    await endpoint.close()
    await made.close()


def req(body) -> BusRequest:
    return BusRequest(server="busy", body=body, timeout=20.0)


def status_polls(samples) -> float:
    return value(samples, "resofleet_poll_seconds_count", server="busy", poll="status")


async def test_gauges_match_get_status_and_get_worlds(agent, bus_factory):
    """up, CPU, memory, worlds, users and present users equal the last answers."""
    gw = await bus_factory()
    worlds = (await gw.request(req(WorldsRequest()))).body
    assert isinstance(worlds, WorldsUpdate)
    # The gauges show the last status sample. Besides the interval (a minute here) the agent
    # samples when the server starts, becomes ready and its console first answers (health),
    # all about now: take the get_status whose answer no status poll followed before the
    # scrape (each poll is counted in resofleet_poll_seconds; there are three at most).
    async with asyncio.timeout(WAIT):
        while True:
            before = status_polls(await scrape(agent.endpoint.port))
            status = (await gw.request(req(StatusRequest()))).body
            assert isinstance(status, StatusUpdate)
            samples = await scrape(agent.endpoint.port)
            if status_polls(samples) == before:
                break
    assert value(samples, "resofleet_server_up", server="busy") == 1
    assert value(samples, "resofleet_server_worlds", server="busy") == len(worlds.output) > 1
    assert value(samples, "resofleet_server_users", server="busy") == sum(w.users for w in worlds.output)
    assert value(samples, "resofleet_server_present_users", server="busy") == sum(
        w.present for w in worlds.output
    )
    assert value(samples, "resofleet_server_cpu_usage", server="busy") == status.status.cpu_usage
    assert value(samples, "resofleet_server_memory_bytes", server="busy") == (
        status.status.memory_used_bytes
    ) > 0
    assert value(samples, "resofleet_server_restarts_total", server="busy") == 0


async def test_counters_equal_the_commands_sent(agent, bus_factory):
    """N viewer commands: N in the viewer class; output lines equal the last seq."""
    gw = await bus_factory()
    n = 4
    for _ in range(n):
        assert isinstance((await gw.request(req(RunCommand(command="users")))).body, CommandResponse)
    history = (await gw.request(req(OutputRequest()))).body
    assert isinstance(history, OutputHistory)
    samples = await scrape(agent.endpoint.port)
    assert value(samples, "resofleet_console_command_seconds_count", server="busy", **{"class": "viewer"}) == n
    assert value(samples, "resofleet_console_timeouts_total", server="busy") == 0
    assert value(samples, "resofleet_output_lines_total", server="busy") == history.lines[-1].seq
    assert value(samples, "resofleet_output_dropped_total", server="busy") == 0

    # The first polls run as the console becomes ready, beside these commands (a status
    # sample takes 0.2 s, the worlds poll several console commands): counted once done.
    async def polled() -> bool:
        samples = await scrape(agent.endpoint.port)
        return all(
            value(samples, "resofleet_poll_seconds_count", server="busy", poll=poll) >= 1
            for poll in ("status", "worlds")
        )

    await wait_until(polled, timeout=WAIT, what="the first status and worlds polls counted")


async def test_a_scrape_never_touches_the_console(agent, bus_factory):
    """Scrapes send nothing to the console: its output does not move, and OpenMetrics
    comes when asked."""
    gw = await bus_factory()
    await gw.request(req(WorldsRequest()))
    before = agent.servers["busy"].output_log.seq
    for _ in range(5):
        status, headers, body = await get(
            agent.endpoint.port, headers={"Accept": "application/openmetrics-text"}
        )
        assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")
    assert agent.servers["busy"].output_log.seq == before
    assert parse((await get(agent.endpoint.port))[2].decode())
