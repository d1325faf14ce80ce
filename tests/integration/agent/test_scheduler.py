"""The schedule runner in an agent over both buses, with the emulator as a real child
process and a clock the test holds: the slot comes when the test moves the clock."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from resofleet.agent import Agent
from resofleet.agent.schedules import ScheduleConfig, people_in
from resofleet.agent.scheduler import CHECK_INTERVAL, state_path
from resofleet.agent.settings import AgentSettings, ServerConfig
from resofleet.contracts import BusRequest, CommandResponse, RunCommand, ScheduleRun
from tests.integration.gateway.client import wait_until
from tests.support.clock import ManualClock

#: A slot of ``every = "1h"``: a whole hour, UTC.
SLOT = datetime(2026, 11, 30, 4, tzinfo=timezone.utc).timestamp()
#: Seconds a test waits for something the runner does at once once the clock moved.
WAIT = 20.0


class Sink:
    """An audit sink keeping its records (the JSON-lines writer is tested on its own)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, **record: Any) -> None:
        self.records.append(record)


@pytest.fixture
async def scheduled(bus_factory, tmp_path: Path):
    agents: list[Agent] = []

    async def start(*schedules: ScheduleConfig, clock: ManualClock, audit: Sink | None = None):
        agent_bus, watcher = await bus_factory(), await bus_factory()
        events = await watcher.subscribe(["eu-1.schedule"])
        settings = AgentSettings(name="sched", status_interval=0.5, worlds_interval=0.5,
                                 bans_interval=5.0, state_dir=str(tmp_path / "state"))
        agent = Agent(
            agent_bus, servers=[ServerConfig(id="eu-1", runtime="emulator", scenario="default")],
            settings=settings, announce_interval=0.5, schedules=schedules, clock=clock, audit=audit,
        )
        agents.append(agent)
        await agent.start()
        await clock.asleep()  # the runner has read the clock: moving it now is a move
        return agent, watcher, events

    yield start
    for agent in agents:
        await agent.close()


def state_of(tmp_path: Path) -> dict[str, Any]:
    path = state_path(tmp_path / "state", "eu-1")
    return json.loads(path.read_bytes()) if path.exists() else {}


async def waiting(tmp_path: Path, name: str) -> dict[str, Any]:
    """The schedule's persisted entry, once the runner has one (its slot began to wait)."""
    return await wait_until(lambda: state_of(tmp_path).get("schedules", {}).get(name),
                            timeout=WAIT, what=f"schedule {name} waiting")


async def next_run(events) -> ScheduleRun:
    async with asyncio.timeout(WAIT):
        event = await events.get()
    assert isinstance(event.body, ScheduleRun), event
    return event.body


async def test_restart_when_empty_waits_while_users_are_in_and_runs_when_the_last_leaves(scheduled, tmp_path):
    """At the slot two users are in: the restart waits (and the wait is persisted); the
    users are kicked; at the next check the headless restarts, one schedule_run says so,
    and the audit log has it."""
    clock = ManualClock(SLOT - 5)
    audit = Sink()
    entry = ScheduleConfig(name="nightly", servers=("eu-*",), every="1h", action="restart",
                           when="empty", max_wait="2h")
    agent, gateway_bus, events = await scheduled(entry, clock=clock, audit=audit)
    server = agent.servers["eu-1"]
    clock.set(SLOT)
    assert await waiting(tmp_path, "nightly") == {"waiting": SLOT}
    assert server.runtime.restarts == 0 and events.get_nowait() is None

    for user in ("Mira", "Tobias"):  # both in Harbor Lounge
        reply = await gateway_bus.request(BusRequest(server="eu-1", body=RunCommand(command=f"kick {user}", world="Harbor Lounge"), timeout=15))
        assert isinstance(reply.body, CommandResponse)
    await wait_until(lambda: server.worlds and people_in(server.worlds) == 0, timeout=WAIT,
                     what="the worlds poll seeing nobody")
    clock.advance(CHECK_INTERVAL)
    run = await next_run(events)
    assert (run.server, run.schedule, run.action, run.slot, run.outcome) == ("eu-1", "nightly", "restart", SLOT, "ok")
    assert "the server is empty" in run.detail
    assert server.runtime.restarts == 1
    assert state_of(tmp_path)["schedules"]["nightly"] == {"done": SLOT}
    [record] = [r for r in audit.records if r["who"].startswith("schedule:")]
    assert (record["who"], record["server"], record["command"], record["outcome"]) == (
        "schedule:nightly", "eu-1", "schedule restart", "ok")
    assert record["slot"] == "2026-11-30T04:00:00Z"


