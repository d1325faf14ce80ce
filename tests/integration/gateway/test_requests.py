"""Requests through the gateway and the bus, answered by handlers served on the bus.

These pin the gateway's side of the request path (ids, concurrency, selection, timeouts)
with handlers that answer exactly as the agent's contract says; the end-to-end tests in
tests/e2e run the same paths against real agents driving emulated consoles.
"""

from __future__ import annotations

import asyncio

import pytest

from resofleet.contracts import (
    Announce,
    BusReply,
    BusRequest,
    CommandResponse,
    Error,
    ErrorCode,
    RunCommand,
    ServerPresence,
)
from resofleet.gateway import Timeouts
from resofleet.gateway.app import DRAIN_TIMEOUT
from tests.support.timing import AT_ONCE

from .client import WAIT, Client, wait_until


def answering(server: str, delays: dict[str, float] | None = None):
    """A handler that answers `command` with `<server>:<command>`, after a per-command delay."""
    shared_reply: dict[str, BusReply] = {}

    async def handler(request: BusRequest, deadline: float) -> BusReply:
        assert isinstance(request.body, RunCommand)
        command = request.body.command
        await asyncio.sleep((delays or {}).get(command, 0))
        if command == "fail":
            return BusReply(body=Error(message="The console said no.", code=ErrorCode.INTERNAL, server=server))
        # The same reply object every time: the gateway must never mutate it.
        return shared_reply.setdefault(
            command, BusReply(body=CommandResponse(command=command, output=f"{server}:{command}", server=server))
        )

    return handler


async def announce(bus, agent: str, *servers: str, interval: float = 30.0) -> None:
    await bus.broadcast(
        Announce(agent=agent, host=f"{agent}.example", interval=interval,
                 servers=[ServerPresence(server=s, status="running") for s in servers])
    )


async def test_replies_carry_the_request_id_and_come_back_out_of_order(start_gateway, bus_factory):
    """Requests run concurrently: a fast one overtakes a slow one; each reply has its id."""
    gateway = await start_gateway()
    agent_bus = await bus_factory()
    await agent_bus.serve("slow", answering("slow", {"save": 0.5}))
    await agent_bus.serve("quick", answering("quick"))
    async with await Client.connect(gateway.url) as client:
        await client.send({"type": "command", "command": "save", "server": "slow", "id": "A"})
        await client.send({"type": "command", "command": "users", "server": "quick", "id": "B"})
        await client.send({"type": "ping", "id": "C"})
        order = [await client.recv() for _ in range(3)]
    assert [m["id"] for m in order] == ["C", "B", "A"]
    assert order[1] == {
        "type": "command_response", "command": "users", "output": "quick:users", "server": "quick", "id": "B",
        "outcome": "executed",  # the handler states none: the gateway knows a response ran
    }
    assert order[2]["output"] == "slow:save"


async def test_shared_reply_objects_are_not_mutated(start_gateway, bus_factory):
    """Two clients get the same reply object with their own ids (LocalBus shares objects)."""
    gateway = await start_gateway()
    agent_bus = await bus_factory()
    await agent_bus.serve("alpha", answering("alpha"))
    async with await Client.connect(gateway.url) as one, await Client.connect(gateway.url) as two:
        first = await one.request({"type": "command", "command": "users", "server": "alpha", "id": 1})
        second = await two.request({"type": "command", "command": "users", "server": "alpha"})
        third = await one.request({"type": "command", "command": "users", "server": "alpha", "id": 3})
    assert (first["id"], second["id"], third["id"]) == (1, "r1", 3)


async def test_agent_errors_are_forwarded_with_the_id(start_gateway, bus_factory):
    """An error the agent answers reaches the client as it is, with the request id (and,
    since this handler states no outcome, ``unknown``: the console may have taken the line)."""
    gateway = await start_gateway()
    agent_bus = await bus_factory()
    await agent_bus.serve("alpha", answering("alpha"))
    async with await Client.connect(gateway.url) as client:
        reply = await client.request({"type": "command", "command": "fail", "server": "alpha", "id": 5})
    assert reply == {
        "type": "error", "message": "The console said no.", "code": "internal", "id": 5, "server": "alpha",
        "outcome": "unknown",
    }


async def test_a_handler_bug_reaches_the_client_as_internal_with_only_a_reference(start_gateway, bus_factory, caplog):
    """A handler that raises gives the client `internal`, its id and a reference, and not a
    word of the exception; the reference finds the traceback in the log."""
    gateway = await start_gateway()
    agent_bus = await bus_factory()

    async def broken(request: BusRequest, deadline: float) -> BusReply:
        raise RuntimeError("secret path /etc/x")

    await agent_bus.serve("buggy", broken)
    async with await Client.connect(gateway.url) as client:
        reply = await client.request({"type": "command", "command": "users", "server": "buggy", "id": 6})
    assert (reply["type"], reply["code"], reply["id"], reply["server"]) == ("error", "internal", 6, "buggy")
    assert "secret" not in reply["message"] and "/etc/x" not in reply["message"]
    reference = reply["message"].rsplit("(reference ", 1)[1].removesuffix(").")
    [logged] = [r for r in caplog.records if reference in r.getMessage()]
    assert "secret path /etc/x" in str(logged.exc_info[1])


