"""The agent's audit log over both buses, with the emulator as a real child process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from resofleet.agent import Agent
from resofleet.bus import RequestTimeout
from resofleet.contracts import (
    BusRequest,
    CommandResponse,
    ContainerRequest,
    ContainerResponse,
    Error,
    OutputRequest,
    RunCommand,
    StatusRequest,
    WorldsRequest,
)
from resofleet.audit import RECORD_KEYS, AuditLog
from resofleet.agent.settings import AgentSettings, ServerConfig

FAST = AgentSettings(name="test", status_interval=0.5, worlds_interval=0.5, bans_interval=0.5)
#: Seconds a test waits for an event it expects.
WAIT = 20.0
WHO = {"sub": "alice", "role": "moderator", "client": "10.0.0.5"}


def req(server: str, body, timeout: float = WAIT) -> BusRequest:
    return BusRequest(server=server, body=body, timeout=timeout, **WHO)


def records(audit: AuditLog) -> list[dict]:
    if not audit.path.exists():
        return []
    return [json.loads(line) for line in audit.path.read_bytes().splitlines()]


@pytest.fixture
async def audited(bus_factory, tmp_path: Path):
    """Start an agent serving one emulated server with an audit log; yields (gateway bus, audit)."""
    made: list[tuple[Agent, AuditLog]] = []

    async def start(*emulator_args: str):
        audit = AuditLog(tmp_path / "agent.jsonl", source="agent")
        await audit.start()
        agent_bus, gateway_bus = await bus_factory(), await bus_factory()
        config = ServerConfig(id="one", runtime="emulator", emulator_args=emulator_args)
        agent = Agent(agent_bus, servers=(config,), settings=FAST, announce_interval=0.5, audit=audit)
        made.append((agent, audit))
        await agent.start()
        return agent, gateway_bus, audit

    yield start
    for agent, audit in made:
        await agent.close()
        await audit.close()


async def test_a_command_is_recorded_once_with_who_and_duration(audited):
    """A client's console command gives one record: who, role, client, server, command, ok, duration."""
    _, gw, audit = await audited()
    reply = await gw.request(req("one", RunCommand(command="users")))
    assert isinstance(reply.body, CommandResponse)
    await audit.flush()
    [record] = records(audit)
    assert list(record)[: len(RECORD_KEYS)] == list(RECORD_KEYS)
    assert {k: record[k] for k in ("source", "who", "role", "client", "server", "command", "outcome")} == {
        "source": "agent", "who": "alice", "role": "moderator", "client": "10.0.0.5",
        "server": "one", "command": "users", "outcome": "ok",
    }
    assert isinstance(record["duration"], float) and 0 <= record["duration"] < WAIT
    assert record["duration"] == round(record["duration"], 3)


async def test_world_is_recorded(audited):
    """A command run in another world records that world."""
    _, gw, audit = await audited()
    await gw.request(req("one", RunCommand(command="users", world=0)))
    await audit.flush()
    [record] = records(audit)
    assert (record["command"], record["world"], record["outcome"]) == ("users", 0, "ok")


async def test_a_refused_command_is_recorded_with_its_error_code(audited):
    """A command the agent refuses (a newline inside) is recorded with bad_request and the reason."""
    _, gw, audit = await audited()
    reply = await gw.request(req("one", RunCommand(command="worlds\nshutdown")))
    assert isinstance(reply.body, Error)
    await audit.flush()
    [record] = records(audit)
    assert (record["command"], record["outcome"]) == ("worlds\nshutdown", "bad_request")
    assert record["detail"] == reply.body.message


async def test_a_container_action_is_recorded(audited):
    """container restart is recorded as "container restart", ok, with the status after it."""
    _, gw, audit = await audited()
    reply = await gw.request(req("one", ContainerRequest(action="restart"), timeout=60))
    assert isinstance(reply.body, ContainerResponse)
    await audit.flush()
    [record] = records(audit)
    assert (record["command"], record["outcome"], record["status"]) == ("container restart", "ok", "running")
    assert (record["who"], record["role"], record["client"]) == ("alice", "moderator", "10.0.0.5")
    assert record["duration"] > 0


async def test_polls_and_reads_are_not_recorded(audited, bus_factory):
    """The agent's own polls and get_status/get_worlds/get_output leave nothing in the audit log."""
    watcher = await bus_factory()
    events = await watcher.subscribe(["one.worlds", "one.bans"])
    _, gw, audit = await audited()
    seen: set[str] = set()
    async with asyncio.timeout(WAIT):  # a worlds poll and a bans poll have run
        while seen != {"worlds", "bans"}:
            seen.add((await events.get()).kind)
    await gw.request(req("one", StatusRequest()))
    await gw.request(req("one", WorldsRequest()))
    await gw.request(req("one", OutputRequest(since=0)))
    await gw.request(req("one", RunCommand(command="version")))
    await audit.flush()
    assert [r["command"] for r in records(audit)] == ["version"]


async def test_a_request_that_timed_out_before_running_is_recorded(audited, bus_factory):
    """A command whose time ran out while the console was busy is never run, and recorded as timeout."""
    watcher = await bus_factory()
    output = await watcher.subscribe(["one.output"])
    _, gw, audit = await audited("--tty", "--latency", "save=3")
    await gw.request(req("one", RunCommand(command="version")))  # the console is ready
    save = asyncio.create_task(gw.request(req("one", RunCommand(command="save"))))
    async with asyncio.timeout(WAIT):  # the console echoed save: it is busy for 3 s
        while True:
            event = await output.get()
            if any(line.output.endswith(">save") for line in event.body.lines):
                break
    with pytest.raises(RequestTimeout):
        await gw.request(req("one", RunCommand(command="kick Nobody"), timeout=0.5))
    assert isinstance((await save).body, CommandResponse)
    await audit.flush()
    by_command = {r["command"]: r for r in records(audit)}
    assert by_command["kick Nobody"]["outcome"] == "timeout"
    assert by_command["kick Nobody"]["duration"] < 3
    assert (by_command["save"]["outcome"], by_command["save"]["duration"] >= 3) == ("ok", True)
