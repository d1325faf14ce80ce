"""AmqpBus under churn: subscriptions made, rebound and closed by callers that are
cancelled halfway (sessions that end abruptly), while requests run. The connection must
never drop, and nothing a cancelled caller started may be left open."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from resofleet.bus import AmqpBus, BusError
from resofleet.contracts import BusReply, BusRequest, CommandResponse, RunCommand

pytestmark = pytest.mark.amqp

#: Subscriptions worked on at once per round, like sessions connecting together.
SESSIONS = 12
#: Rounds of churn: each cancels about half of its callers at a different moment.
ROUNDS = 40
#: Seconds after its start within which a session is cancelled while it subscribes and
#: rebinds (a few round trips on loopback), and after it starts closing its subscription
#: (one or two): cancellations land inside every one of those calls.
SETUP_WITHIN = 0.008
CLOSE_WITHIN = 0.001


def open_channels(bus: AmqpBus) -> int:
    """Channels open on the bus's connection right now (peeking into aiormq)."""
    assert bus._connection is not None and bus._connection.transport is not None
    return len(bus._connection.transport.connection.channels)


@pytest.fixture
async def pair(amqp_url, topology):
    agent = AmqpBus(amqp_url, topology=topology, name="churn-agent")
    gateway = AmqpBus(amqp_url, topology=topology, name="churn-gateway")
    await agent.start()
    await gateway.start()

    async def echo(request: BusRequest, deadline: float) -> BusReply:
        return BusReply(body=CommandResponse(command="c", output="ok", server="s"))

    await agent.serve("s", echo, concurrency=4)
    yield agent, gateway
    await gateway.close()
    await agent.close()


async def test_cancelled_subscription_calls_never_drop_the_connection(pair, caplog):
    """Callers cancelled in the middle of subscribe, bind, unbind or close (a session
    that ends) close no channel and never cost the gateway its broker connection; every
    request meanwhile is answered."""
    _, gateway = pair
    caplog.set_level(logging.WARNING)
    rng = random.Random(4)
    baseline = open_channels(gateway)
    answered = 0

    async def requests() -> None:
        nonlocal answered
        while True:
            reply = await gateway.request(BusRequest(server="s", body=RunCommand(command="c"), timeout=5))
            assert reply.body.output == "ok"
            answered += 1

    async def session(i: int, cancel_at: str) -> None:
        """Subscribe, rebind, close; cancelled somewhere in ``cancel_at`` (or not)."""
        me = asyncio.current_task()
        assert me is not None
        if cancel_at == "setup":
            loop.call_later(rng.random() * SETUP_WITHIN, me.cancel)
        sub = await gateway.subscribe([f"a{i}.*"])
        try:
            await sub.bind(f"b{i}.*")
            await sub.unbind(f"a{i}.*")
        finally:
            if cancel_at == "close":
                loop.call_later(rng.random() * CLOSE_WITHIN, me.cancel)
            await sub.close()

    loop = asyncio.get_running_loop()
    traffic = asyncio.create_task(requests())
    try:
        for round_ in range(ROUNDS):
            tasks = [
                asyncio.create_task(session(i, rng.choice(["setup", "close", "none"])))
                for i in range(SESSIONS)
            ]
            results = await asyncio.gather(*tasks, return_exceptions=True)
            failures = [r for r in results if isinstance(r, Exception) and not isinstance(r, BusError)]
            assert not failures, failures
            assert gateway.connected, f"the link dropped in round {round_}"
            assert not traffic.done(), traffic.exception()
    finally:
        traffic.cancel()
    assert answered > 0
    closed = [r.getMessage() for r in caplog.records if "cancelled" in r.getMessage() and r.name.startswith("aiormq")]
    assert not closed, closed[:3]
    lost = [r.getMessage() for r in caplog.records if "lost the broker connection" in r.getMessage()]
    assert not lost, lost

    async def settled() -> bool:
        return open_channels(gateway) == baseline

    async with asyncio.timeout(10):
        while not await settled():
            await asyncio.sleep(0.05)