async def test_no_reply_before_the_deadline_is_timeout(start_gateway, bus_factory):
    """A server that does not answer in time gives `timeout` at the request's deadline."""
    gateway = await start_gateway(timeouts=Timeouts(command=0.3))
    agent_bus = await bus_factory()
    await agent_bus.serve("stuck", answering("stuck", {"users": 30}))
    async with await Client.connect(gateway.url) as client:
        started = asyncio.get_running_loop().time()
        reply = await client.request({"type": "command", "command": "users", "server": "stuck", "id": 1})
        elapsed = asyncio.get_running_loop().time() - started
        assert (reply["type"], reply["code"], reply["server"], reply["id"]) == ("error", "timeout", "stuck", 1)
        assert 0.3 <= elapsed < 2.0
        assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_the_only_server_is_the_default_and_several_are_ambiguous(start_gateway, bus_factory):
    """Without `server`: the single announced server; with two, ambiguous_server listing both."""
    gateway = await start_gateway()
    agent_bus = await bus_factory()
    await agent_bus.serve("alpha", answering("alpha"))
    await agent_bus.serve("beta", answering("beta"))
    await announce(agent_bus, "a1", "alpha")
    await wait_until(lambda: gateway.registry.online() == ["alpha"], what="alpha announced")
    async with await Client.connect(gateway.url) as client:
        reply = await client.request({"type": "command", "command": "users"})
        assert (reply["type"], reply["server"], reply["output"]) == ("command_response", "alpha", "alpha:users")
        await announce(agent_bus, "a2", "beta")
        await wait_until(lambda: gateway.registry.online() == ["alpha", "beta"], what="beta announced")
        reply = await client.request({"type": "command", "command": "users", "id": 4})
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "ambiguous_server", 4)
        assert "(alpha, beta)" in reply["message"]
        reply = await client.request({"type": "command", "command": "users", "server": "beta"})
        assert reply["output"] == "beta:users"


async def test_a_vanished_agent_is_reported_offline(start_gateway, bus_factory):
    """Three missed announcements: get_servers says offline and it is no longer the default."""
    gateway = await start_gateway()
    agent_bus = await bus_factory()
    await announce(agent_bus, "a1", "alpha", interval=0.1)
    async with await Client.connect(gateway.url) as client:
        async def listed() -> list:
            return (await client.request({"type": "get_servers"}))["servers"]

        [info] = await wait_until(listed, what="alpha listed")
        assert (info["server"], info["host"], info["online"], info["status"]) == ("alpha", "a1.example", True, "running")
        [info] = await wait_until(
            lambda: _offline(listed()), timeout=5, what="alpha offline"
        )
        assert (info["online"], info["status"]) == (False, "offline")
        reply = await client.request({"type": "get_status"})
        assert reply["code"] == "server_offline"


async def test_a_partitioned_agent_is_offline_at_once_not_a_timeout(start_gateway, bus_factory):
    """Its queue still bound but its announcements stopped: server_offline at once."""
    gateway = await start_gateway()
    agent_bus = await bus_factory()
    await agent_bus.serve("cut", answering("cut", {"users": 60}))  # would never answer
    await announce(agent_bus, "a1", "cut", interval=0.1)
    await wait_until(lambda: gateway.registry.is_online("cut"), what="cut announced")
    await wait_until(lambda: "cut" in gateway.registry.offline(), what="cut missed three announcements")
    async with await Client.connect(gateway.url) as client:
        started = asyncio.get_running_loop().time()
        reply = await client.request({"type": "command", "command": "users", "server": "cut"})
        assert asyncio.get_running_loop().time() - started < AT_ONCE
    assert (reply["type"], reply["code"], reply["server"]) == ("error", "server_offline", "cut")
    assert "has not announced it" in reply["message"]


async def _offline(servers) -> list | None:
    servers = await servers
    return servers if servers and not servers[0]["online"] else None


async def test_in_flight_requests_are_bounded_per_connection(start_gateway, bus_factory):
    """Past max_in_flight the gateway stops reading that client until a reply frees a slot."""
    gateway = await start_gateway(max_in_flight=2)
    agent_bus = await bus_factory()
    release = asyncio.Event()
    seen: list[str] = []

    async def handler(request: BusRequest, deadline: float) -> BusReply:
        assert isinstance(request.body, RunCommand)
        seen.append(request.body.command)
        await release.wait()
        return BusReply(body=CommandResponse(command=request.body.command, output="", server="alpha"))

    await agent_bus.serve("alpha", handler, concurrency=10)
    async with await Client.connect(gateway.url) as client:
        for i in range(4):
            await client.send({"type": "command", "command": f"c{i}", "server": "alpha", "id": i})
        await client.send({"type": "ping", "id": "p"})
        await wait_until(lambda: len(seen) == 2, what="two requests in flight")
        # the third waits in the socket, the ping behind it: no pong while two are in flight
        with pytest.raises(TimeoutError):
            await client.recv(timeout=0.5)
        assert seen == ["c0", "c1"]
        release.set()
        ids = {(await client.recv())["id"] for _ in range(5)}
    assert ids == {0, 1, 2, 3, "p"}


async def test_shutdown_does_not_wait_for_requests_in_flight(start_gateway, bus_factory):
    """close() with requests stuck on a server (and more waiting for a slot) ends promptly."""
    gateway = await start_gateway(max_in_flight=1, timeouts=Timeouts(command=60))
    agent_bus = await bus_factory()
    reached = asyncio.Event()

    async def stuck(request: BusRequest, deadline: float) -> BusReply:
        reached.set()
        await asyncio.Event().wait()  # never answers; cancelled when the bus closes
        raise AssertionError("unreachable")

    await agent_bus.serve("stuck", stuck)
    async with await Client.connect(gateway.url) as client:
        for i in range(3):
            await client.send({"type": "command", "command": "users", "server": "stuck", "id": i})
        await asyncio.wait_for(reached.wait(), WAIT)
        started = asyncio.get_running_loop().time()
        await gateway.close()
        # the 60 s command is not waited for: close takes the time of a drain at most
        assert asyncio.get_running_loop().time() - started < DRAIN_TIMEOUT
        assert not gateway.sessions