@pytest.mark.parametrize(("on_timeout", "outcome", "restarts"), [("run", "ok", 1), ("skip", "skipped", 0)])
async def test_max_wait_runs_or_skips_the_slot_while_users_stay(scheduled, tmp_path, on_timeout, outcome, restarts):
    """Users never leave: at max_wait the restart runs anyway, or the slot is skipped;
    either way one schedule_run says so, naming how many were still in, and the runs
    metric counts it under its outcome."""
    clock = ManualClock(SLOT - 5)
    entry = ScheduleConfig(name="nightly", servers=("eu-1",), every="1h", action="restart",
                           when="empty", max_wait="30m", on_timeout=on_timeout)
    agent, _, events = await scheduled(entry, clock=clock)
    server = agent.servers["eu-1"]
    await wait_until(lambda: server.worlds, timeout=WAIT, what="a worlds poll")
    clock.set(SLOT)
    await waiting(tmp_path, "nightly")
    clock.set(SLOT + 1800)
    run = await next_run(events)
    assert (run.slot, run.outcome) == (SLOT, outcome)
    assert "max_wait passed, 2 users still in" in run.detail
    assert server.runtime.restarts == restarts
    counted = agent.metrics.registry.get_sample_value(
        "resofleet_schedule_runs_total", {"server": "eu-1", "schedule": "nightly", "outcome": outcome})
    assert counted == 1


async def test_save_saves_every_world_and_a_stopped_headless_makes_it_fail(scheduled):
    """``save`` saves both worlds of the scenario (``ok``); with the headless stopped, the
    next slot's save is ``failed`` and says why."""
    clock = ManualClock(SLOT - 5)
    entry = ScheduleConfig(name="hourly-save", servers=("eu-1",), every="1h", action="save")
    agent, _, events = await scheduled(entry, clock=clock)
    server = agent.servers["eu-1"]
    clock.set(SLOT)
    run = await next_run(events)
    assert (run.outcome, run.detail) == ("ok", "saved 2 worlds")
    await server.runtime.stop()
    clock.set(SLOT + 3600)
    run = await next_run(events)
    assert (run.slot, run.outcome) == (SLOT + 3600, "failed")
    assert "not running" in run.detail


async def test_a_slot_waiting_when_the_agent_stops_is_waited_for_after_its_restart(scheduled, tmp_path):
    """The agent stops while a restart waits for the server to empty; the next agent (same
    state directory, ten minutes later) waits for that slot again, and runs it once the
    users are gone: the slot is not lost, and not a new one."""
    entry = ScheduleConfig(name="nightly", servers=("eu-*",), every="1h", action="restart",
                           when="empty", max_wait="2h")
    clock = ManualClock(SLOT - 5)
    first, _, events = await scheduled(entry, clock=clock)
    clock.set(SLOT)
    assert await waiting(tmp_path, "nightly") == {"waiting": SLOT}
    await first.close()

    clock = ManualClock(SLOT + 600)
    agent, gateway_bus, events = await scheduled(entry, clock=clock)
    server = agent.servers["eu-1"]
    for user in ("Mira", "Tobias"):
        body = RunCommand(command=f"kick {user}", world="Harbor Lounge")
        assert isinstance((await gateway_bus.request(BusRequest(server="eu-1", body=body, timeout=15))).body,
                          CommandResponse)
    await wait_until(lambda: server.worlds and people_in(server.worlds) == 0, timeout=WAIT,
                     what="the worlds poll seeing nobody")
    clock.advance(CHECK_INTERVAL)
    run = await next_run(events)
    assert (run.slot, run.outcome, run.detail) == (SLOT, "ok", "the server is empty; restarted (running)")
    assert state_of(tmp_path)["schedules"]["nightly"] == {"done": SLOT}
