"""AmqpBus across a broker restart, on a RabbitMQ node of the test's own (the shared
broker is never stopped): everything comes back, and nothing is left failed unseen."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid

import pytest

from resofleet.bus import AmqpBus, BusError
from resofleet.contracts import BusReply, BusRequest, CommandResponse, RunCommand, Topology
from tests.support.rabbit_node import rabbit_node

from .test_bus import echo_handler, output_event

pytestmark = pytest.mark.amqp

#: Requests kept in flight while the broker goes away: each may be anywhere between
#: being published and being answered when the connection drops.
IN_FLIGHT = 16
#: Seconds both sides have to reconnect and serve again once the broker is back: the
#: reconnection interval (1 s) plus restoring a handful of channels.
BACK_WITHIN = 15.0


async def test_a_broker_restart_leaves_no_exception_unretrieved(tmp_path, caplog):
    """Requests in flight when the broker is killed fail with bus_unavailable, both sides
    reconnect and serve again, and asyncio never reports a future or task whose
    exception nobody retrieved (it used to, a dozen times per restart)."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    async with rabbit_node(tmp_path / "broker") as node:
        topology = Topology(prefix=f"restart-{uuid.uuid4().hex[:8]}.")
        agent = AmqpBus(node.url, topology=topology, name="restart-agent")
        gateway = AmqpBus(node.url, topology=topology, name="restart-gateway")
        await agent.start()
        await gateway.start()
        try:
            release = asyncio.Event()

            async def slow(request: BusRequest, deadline: float) -> BusReply:
                await asyncio.wait_for(release.wait(), deadline - asyncio.get_running_loop().time())
                return BusReply(body=CommandResponse(command="c", output="late", server="slow"))

            await agent.serve("fast", echo_handler("fast"), concurrency=4)
            await agent.serve("slow", slow, concurrency=4)
            sub = await gateway.subscribe(["fast.*"])
            outcomes: list[str] = []

            async def ask(server: str) -> None:
                while True:
                    try:
                        await gateway.request(
                            BusRequest(server=server, body=RunCommand(command="c"), timeout=30)
                        )
                        outcomes.append("ok")
                    except BusError as exc:
                        outcomes.append(exc.code.value)
                        await asyncio.sleep(0.05)

            askers = [asyncio.create_task(ask("slow" if i % 2 else "fast")) for i in range(IN_FLIGHT)]
            await asyncio.sleep(0.5)  # requests flowing, slow ones waiting at the agent
            await node.restart()
            async with asyncio.timeout(BACK_WITHIN):
                while not (gateway.connected and agent.connected):
                    await asyncio.sleep(0.05)
                while True:  # the agent's queues are restored right after it reconnects
                    try:
                        reply = await gateway.request(
                            BusRequest(server="fast", body=RunCommand(command="x"), timeout=2)
                        )
                        break
                    except BusError:
                        await asyncio.sleep(0.05)
            assert reply.body.output == "fast:x"
            await agent.publish(output_event("fast", 3))
            event = await asyncio.wait_for(sub.get(), 5)
            assert event.body.lines[0].seq == 3
            release.set()
            for task in askers:
                task.cancel()
            await asyncio.gather(*askers, return_exceptions=True)
            assert "bus_unavailable" in outcomes
        finally:
            await gateway.close()
            await agent.close()
    gc.collect()
    await asyncio.sleep(0)
    unseen = [str(r.msg) for r in caplog.records if "never retrieved" in str(r.msg)]
    assert not unseen, f"{len(unseen)} unretrieved: {unseen[:3]}"
