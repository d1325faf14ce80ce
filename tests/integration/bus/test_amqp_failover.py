"""AmqpBus over several broker URLs: it starts on the first that answers and, when its
link drops, reconnects to the next one. Two TCP proxies in front of the shared broker
stand for two nodes (the cluster itself is in tests/e2e/test_cluster_failover.py)."""

from __future__ import annotations

import asyncio
import socket
import time
from urllib.parse import urlsplit

import pytest

from resofleet.bus import AmqpBus, BusUnavailable, ServerOffline
from resofleet.bus.amqp import CONNECT_TIMEOUT, RECONNECT_INTERVAL
from resofleet.contracts import BusRequest, RunCommand
from tests.support.tcp_proxy import TcpProxy
from tests.support.timing import AT_ONCE

from .test_amqp_link import via, wait_until_connected
from .test_bus import echo_handler, output_event

pytestmark = pytest.mark.amqp


@pytest.fixture
async def nodes(amqp_url):
    """Two proxies to the shared broker: "node a" and "node b"."""
    parts = urlsplit(amqp_url)
    made = [TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672) for _ in range(2)]
    for proxy in made:
        await proxy.start()
    yield made
    for proxy in made:
        await proxy.close()


def dead_url(amqp_url: str) -> str:
    """A URL whose port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    parts = urlsplit(amqp_url)
    creds = parts.netloc.rpartition("@")[0]
    return parts._replace(netloc=f"{creds}@127.0.0.1:{port}").geturl()


async def served_again(gateway: AmqpBus, server: str, within: float) -> float:
    """Seconds until a request to ``server`` is answered (offline or unavailable meanwhile)."""
    started = time.perf_counter()
    async with asyncio.timeout(within):
        while True:
            try:
                reply = await gateway.request(BusRequest(server=server, body=RunCommand(command="x"), timeout=2))
                assert reply.body.output == f"{server}:x"
                return time.perf_counter() - started
            except (ServerOffline, BusUnavailable):
                await asyncio.sleep(0.01)


def test_urls_come_as_a_list_or_one_separated_string():
    """A list, a comma- or space-separated string, or one URL; no URL or a non-AMQP one is a ValueError."""
    assert AmqpBus(["amqp://a/", "amqp://b/"]).urls == ("amqp://a/", "amqp://b/")
    assert AmqpBus("amqp://a/, amqp://b/ amqps://c/").urls == ("amqp://a/", "amqp://b/", "amqps://c/")
    assert AmqpBus("amqp://a/").url == "amqp://a/"
    for bad in ("", [], ["amqp://a/", "http://u:secret@b/"]):
        with pytest.raises(ValueError) as caught:
            AmqpBus(bad)
        assert "secret" not in str(caught.value)


async def test_start_skips_a_broker_that_refuses(amqp_url, topology, nodes):
    """The first URL refuses: the bus starts on the second, at once, and says which it uses."""
    _, b = nodes
    bus = AmqpBus([dead_url(amqp_url), via(amqp_url, b)], topology=topology)
    started = time.perf_counter()
    await bus.start()
    try:
        assert time.perf_counter() - started < AT_ONCE
        assert bus.connected and bus.broker == f"amqp://guest:***@127.0.0.1:{b.port}/"
    finally:
        await bus.close()


async def test_start_names_every_broker_that_failed(amqp_url, topology):
    """No broker answers: one BusUnavailable naming each URL, password hidden."""
    urls = [dead_url(amqp_url), dead_url(amqp_url)]
    bus = AmqpBus(urls, topology=topology)
    with pytest.raises(BusUnavailable) as caught:
        async with asyncio.timeout(2 * CONNECT_TIMEOUT + AT_ONCE):
            await bus.start()
    message = str(caught.value)
    assert all(f":{urlsplit(u).port}/" in message for u in urls) and ":guest@" not in message


async def test_a_dropped_link_reconnects_to_the_next_broker(amqp_url, topology, nodes):
    """Agent and gateway on node a; node a goes (refuses, connections reset): both are
    on node b within a reconnection interval, requests are answered and events flow again."""
    a, b = nodes
    urls = [via(amqp_url, a), via(amqp_url, b)]
    agent = AmqpBus(urls, topology=topology, name="failover-agent")
    gateway = AmqpBus(urls, topology=topology, name="failover-gateway")
    for bus in (agent, gateway):
        await bus.start()
    try:
        await agent.serve("s", echo_handler("s"))
        sub = await gateway.subscribe(["s.*"])
        assert {agent.broker, gateway.broker} == {f"amqp://guest:***@127.0.0.1:{a.port}/"}
        # links that have been up longer than aio-pika's pause after a connection, as a
        # fleet's are: the drop is then acted on at once
        await asyncio.sleep(RECONNECT_INTERVAL)
        a.refuse = True
        a.cut()
        recovered = await served_again(gateway, "s", within=AT_ONCE)
        assert {agent.broker, gateway.broker} == {f"amqp://guest:***@127.0.0.1:{b.port}/"}
        await wait_until_connected(agent)
        await wait_until_connected(gateway)
        await agent.publish(output_event("s", 7))
        async with asyncio.timeout(5):
            while (event := await sub.get()).body.lines[0].seq != 7:
                pass
        print(f"node lost -> served again: {recovered * 1000:.0f} ms")
    finally:
        for bus in (gateway, agent):
            await bus.close()
