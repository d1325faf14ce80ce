"""Crash recovery and the console health check, seen from the bus (both transports), with
the emulator as a real child process (the process runtime).

What a client notices: ``server_state`` events (restarting, crashloop, unhealthy,
healthy) and ``status_update`` carrying the state, ``restarts``, ``exit_code`` and
``health``. Backoffs and health intervals are made small through the settings; every wait
is on an event, with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from resofleet.agent import Agent
from resofleet.agent.settings import AgentSettings, ServerConfig
from resofleet.bus import RequestTimeout
from resofleet.contracts import (
    BusEvent,
    BusRequest,
    ContainerRequest,
    ContainerResponse,
    Error,
    RunCommand,
    StatusRequest,
    StatusUpdate,
)

WAIT_S = 20.0
"""Any single wait: an emulator starts in well under a second; CI machines are slow."""
CRASH_CODE = 134
"""The emulator's ``crash`` exits like an unhandled .NET exception (SIGABRT)."""
WEDGE = str(Path(__file__).parents[2] / "support" / "scenarios" / "wedge.toml")
#: Polls that stay out of the way (the health probe is what these tests watch).
QUIET = AgentSettings(name="test", status_interval=0.3, worlds_interval=300.0, bans_interval=300.0)
#: A health check that decides within about a second.
QUICK_HEALTH = AgentSettings(
    name="test", status_interval=0.3, worlds_interval=300.0, bans_interval=300.0,
    health_interval=0.2, health_timeout=0.5, health_misses=2,
)


class Watch:
    """The events of one server, read in order until the one a test waits for."""

    def __init__(self, sub: Any) -> None:
        self.sub = sub
        self.seen: list[BusEvent] = []

    async def until(self, predicate: Callable[[BusEvent], bool], timeout: float = WAIT_S) -> BusEvent:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.sub.get()
                self.seen.append(event)
                if predicate(event):
                    return event

    async def state(self, state: str) -> BusEvent:
        return await self.until(lambda e: e.kind == "state" and e.body.state == state)

    async def status(self, check: Callable[[Any], bool]) -> Any:
        event = await self.until(lambda e: e.kind == "status" and check(e.body.status))
        return event.body.status

    def states(self) -> list[str]:
        return [e.body.state for e in self.seen if e.kind == "state"]


@pytest.fixture
async def fleet(bus_factory) -> AsyncIterator[Callable[..., Any]]:  # type: ignore[no-untyped-def]
    """Start an agent with one server; returns (agent, a requester bus, a Watch on it)."""
    agents: list[Agent] = []

    async def start(config: ServerConfig, settings: AgentSettings = QUIET) -> tuple[Agent, Any, Watch]:
        agent_bus, gateway_bus = await bus_factory(), await bus_factory()
        watch = Watch(await gateway_bus.subscribe([f"{config.id}.state", f"{config.id}.status"]))
        agent = Agent(agent_bus, servers=[config], settings=settings, announce_interval=0.5)
        await agent.start()
        agents.append(agent)
        await watch.state("ready")
        return agent, gateway_bus, watch

    yield start
    for agent in agents:
        await agent.close()


def emulator(**options: Any) -> ServerConfig:
    return ServerConfig(id="one", runtime="emulator", emulator_args=("--startup-delay", "0"),
                        restart_backoff=0.1, **options)


async def ask(bus: Any, body: Any, timeout: float = WAIT_S) -> Any:
    return (await bus.request(BusRequest(server="one", body=body, timeout=timeout))).body


async def status(bus: Any) -> Any:
    reply = await ask(bus, StatusRequest())
    assert isinstance(reply, StatusUpdate), reply
    return reply.status


