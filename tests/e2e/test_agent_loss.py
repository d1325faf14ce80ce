"""An agent lost while it holds requests: they are answered at once, not at their timeout,
with ``server_lost`` (the command may or may not have run), and every client watching the
server is told (``status_update`` offline, ``servers_update``). Real gateways, agents in
their own processes over RabbitMQ, and the in-process equivalent: an agent closed."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from resofleet.contracts import Role
from resofleet.gateway.security import Security
from resofleet.gateway.tokens import Keyring, new_secret
from tests.integration.gateway.client import Client, RecordingClient
from tests.support.timing import AT_ONCE

from .agent_process import AgentProcess
from .conftest import TEST_ANNOUNCE_INTERVAL, emulated, servers_online

#: Commands in flight when the agent goes: one at the console, three waiting for it at the
#: agent, the rest in the server's queue.
IN_FLIGHT = 20
#: Seconds within which every one must be answered once the agent is killed: a `save` here
#: would take 30 s and its timeout is 65 s; the gateway documents about half a second.
ANSWERED_WITHIN = 1.0
#: The emulator: echoes what it reads (so a test sees the console took the first command),
#: and takes 30 s over a save.
SLOW_SAVES = ("--tty", "--latency", "save=30")


def offline_status(server: str):
    return lambda m: m["type"] == "status_update" and m["server"] == server and m["status"]["status"] == "offline"


def listed(server: str, online: bool):
    return lambda m: m["type"] == "servers_update" and "id" not in m and any(
        s["server"] == server and s["online"] is online for s in m["servers"]
    )


async def saves_in_flight(client: Client, server: str) -> None:
    """Send IN_FLIGHT saves (ids 0..) and return once the console has read the first."""
    for i in range(IN_FLIGHT):
        await client.send({"type": "command", "command": "save", "server": server, "id": i})
    await client.expect(lambda m: m["type"] == "container_output" and m["output"].endswith(">save"))


async def replies(client: Client, timeout: float) -> dict[int, dict[str, Any]]:
    """The replies to saves_in_flight, by id, all within ``timeout``."""
    got: dict[int, dict[str, Any]] = {}
    async with asyncio.timeout(timeout):
        while len(got) < IN_FLIGHT:
            reply = await client.expect(lambda m: isinstance(m.get("id"), int) and m["id"] not in got)
            got[reply["id"]] = reply
    return got


@pytest.mark.parametrize("transport", ["amqp"], indirect=True)
async def test_requests_in_flight_to_a_killed_agent_are_answered_at_once(fleet, amqp_url, topology):
    """SIGKILL the agent with 20 saves in flight: all 20 are server_lost/unknown within a
    second; a watcher gets status_update offline and servers_update; get_servers and new
    requests say offline at once."""
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    watcher = await fleet.client(gateway.url, cls=RecordingClient)
    loop = asyncio.get_running_loop()
    async with AgentProcess.start(amqp_url, topology.prefix, "victim", *SLOW_SAVES) as process:
        await servers_online(watcher, ["victim"])
        await saves_in_flight(client, "victim")
        process.kill()
        killed = loop.time()
        got = await replies(client, timeout=10)
        answered = loop.time() - killed
        await watcher.seen(offline_status("victim"), timeout=10)
        await watcher.seen(listed("victim", online=False), timeout=10)
        told = loop.time() - killed
    assert {(r["type"], r["code"], r["outcome"], r["server"]) for r in got.values()} == {
        ("error", "server_lost", "unknown", "victim")
    }
    assert "may or may not have run" in got[0]["message"]
    assert answered < ANSWERED_WITHIN and told < ANSWERED_WITHIN, (answered, told)
    [info] = (await client.request({"type": "get_servers"}))["servers"]
    assert (info["server"], info["online"], info["status"]) == ("victim", False, "offline")
    started = loop.time()
    again = await client.request({"type": "command", "command": "save", "server": "victim"})
    assert (again["code"], again["outcome"]) == ("server_offline", "not_executed")
    assert loop.time() - started < AT_ONCE


@pytest.mark.parametrize("transport", ["amqp"], indirect=True)
async def test_requests_in_flight_to_a_frozen_agent_fail_when_its_announcements_stop(fleet, amqp_url, topology):
    """A frozen agent (SIGSTOP) keeps its broker connection and its queue, so only its
    silence tells: its requests are server_lost once three announcements are missed, long
    before their timeout."""
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    loop = asyncio.get_running_loop()
    async with AgentProcess.start(amqp_url, topology.prefix, "frozen", *SLOW_SAVES) as process:
        await servers_online(client, ["frozen"])
        await saves_in_flight(client, "frozen")
        os.killpg(process.process.pid, signal.SIGSTOP)
        try:
            frozen = loop.time()
            got = await replies(client, timeout=10)
            answered = loop.time() - frozen
        finally:
            os.killpg(process.process.pid, signal.SIGCONT)
    assert {(r["code"], r["outcome"]) for r in got.values()} == {("server_lost", "unknown")}
    assert answered < 3 * TEST_ANNOUNCE_INTERVAL + AT_ONCE, answered


@pytest.mark.parametrize("transport", ["local"], indirect=True)
async def test_requests_in_flight_to_a_closed_agent_are_answered_at_once(fleet):
    """In one process: the agent closes with 20 saves in flight. All are answered at once,
    server_lost/unknown (one the bus itself hands back as never taken may say
    server_offline/not_executed); watchers are told it went, and told again when it is back."""
    agent = await fleet.agent(emulated("victim", *SLOW_SAVES))
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    watcher = await fleet.client(gateway.url, cls=RecordingClient)
    loop = asyncio.get_running_loop()
    await servers_online(watcher, ["victim"])
    await saves_in_flight(client, "victim")
    closing = asyncio.create_task(agent.close())
    closed = loop.time()
    got = await replies(client, timeout=10)
    answered = loop.time() - closed
    await closing
    await watcher.seen(offline_status("victim"), timeout=10)
    await watcher.seen(listed("victim", online=False), timeout=10)
    outcomes = {(r["code"], r["outcome"]) for r in got.values()}
    assert outcomes <= {("server_lost", "unknown"), ("server_offline", "not_executed")}, outcomes
    assert (got[0]["code"], got[0]["outcome"]) == ("server_lost", "unknown")  # the console had it
    assert answered < ANSWERED_WITHIN, answered

    await fleet.agent(emulated("victim"))
    await watcher.seen(listed("victim", online=True), timeout=10)


async def test_news_of_a_lost_server_reaches_only_clients_that_may_see_it(fleet):
    """us-1's agent goes: a full-scope client is told; a client scoped to eu-* receives no
    byte about it, and is told when eu-1's agent goes (over both buses: here nothing is in
    flight, so the lapse of the announcements tells)."""
    keyring = Keyring((new_secret(),))
    eu_agent = await fleet.agent("eu-1")
    us_agent = await fleet.agent("us-1")
    gateway = await fleet.gateway(security=Security(keyring=keyring))
    clients = []
    for sub, servers in (("root", None), ("eu-admin", ["eu-*"])):
        token = keyring.issue(role=Role.ADMIN, sub=sub, servers=servers, ttl=600)
        clients.append(await fleet.client(
            gateway.url, cls=RecordingClient, additional_headers={"Authorization": f"Bearer {token}"},
        ))
    full, scoped = clients
    await servers_online(full, ["eu-1", "us-1"])
    await scoped.request({"type": "ping"})  # its session is up and watching

    await us_agent.close()
    await full.seen(offline_status("us-1"))
    await full.seen(listed("us-1", online=False))
    await eu_agent.close()
    await scoped.seen(offline_status("eu-1"))
    update = await scoped.seen(listed("eu-1", online=False))
    assert [s["server"] for s in update["servers"]] == ["eu-1"]
    assert not [f for f in scoped.frames if "us-1" in f]
