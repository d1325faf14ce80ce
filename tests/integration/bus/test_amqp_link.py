"""AmqpBus across a dropped broker connection (a TCP proxy cuts the link mid-flight)."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from resofleet.bus import AmqpBus, BusUnavailable, ServerOffline
from resofleet.contracts import BusReply, BusRequest, CommandResponse, RunCommand
from tests.support.tcp_proxy import TcpProxy
from tests.support.timing import AT_ONCE

from .test_bus import echo_handler, output_event


def via(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    creds = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{creds}@127.0.0.1:{proxy.port}"))


async def wait_until_connected(bus: AmqpBus, connected: bool = True, timeout: float = 15) -> None:
    """Wait for the bus's link to be up (or down), within ``timeout``."""
    async with asyncio.timeout(timeout):
        while bus.connected is not connected:
            await asyncio.sleep(0.01)


@pytest.fixture
async def buses(amqp_url, topology, proxy):
    made: list[AmqpBus] = []

    async def make(through_proxy: bool) -> AmqpBus:
        bus = AmqpBus(via(amqp_url, proxy) if through_proxy else amqp_url, topology=topology)
        await bus.start()
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.close()


async def test_pending_request_fails_the_moment_the_link_drops(buses, proxy):
    """A request in flight when the connection drops fails with BusUnavailable at once,
    not at its 30 s timeout."""
    agent, gateway = await buses(False), await buses(True)
    reached, release = asyncio.Event(), asyncio.Event()

    async def stuck(request: BusRequest, deadline: float) -> BusReply:
        reached.set()
        await release.wait()
        return BusReply(body=CommandResponse(command="", output="", server="s"))

    await agent.serve("s", stuck)
    pending = asyncio.create_task(
        gateway.request(BusRequest(server="s", body=RunCommand(command="save"), timeout=30))
    )
    await asyncio.wait_for(reached.wait(), 5)
    cut_at = time.perf_counter()
    proxy.cut()
    with pytest.raises(BusUnavailable):
        await asyncio.wait_for(pending, 5)
    assert time.perf_counter() - cut_at < AT_ONCE
    release.set()


async def test_gateway_side_serves_requests_again_after_reconnect(buses, proxy):
    """While the gateway's link is down a request is refused at once; after the link comes
    back, requests go through again."""
    agent, gateway = await buses(False), await buses(True)
    await agent.serve("s", echo_handler("s"))
    proxy.refuse = True  # the link stays down until the test lets it back
    proxy.cut()
    await wait_until_connected(gateway, False)
    started = time.perf_counter()
    with pytest.raises(BusUnavailable):
        await gateway.request(BusRequest(server="s", body=RunCommand(command="x"), timeout=5))
    assert time.perf_counter() - started < AT_ONCE
    proxy.refuse = False
    await wait_until_connected(gateway)
    reply = await gateway.request(BusRequest(server="s", body=RunCommand(command="x"), timeout=5))
    assert reply.body.output == "s:x"


async def test_agent_side_serves_and_publishes_again_after_reconnect(buses, proxy):
    """An agent whose link dropped serves its server and publishes events again once back."""
    agent, gateway = await buses(True), await buses(False)
    await agent.serve("s", echo_handler("s"))
    sub = await gateway.subscribe(["s.*"])
    proxy.refuse = True
    proxy.cut()
    await wait_until_connected(agent, False)
    proxy.refuse = False
    await wait_until_connected(agent)
    async with asyncio.timeout(15):
        while True:  # the robust connection restores the agent's queue right after reconnecting
            try:
                reply = await gateway.request(
                    BusRequest(server="s", body=RunCommand(command="y"), timeout=2)
                )
                break
            except ServerOffline:
                await asyncio.sleep(0.05)
    assert reply.body.output == "s:y"
    await agent.publish(output_event("s", 7))
    event = await asyncio.wait_for(sub.get(), 5)
    assert event.body.lines[0].seq == 7


async def test_a_binding_asked_for_while_the_link_is_down_is_made_once_it_is_back(buses, proxy):
    """A subscription rebound while its link is down (a client subscribing during an
    outage) receives the new server's events once the link is back, in a queue the
    reconnection made anew."""
    agent, gateway = await buses(False), await buses(True)
    sub = await gateway.subscribe(["a.*"])
    proxy.refuse = True
    proxy.cut()
    await wait_until_connected(gateway, False)
    with pytest.raises(BusUnavailable):
        await sub.bind("b.*")
    assert sub.patterns == {"a.*", "b.*"}  # still wanted
    proxy.refuse = False
    await wait_until_connected(gateway)

    async def next_event_of(server: str) -> int:
        while True:
            event = await sub.get()
            if event.server == server:
                return event.body.lines[0].seq

    async with asyncio.timeout(15):
        while True:  # the binding follows the reconnection within a round trip or two
            await agent.publish(output_event("b", 1))
            try:
                assert await asyncio.wait_for(next_event_of("b"), 0.5) == 1
                break
            except TimeoutError:
                continue
    await agent.publish(output_event("a", 2))
    assert await asyncio.wait_for(next_event_of("a"), 5) == 2
