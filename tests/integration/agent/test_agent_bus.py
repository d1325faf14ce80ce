"""The agent over both buses, with the emulator as a real child process."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from resofleet.agent import Agent
from resofleet.agent.server import ManagedServer
from resofleet.contracts import (
    Announce,
    BansUpdate,
    BusRequest,
    CommandResponse,
    ContainerRequest,
    Error,
    OutputHistory,
    OutputRequest,
    RunCommand,
    StatusRequest,
    StatusUpdate,
    WorldsRequest,
    WorldsUpdate,
)
from resofleet.agent.settings import AgentSettings, ServerConfig

FAST = AgentSettings(name="test", status_interval=0.5, worlds_interval=0.5, bans_interval=0.5)


@pytest.fixture
async def fleet(bus_factory):
    agents: list[Agent] = []

    async def start(*servers: ServerConfig) -> tuple[Agent, object]:
        agent_bus, gateway_bus = await bus_factory(), await bus_factory()
        agent = Agent(agent_bus, servers=servers, settings=FAST, announce_interval=0.5)
        await agent.start()
        agents.append(agent)
        return agent, gateway_bus

    yield start
    for agent in agents:
        await agent.close()


def req(server: str, body, timeout: float = 20.0) -> BusRequest:
    return BusRequest(server=server, body=body, timeout=timeout)


async def test_command_reply_and_structured_bans(fleet):
    """A console command comes back as command_response; listbans as structured bans."""
    _, gw = await fleet(ServerConfig(id="one", runtime="emulator", scenario="default"))
    reply = await gw.request(req("one", RunCommand(command="users")))
    assert isinstance(reply.body, CommandResponse)
    assert reply.body.server == "one"
    assert reply.body.output.splitlines()[0].startswith("HarborHost\tID: U-1a2B3c4D5e\t")
    bans = await gw.request(req("one", RunCommand(command="listbans")))
    assert isinstance(bans.body, BansUpdate)
    assert [(b.username, b.userId, b.machineIds) for b in bans.body.bans] == [
        ("SpamBot", "U-SpamBot01", ["4q8w0e2r6t1y9u3i5o7p"])
    ]


async def test_get_worlds_matches_the_busy_scenario(fleet):
    """worlds_update lists every world of the busy scenario with its users, in order."""
    import tomllib
    from pathlib import Path

    scenario = tomllib.loads(Path("emulator/scenarios/busy.toml").read_text())
    _, gw = await fleet(ServerConfig(id="busy", runtime="emulator", scenario="busy", emulator_args=("--activity-interval", "0", "--noise-rate", "0.3")))
    reply = await gw.request(req("busy", WorldsRequest()))
    assert isinstance(reply.body, WorldsUpdate)
    worlds = reply.body.output
    assert [w.name for w in worlds] == [w["name"] for w in scenario["worlds"]]
    for world, expected in zip(worlds, scenario["worlds"]):
        names = [u.username for u in world.users_list]
        assert names[1:] == [u["username"] for u in expected.get("users", [])]
        assert world.users == len(names) and world.maxUsers == expected["max_users"]
        assert world.accessLevel == expected["access_level"]
        assert world.users_list[0].present is False  # the headless's own account


async def test_world_field_runs_in_that_world_and_restores_focus(fleet):
    """command with world runs there, and the user's focus is put back."""
    _, gw = await fleet(ServerConfig(id="one", runtime="emulator", scenario="default"))
    reply = await gw.request(req("one", RunCommand(command="users", world=0)))
    assert "U-Mira" in reply.body.output
    status = await gw.request(req("one", RunCommand(command="status")))
    assert status.body.output.splitlines()[0] == "Name: Night Market"


async def test_an_unknown_world_on_the_bus_runs_nothing(fleet, bus_factory):
    """A command for a world the console does not list, sent straight onto the bus, is
    `unknown_world`: nothing is streamed, the focus and every world's settings stay."""
    watcher = await bus_factory()
    sub = await watcher.subscribe(["one.output"])
    _, gw = await fleet(ServerConfig(id="one", runtime="emulator", scenario="default"))
    for world in ("No Such World", 2, "5"):
        reply = await gw.request(req("one", RunCommand(command="maxUsers 3", world=world)))
        assert isinstance(reply.body, Error) and reply.body.code == "unknown_world", reply.body
        assert reply.body.server == "one" and "Nothing was run" in reply.body.message
    await gw.request(req("one", RunCommand(command="version")))
    streamed: list[str] = []
    async with asyncio.timeout(10):
        while not any(line.endswith(">version") for line in streamed):
            streamed += [line.output for line in (await sub.get()).body.lines]
    assert not [line for line in streamed if "maxUsers" in line or "focus" in line], streamed
    worlds = await gw.request(req("one", WorldsRequest()))
    assert [(w.name, w.maxUsers) for w in worlds.body.output] == [("Harbor Lounge", 16), ("Night Market", 4)]
    status = await gw.request(req("one", RunCommand(command="status")))
    assert status.body.output.splitlines()[0] == "Name: Night Market"


