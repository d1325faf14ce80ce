"""Who may send requests: an agent runs only requests whose broker-verified `user_id` is
one of its `requesters` (the gateways' broker users).

RabbitMQ refuses a publish whose `user_id` is not the publishing connection's own user, so
the property names who really sent a request. Replies go through the default exchange,
which no permission narrows by queue: without this check, any broker user allowed to reply
could publish a forged request straight into another server's command queue.
"""

from __future__ import annotations

import asyncio

import aio_pika
import aiormq
import pytest

from resofleet.bus import AmqpBus, RequestTimeout
from resofleet.contracts import BusReply, BusRequest, CommandResponse, RunCommand, encode_bus

pytestmark = pytest.mark.amqp


async def test_requests_from_a_listed_broker_user_are_served(amqp_url, topology):
    """The gateway's connection is the broker's `guest`: an agent listing it serves it."""
    agent = AmqpBus(amqp_url, topology=topology, requesters=["guest"])
    gateway = AmqpBus(amqp_url, topology=topology)
    await agent.start()
    await gateway.start()
    try:
        async def handler(request: BusRequest, deadline: float) -> BusReply:
            return BusReply(body=CommandResponse(command="users", output="ok", server="s1"))

        await agent.serve("s1", handler)
        reply = await gateway.request(BusRequest(server="s1", body=RunCommand(command="users"), timeout=5))
        assert reply.body.output == "ok"
    finally:
        await gateway.close()
        await agent.close()


async def test_requests_from_other_broker_users_or_none_are_not_run(amqp_url, topology):
    """A request from a user not listed, or one published into the command queue through
    the default exchange without a `user_id`, never reaches the handler."""
    agent = AmqpBus(amqp_url, topology=topology, requesters=["gateway"])
    gateway = AmqpBus(amqp_url, topology=topology)  # connects as guest
    await agent.start()
    await gateway.start()
    ran: list[str] = []
    try:
        async def handler(request: BusRequest, deadline: float) -> BusReply:
            ran.append(request.body.command)
            return BusReply(body=CommandResponse(command="x", output="ran", server="s1"))

        await agent.serve("s1", handler)
        with pytest.raises(RequestTimeout):
            await gateway.request(BusRequest(server="s1", body=RunCommand(command="as guest"), timeout=1))

        # forged: straight into the server's queue through the default exchange
        connection = await aio_pika.connect(amqp_url)
        try:
            channel = await connection.channel()
            forged = BusRequest(server="s1", body=RunCommand(command="forged"), timeout=5)
            await channel.default_exchange.publish(
                aio_pika.Message(encode_bus(forged)), routing_key=topology.command_queue("s1"),
            )
            # and a user_id that is not the connection's own is refused by the broker itself
            with pytest.raises(aiormq.exceptions.ChannelClosed, match="user_id"):
                spoofing = await connection.channel()
                await spoofing.default_exchange.publish(
                    aio_pika.Message(encode_bus(forged), user_id="gateway"),
                    routing_key=topology.command_queue("s1"),
                )
                await spoofing.get_queue(topology.command_queue("s1"), ensure=True)
        finally:
            await connection.close()
        # a request from a listed user sent after them is served first-in-first-out: once
        # its answer is here, the earlier ones were taken and dropped
        agent.requesters = frozenset({"gateway", "guest"})
        reply = await gateway.request(BusRequest(server="s1", body=RunCommand(command="after"), timeout=5))
        assert reply.body.output == "ran"
        assert ran == ["after"]
    finally:
        await gateway.close()
        await agent.close()
