"""Fixtures shared by every test.

``amqp_url`` yields a real RabbitMQ: ``RESOFLEET_AMQP_URL`` when set, else a throwaway
broker started with testcontainers, else the test is skipped with the reason. Tests share
one broker, so each gets its own :class:`resofleet.contracts.Topology` prefix (``topology``).
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from resofleet.bus import AmqpBus, Bus, LocalBus
from resofleet.contracts import Topology
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    url = os.environ.get("RESOFLEET_AMQP_URL")
    if url:
        yield url
        return
    try:
        from testcontainers.rabbitmq import RabbitMqContainer

        container = RabbitMqContainer("rabbitmq:3-management")
        container.start()
    except Exception as exc:  # no Docker engine, no image, no network
        pytest.skip(
            "needs RabbitMQ: set RESOFLEET_AMQP_URL (e.g. amqp://guest:guest@127.0.0.1:5672/) "
            f"or make a Docker engine available for testcontainers ({type(exc).__name__}: {exc})"
        )
    try:
        params = container.get_connection_params()
        yield f"amqp://guest:guest@{params.host}:{params.port}/"
    finally:
        container.stop()


@pytest.fixture
def topology() -> Topology:
    return Topology(prefix=f"test-{uuid.uuid4().hex[:10]}.")


BusFactory = Callable[[], Awaitable[Bus]]


@pytest.fixture(params=["local", "amqp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def bus_factory(
    transport: str, request: pytest.FixtureRequest, topology: Topology
) -> AsyncIterator[BusFactory]:
    """Make started buses that see each other: one shared LocalBus, or separate
    AmqpBus connections to one broker under this test's prefix (as separate processes)."""
    made: list[Bus] = []
    shared: list[LocalBus] = []
    url = request.getfixturevalue("amqp_url") if transport == "amqp" else None

    async def make() -> Bus:
        if url is None:
            if not shared:
                local = LocalBus()
                await local.start()
                shared.append(local)
                made.append(local)
            return shared[0]
        amqp = AmqpBus(url, topology=topology, name=f"test-{len(made)}")
        await amqp.start()
        made.append(amqp)
        return amqp

    yield make
    for bus in reversed(made):
        await bus.close()


@pytest.fixture
async def proxy(amqp_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the test broker, to cut or freeze a connection's link."""
    parts = urlsplit(amqp_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await proxy.start()
    yield proxy
    await proxy.close()
