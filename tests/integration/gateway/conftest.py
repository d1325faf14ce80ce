"""A real gateway on 127.0.0.1:0 over a real bus (LocalBus or RabbitMQ), per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from resofleet.bus import Bus
from resofleet.gateway import Gateway

GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(bus_factory) -> AsyncIterator[GatewayFactory]:
    """Start gateways on free ports, each on its own bus connection (``bus=`` to share)."""
    made: list[Gateway] = []

    async def start(*, bus: Bus | None = None, **options: Any) -> Gateway:
        gateway = Gateway(bus or await bus_factory(), host="127.0.0.1", port=0, **options)
        await gateway.start()
        made.append(gateway)
        return gateway

    yield start
    for gateway in reversed(made):
        await gateway.close()