async def test_a_crash_is_restarted_and_status_update_says_so(fleet) -> None:  # type: ignore[no-untyped-def]
    """crash: `restarting` with exit code 134 on the stream, then the console answers again
    and get_status counts the restart and keeps the exit code."""
    _, bus, watch = await fleet(emulator())
    await ask(bus, RunCommand(command="crash"))
    seen = await watch.status(lambda s: s.status == "restarting")
    assert seen.exit_code == CRASH_CODE
    await watch.state("ready")
    now = await status(bus)
    assert (now.status, now.restarts, now.exit_code) == ("running", 1, CRASH_CODE)
    assert "crash" not in (await ask(bus, RunCommand(command="version"))).output


async def test_a_clean_exit_stays_down_under_on_failure(fleet) -> None:  # type: ignore[no-untyped-def]
    """restart = "on-failure": `shutdown` (exit 0) leaves it exited; a start brings it back."""
    agent, bus, watch = await fleet(emulator(restart="on-failure"))
    await ask(bus, RunCommand(command="shutdown"))
    down = await watch.status(lambda s: s.status == "exited")
    assert (down.exit_code, down.restarts) == (0, 0)
    assert "clean exit" in agent.servers["one"].runtime.tracker.last.why
    assert "restarting" not in watch.states()
    reply = await ask(bus, ContainerRequest(action="start"))
    assert isinstance(reply, ContainerResponse) and reply.status == "running", reply
    await watch.state("ready")


async def test_never_leaves_a_crash_down(fleet) -> None:  # type: ignore[no-untyped-def]
    """restart = "never": a crash is reported (exit code 134) and not restarted."""
    agent, bus, watch = await fleet(emulator(restart="never"))
    await ask(bus, RunCommand(command="crash"))
    down = await watch.status(lambda s: s.status == "exited")
    assert (down.exit_code, down.restarts) == (CRASH_CODE, 0)
    assert agent.servers["one"].runtime.tracker.last.state == "exited"
    assert "restarting" not in watch.states()


async def test_a_stop_through_resofleet_is_not_undone(fleet) -> None:  # type: ignore[no-untyped-def]
    """container stop under restart = "always": it stays stopped, no death is judged."""
    agent, bus, watch = await fleet(emulator(restart="always"))
    reply = await ask(bus, ContainerRequest(action="stop"))
    assert isinstance(reply, ContainerResponse) and reply.status == "exited", reply
    runtime = agent.servers["one"].runtime
    assert runtime.tracker.last is None  # never judged as a death: nothing to restart
    # the backoff (0.1 s) passes many times over; nothing may start it meanwhile
    with pytest.raises(TimeoutError):
        await watch.until(lambda e: e.kind == "state" and e.body.state in ("restarting", "starting"),
                          timeout=1.0)
    assert (await status(bus)).status == "exited"


async def test_a_crash_loop_stops_the_restarts_until_started(fleet) -> None:  # type: ignore[no-untyped-def]
    """Two deaths within the window (crash_loop_limit = 2): `crashloop`, commands are refused
    with the reason, and a start clears it: the next crash is restarted again."""
    _, bus, watch = await fleet(emulator(crash_loop_limit=2))
    await ask(bus, RunCommand(command="crash"))
    await watch.state("restarting")
    await watch.state("ready")
    await ask(bus, RunCommand(command="crash"))
    await watch.state("crashloop")
    now = await status(bus)
    assert (now.status, now.restarts, now.exit_code) == ("crashloop", 1, CRASH_CODE)
    refused = await ask(bus, RunCommand(command="version"))
    assert isinstance(refused, Error) and "crashloop" in refused.message, refused
    reply = await ask(bus, ContainerRequest(action="start"))
    assert isinstance(reply, ContainerResponse) and reply.status == "running", reply
    await watch.state("ready")
    await ask(bus, RunCommand(command="crash"))
    await watch.state("restarting")


# -- the console health check ---------------------------------------------------------------


async def hang(bus: Any) -> None:
    """Make the console stop answering (the scenario's wedge quirk), the way a client would
    notice: its command times out."""
    try:
        reply = await ask(bus, RunCommand(command="startWorldURL not-a-record"), timeout=1.0)
    except RequestTimeout:  # the requester's own clock ran out first
        return
    assert isinstance(reply, Error) and reply.code == "timeout", reply