async def test_status_is_live_numbers(fleet):
    """get_status answers the emulator process's own CPU and memory, as numbers."""
    _, gw = await fleet(ServerConfig(id="one", runtime="emulator"))
    reply = await gw.request(req("one", StatusRequest()))
    assert isinstance(reply.body, StatusUpdate)
    status = reply.body.status
    assert status.status == "running" and status.memory_used_bytes > 1_000_000
    assert isinstance(status.cpu_usage, float) and status.cpu_usage >= 0
    # percent of the host's memory, one decimal (a small emulator rounds to a tiny number)
    assert status.memory_percent == round(100 * status.memory_used_bytes / status.memory_total_bytes, 1)
    assert status.memory_used.endswith("MB")


async def test_events_published_on_change(fleet, bus_factory):
    """A ban changes the bans and worlds: both events are published, with the new state."""
    watcher = await bus_factory()
    sub = await watcher.subscribe(["one.*"])
    _, gw = await fleet(ServerConfig(id="one", runtime="emulator"))
    await gw.request(req("one", RunCommand(command="focus 0")))
    await gw.request(req("one", RunCommand(command="ban Tobias")))
    banned = tobias_gone = False
    async with asyncio.timeout(15):
        while not (banned and tobias_gone):
            event = await sub.get()
            if event.kind == "bans":
                banned = any(b.username == "Tobias" for b in event.body.bans)
            elif event.kind == "worlds":
                harbor = event.body.output[0]
                tobias_gone = "Tobias" not in [u.username for u in harbor.users_list]


async def test_output_streamed_and_kept_for_get_output(fleet, bus_factory):
    """A user command's echo and result are streamed, and get_output returns them by seq."""
    watcher = await bus_factory()
    sub = await watcher.subscribe(["one.output"])
    _, gw = await fleet(ServerConfig(id="one", runtime="emulator"))
    await gw.request(req("one", RunCommand(command="listbans")))
    seen: list[str] = []
    async with asyncio.timeout(10):
        while not any(l.startswith("[0]\tUsername: SpamBot") for l in seen):
            event = await sub.get()
            seen += [line.output for line in event.body.lines]
    assert "Night Market>listbans" in seen
    history = await gw.request(req("one", OutputRequest(since=0)))
    assert isinstance(history.body, OutputHistory)
    assert "Night Market>listbans" in [l.output for l in history.body.lines]
    seqs = [l.seq for l in history.body.lines]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_presence_announces_servers(fleet, bus_factory):
    """The agent announces its servers: running once the console is synchronised, with
    the worlds counted once the first worlds poll has answered (an announcement may fall
    between the two)."""
    watcher = await bus_factory()
    presence = await watcher.presence()
    await fleet(ServerConfig(id="one", runtime="emulator"))
    statuses: list[str] = []
    async with asyncio.timeout(10):
        while True:
            msg = await presence.get()
            if not isinstance(msg, Announce) or not msg.servers:
                continue
            assert msg.servers[0].server == "one"
            statuses.append(msg.servers[0].status)
            if msg.servers[0].worlds == 2:
                break
    assert statuses[-1] == "running"
    assert set(statuses) <= {"starting", "running"}


async def test_control_characters_never_reach_the_console(fleet):
    """A command with a newline sent straight onto the bus is refused by the agent too."""
    _, gw = await fleet(ServerConfig(id="one", runtime="emulator"))
    reply = await gw.request(req("one", RunCommand(command="worlds\nshutdown")))
    assert isinstance(reply.body, Error) and reply.body.code == "bad_request"
    alive = await gw.request(req("one", RunCommand(command="worlds")))
    assert "Harbor Lounge" in alive.body.output


async def test_a_failed_runtime_action_tells_the_client_nothing_of_the_host(bus_factory, caplog):
    """A container start that fails answers `internal` with the agent's own sentence and a
    reference; what failed on the host (paths, OS errors) is only in the agent's log."""
    binary = "/nonexistent/resofleet-headless-binary"
    agent_bus, gw = await bus_factory(), await bus_factory()
    server = ManagedServer(ServerConfig(id="broken", runtime="process", command=(binary,)), agent_bus, FAST)
    served = await agent_bus.serve("broken", server.handle)
    try:
        stopped = await gw.request(req("broken", RunCommand(command="users")))
        assert isinstance(stopped.body, Error) and stopped.body.code == "server_offline"
        assert "start it with a container start action" in stopped.body.message
        with caplog.at_level(logging.INFO):
            reply = await gw.request(req("broken", ContainerRequest(action="start")))
    finally:
        await served.close()
        await server.close()
    assert isinstance(reply.body, Error) and (reply.body.code, reply.body.server) == ("internal", "broken")
    assert "nonexistent" not in reply.body.message and "Errno" not in reply.body.message
    [reference] = re.findall(r"\(reference ([0-9a-f]+)\)\.$", reply.body.message)
    assert any(reference in r.getMessage() and "did not start" in r.getMessage() for r in caplog.records)
    assert any(binary in r.getMessage() for r in caplog.records)  # the spawn failure itself
