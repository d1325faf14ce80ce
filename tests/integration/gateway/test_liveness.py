"""Liveness over both buses: a request in flight fails with ServerLost as soon as nobody
serves its server any more, probes only watch slow requests, and a request cancelled by
its caller stays cancelled. And the registry's lapses, pushed as they happen."""

from __future__ import annotations

import asyncio

import pytest

from resofleet.bus import Bus, LocalBus
from resofleet.contracts import (
    Announce,
    BusReply,
    BusRequest,
    CommandResponse,
    OutputHistory,
    OutputRequest,
    RunCommand,
    ServerPresence,
)
from resofleet.gateway.errors import ServerLost
from resofleet.gateway.liveness import PROBE_INTERVAL, Liveness
from resofleet.gateway.registry import Registry
from tests.support.timing import AT_ONCE

#: Seconds between announcements in the registry's tests: a lapse in 0.3 s.
TEST_INTERVAL = 0.1


def cmd(server: str, text: str, timeout: float = 30.0) -> BusRequest:
    return BusRequest(server=server, body=RunCommand(command=text), timeout=timeout)


class Agent:
    """A handler that records what it was asked; commands wait for ``release``, probes
    are answered at once."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.probed = asyncio.Event()

    async def __call__(self, request: BusRequest, deadline: float) -> BusReply:
        if isinstance(request.body, OutputRequest):
            self.asked.append("probe")
            self.probed.set()
            return BusReply(body=OutputHistory(server=request.server, epoch="e", lines=[], complete=True))
        assert isinstance(request.body, RunCommand)
        self.asked.append(request.body.command)
        self.reached.set()
        await self.release.wait()
        return BusReply(body=CommandResponse(command=request.body.command, output="done", server=request.server))


async def watching(bus: Bus) -> tuple[Liveness, list[str]]:
    liveness = Liveness(bus, Registry(bus))
    lost: list[str] = []
    liveness.on_lost = lost.append
    return liveness, lost


async def test_a_request_in_flight_fails_as_soon_as_its_server_is_no_longer_served(bus_factory):
    """The agent stops serving while it holds a request: ServerLost at once, not at 30 s."""
    agent_bus, gateway_bus = await bus_factory(), await bus_factory()
    agent = Agent()
    served = await agent_bus.serve("s", agent)
    liveness, lost = await watching(gateway_bus)
    try:
        waiting = asyncio.create_task(liveness.request(cmd("s", "save")))
        await asyncio.wait_for(agent.reached.wait(), AT_ONCE)
        await served.close()
        with pytest.raises(ServerLost) as raised:
            await asyncio.wait_for(waiting, AT_ONCE)
        assert raised.value.server == "s" and lost == ["s"]
    finally:
        agent.release.set()
        await liveness.close()


async def test_a_slow_request_is_probed_and_still_answered(bus_factory):
    """While a request is slow its server is probed; a live server's probes prove nothing
    and the request gets its reply. A quick request is never probed."""
    agent_bus, gateway_bus = await bus_factory(), await bus_factory()
    agent = Agent()
    await agent_bus.serve("s", agent, concurrency=2)
    liveness, lost = await watching(gateway_bus)
    try:
        slow = asyncio.create_task(liveness.request(cmd("s", "save")))
        await asyncio.wait_for(agent.probed.wait(), 10 * PROBE_INTERVAL)  # probes may expire unread
        agent.release.set()
        reply = await asyncio.wait_for(slow, AT_ONCE)
        assert reply.body.output == "done" and lost == [] and agent.asked[0] == "save"
        agent.asked.clear()
        await liveness.request(cmd("s", "version"))  # answered at once: never probed
        assert agent.asked == ["version"]
    finally:
        await liveness.close()


async def test_a_request_cancelled_by_its_caller_stays_cancelled(bus_factory):
    """A client that leaves cancels its request: a loss found at the same time does not
    turn that into ServerLost; the others waiting are failed."""
    agent_bus, gateway_bus = await bus_factory(), await bus_factory()
    agent = Agent()
    await agent_bus.serve("s", agent, concurrency=2)
    liveness, _ = await watching(gateway_bus)
    try:
        left = asyncio.create_task(liveness.request(cmd("s", "save")))
        other = asyncio.create_task(liveness.request(cmd("s", "users")))
        await asyncio.wait_for(agent.reached.wait(), AT_ONCE)
        left.cancel()
        liveness.lose("s", "a test says so")
        with pytest.raises(asyncio.CancelledError):
            await left
        with pytest.raises(ServerLost):
            await asyncio.wait_for(other, AT_ONCE)
    finally:
        agent.release.set()
        await liveness.close()


def announce(agent: str, *servers: str, interval: float) -> Announce:
    return Announce(
        agent=agent, host=f"{agent}-host", interval=interval,
        servers=[ServerPresence(server=s, status="running") for s in servers],
    )


async def started_bus() -> LocalBus:
    bus = LocalBus()
    await bus.start()
    return bus


async def test_a_lapse_is_pushed_the_moment_it_happens():
    """With a running loop, on_offline is called when three announcements are missed,
    without anyone reading the registry; announcements that keep coming keep it online."""
    registry = Registry(await started_bus(), gateway="gw-test")
    went: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    registry.on_offline = lambda server, how: went.put_nowait((server, how))
    interval = TEST_INTERVAL
    try:
        registry.handle(announce("a1", "kept", "left", interval=interval))
        for _ in range(5):  # "kept" announced for 5 intervals, "left" never again
            await asyncio.sleep(interval)
            registry.handle(announce("a2", "kept", interval=interval))
        server, how = await asyncio.wait_for(went.get(), 1.0)
        assert (server, went.empty()) == ("left", True)
        assert how.startswith("its agent has not announced it for")
        assert registry.online() == ["kept"]
    finally:
        await registry.close()


async def test_a_lapse_while_the_gateways_own_link_is_down_waits_for_the_link():
    """Silence heard while the gateway's bus is down is the gateway's: the lapse is
    reported once the link is back (if the server is still silent)."""
    bus = LocalBus()  # not started: not connected
    registry = Registry(bus, gateway="gw-test")
    went: asyncio.Queue[str] = asyncio.Queue()
    registry.on_offline = lambda server, how: went.put_nowait(server)
    interval = TEST_INTERVAL
    try:
        registry.handle(announce("a1", "s1", interval=interval))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(went.get(), 6 * interval)
        await bus.start()
        assert await asyncio.wait_for(went.get(), 1.0) == "s1"
    finally:
        await registry.close()