async def test_a_hung_console_is_unhealthy(fleet) -> None:  # type: ignore[no-untyped-def]
    """A console that stops answering: an `unhealthy` event, `health` in status_update, the
    metric; without health_restart the headless is left alone."""
    agent, bus, watch = await fleet(
        ServerConfig(id="one", runtime="emulator", scenario=WEDGE), QUICK_HEALTH
    )
    server = agent.servers["one"]
    pid = server.runtime.pid
    await watch.status(lambda s: s.health == "healthy")
    await hang(bus)
    await watch.state("unhealthy")
    seen = await watch.status(lambda s: s.health == "unhealthy")
    assert (seen.status, seen.restarts) == ("running", 0)
    sample = agent.metrics.registry.get_sample_value
    assert sample("resofleet_server_console_unhealthy", {"server": "one"}) == 1.0
    assert sample("resofleet_console_health_misses_total", {"server": "one"}) >= 2
    assert server.runtime.pid == pid and (await status(bus)).health == "unhealthy"


async def test_health_restart_brings_a_hung_console_back(fleet) -> None:  # type: ignore[no-untyped-def]
    """health_restart = true: unhealthy, restarted, and `healthy` again once it answers."""
    agent, bus, watch = await fleet(
        ServerConfig(id="one", runtime="emulator", scenario=WEDGE, health_restart=True), QUICK_HEALTH
    )
    await hang(bus)
    await watch.state("unhealthy")
    await watch.state("ready")
    await watch.state("healthy")
    now = await status(bus)
    assert (now.status, now.health, now.restarts) == ("running", "healthy", 1)
    assert agent.metrics.registry.get_sample_value(
        "resofleet_server_console_unhealthy", {"server": "one"}) == 0.0
    assert "Harbor Lounge" in (await ask(bus, RunCommand(command="worlds"))).output


async def test_a_console_that_hangs_after_every_restart_ends_in_crashloop(fleet) -> None:  # type: ignore[no-untyped-def]
    """health_restart restarts count for the crash-loop guard: hung twice within the
    window (crash_loop_limit = 2), the headless is stopped in `crashloop`, not restarted
    for ever; a start brings it back."""
    agent, bus, watch = await fleet(
        ServerConfig(id="one", runtime="emulator", scenario=WEDGE, health_restart=True,
                     crash_loop_limit=2, crash_loop_window=600.0),
        QUICK_HEALTH,
    )
    await hang(bus)
    await watch.state("unhealthy")
    await watch.state("ready")
    await watch.state("healthy")
    await hang(bus)
    await watch.state("unhealthy")
    await watch.state("crashloop")
    stopped = await watch.status(lambda s: s.status == "crashloop")
    assert stopped.restarts == 1
    assert agent.servers["one"].runtime.pid is None
    reply = await ask(bus, ContainerRequest(action="start"))
    assert getattr(reply, "status", None) == "running", reply
    await watch.state("healthy")


async def test_client_commands_the_console_never_answers_are_misses(fleet) -> None:  # type: ignore[no-untyped-def]
    """With no probe and no poll due, a client's commands that the hung console took and
    never answered make it `unhealthy`: asking it all the time cannot hide a hang."""
    no_probes = AgentSettings(
        name="test", status_interval=0.3, worlds_interval=300.0, bans_interval=300.0,
        health_interval=300.0, health_timeout=0.5, health_misses=2,
    )
    agent, bus, watch = await fleet(ServerConfig(id="one", runtime="emulator", scenario=WEDGE), no_probes)
    await hang(bus)  # the first miss: the command that wedged it
    assert "unhealthy" not in watch.states()
    with contextlib.suppress(RequestTimeout):
        reply = await ask(bus, RunCommand(command="version"), timeout=1.0)
        assert isinstance(reply, Error) and reply.code == "timeout", reply
    await watch.state("unhealthy")
    assert (await status(bus)).health == "unhealthy"
