"""Sessions that come, subscribe and vanish without a goodbye, many at a time, while
other clients' requests run: the gateway's event bindings change under them all the
time, and its bus link must never suffer for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from tests.integration.gateway.client import Client

from .conftest import servers_online

#: Sessions per wave, and waves: each session's coming and going rebinds the gateway's
#: one event subscription (tests/integration/bus/test_amqp_churn.py cancels the bus's
#: calls themselves halfway; here the gateway's own path is churned end to end).
WAVE = 10
WAVES = 8
SERVERS = ("alpha", "beta")


async def test_sessions_vanishing_mid_subscribe_leave_the_bus_link_alone(fleet, caplog):
    """Clients connect, subscribe to one server or all, and drop their TCP connection at
    random moments (some mid-subscribe); meanwhile a steady client's commands are all
    answered, the gateway's bus stays connected, and no channel is closed for it."""
    caplog.set_level(logging.WARNING)
    await fleet.agent(*SERVERS)
    gateway = await fleet.gateway()
    steady = await fleet.client(gateway.url)
    await servers_online(steady, list(SERVERS))
    rng = random.Random(9)
    answered = 0

    async def commands() -> None:
        nonlocal answered
        while True:
            reply = await steady.request({"type": "command", "command": "worlds", "server": "alpha"})
            assert reply["type"] == "command_response", reply
            answered += 1

    async def vanishing(i: int) -> None:
        client = await Client.connect(gateway.url)
        try:
            servers = "*" if i % 3 == 0 else [SERVERS[i % 2]]
            await client.send({"type": "subscribe", "servers": servers, "batch": bool(i % 2)})
            await asyncio.sleep(rng.random() * 0.01)
        finally:
            transport = client.ws.transport
            transport.abort()  # no close frame, no FIN: the connection is just gone
            with contextlib.suppress(Exception):
                await client.ws.wait_closed()

    traffic = asyncio.create_task(commands())
    try:
        for _ in range(WAVES):
            await asyncio.gather(*(vanishing(i) for i in range(WAVE)))
            assert gateway.bus.connected
            assert not traffic.done(), traffic.exception()
    finally:
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
    assert answered > 0
    troubles = [
        r.getMessage() for r in caplog.records
        if r.name.startswith(("aiormq", "aio_pika")) or "lost the broker" in r.getMessage()
        or "not connected" in r.getMessage()
    ]
    assert not troubles, troubles[:3]
    # events still reach a subscriber after all that rebinding
    watcher = await fleet.client(gateway.url)
    await watcher.request({"type": "subscribe", "servers": ["beta"]})
    await steady.request({"type": "command", "command": "worlds", "server": "beta"})
    line = await watcher.expect(lambda m: m.get("type") == "container_output")
    assert line["server"] == "beta"
