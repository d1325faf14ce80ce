"""Work queues (resofleet.bus.work): the same suite over LocalBus and AmqpBus (a real RabbitMQ).

Durability across processes means something only over RabbitMQ: there the consumer and
the publisher are separate connections, as separate processes would be. The in-process
twin keeps its queues for the life of its bus.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest

from resofleet.bus import Bus, Delivery, QueueFull, Subscription
from resofleet.contracts import BusEvent, ContainerOutputBatch, OutputLine, Topology, decode_event
from tests.support.timing import AT_ONCE

#: Seconds a test waits for a delivery it expects.
WAIT = 5.0
#: Seconds a test watches for a delivery that must not come.
QUIET = 0.5


def event(server: str, seq: int) -> BusEvent:
    return BusEvent(
        server=server, kind="output",
        body=ContainerOutputBatch(server=server, epoch="e", lines=[OutputLine(seq=seq, output=f"l{seq}")]),
    )


def seq_of(delivery: Delivery) -> int:
    body = decode_event(delivery.body).body
    assert isinstance(body, ContainerOutputBatch)
    return body.lines[0].seq


async def take(sub: Subscription[Delivery], n: int) -> list[Delivery]:
    async with asyncio.timeout(WAIT):
        return [await sub.get() for _ in range(n)]


async def nothing_more(sub: Subscription[Delivery]) -> None:
    await asyncio.sleep(QUIET)
    assert len(sub) == 0


@pytest.fixture
async def queue_name(topology: Topology, transport: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A queue name under this test's prefix; over RabbitMQ the durable queue is deleted after."""
    name = f"{topology.prefix}work"
    yield name
    if transport == "amqp":
        connection = await aio_pika.connect(request.getfixturevalue("amqp_url"))
        async with connection:
            channel = await connection.channel()
            for suffix in ("", "-2"):
                await channel.queue_delete(name + suffix)


async def test_events_published_before_anyone_consumes_are_kept(bus_factory, queue_name):
    """Events published while no consumer runs arrive, in order, when one comes (over
    RabbitMQ on another connection, as a notifier process that starts later)."""
    agent: Bus = await bus_factory()
    await agent.work_queue(queue_name, events=["alpha.*"], maxsize=100)
    for seq in range(5):
        await agent.publish(event("alpha", seq))
    await agent.publish(event("beta", 99))  # not bound
    consumer = await bus_factory()
    queue = await consumer.work_queue(queue_name, events=["alpha.*"], maxsize=100)
    sub = await queue.consume(prefetch=10)
    got = await take(sub, 5)
    assert [seq_of(d) for d in got] == [0, 1, 2, 3, 4]
    for delivery in got:
        await delivery.ack()
    await nothing_more(sub)


async def test_consumers_share_the_queue_without_doubles(bus_factory, queue_name):
    """Two consumers of one queue get every message once between them."""
    bus = await bus_factory()
    queue = await bus.work_queue(queue_name, events=["#"], maxsize=1000)
    first = await queue.consume(prefetch=4)
    second = await (await (await bus_factory()).work_queue(queue_name, events=["#"], maxsize=1000)).consume(prefetch=4)
    for seq in range(40):
        await bus.publish(event("alpha", seq))
    seen: list[int] = []
    counts = {id(first): 0, id(second): 0}

    async def drain(sub: Subscription[Delivery]) -> None:
        while True:
            delivery = await sub.get()
            seen.append(seq_of(delivery))
            counts[id(sub)] += 1
            await delivery.ack()

    tasks = [asyncio.create_task(drain(first)), asyncio.create_task(drain(second))]
    try:
        async with asyncio.timeout(WAIT):
            while len(seen) < 40:
                await asyncio.sleep(0.01)
        await asyncio.sleep(QUIET)
    finally:
        for task in tasks:
            task.cancel()
    assert sorted(seen) == list(range(40))
    assert counts[id(first)] > 0 and counts[id(second)] > 0


async def test_unacknowledged_deliveries_go_back_when_a_consumer_closes(bus_factory, queue_name):
    """What a consumer took and did not acknowledge is delivered again, marked
    redelivered, to the next consumer; what it acknowledged is not."""
    bus = await bus_factory()
    queue = await bus.work_queue(queue_name, maxsize=100)
    for seq in range(4):
        await queue.put(_encoded(seq))
    sub = await queue.consume(prefetch=10)
    got = await take(sub, 4)
    await got[0].ack()
    await got[1].ack()
    await sub.close()
    other = await (await (await bus_factory()).work_queue(queue_name, maxsize=100)).consume(prefetch=10)
    again = await take(other, 2)
    assert sorted(seq_of(d) for d in again) == [2, 3]
    assert all(d.redelivered for d in again)
    for delivery in again:
        await delivery.ack()
    await nothing_more(other)


def _encoded(seq: int) -> bytes:
    from resofleet.contracts import encode_bus

    return encode_bus(event("alpha", seq))


async def test_prefetch_bounds_what_a_consumer_holds(bus_factory, queue_name):
    """A consumer holds at most ``prefetch`` unacknowledged deliveries; acknowledging one
    lets the next come."""
    bus = await bus_factory()
    queue = await bus.work_queue(queue_name, maxsize=100)
    for seq in range(10):
        await queue.put(_encoded(seq))
    sub = await queue.consume(prefetch=3)
    got = await take(sub, 3)
    await nothing_more(sub)
    await got[0].ack()
    more = await take(sub, 1)
    assert seq_of(more[0]) == 3


async def test_single_active_consumer_takes_over_in_order(bus_factory, queue_name):
    """With ``single_active`` only one consumer gets messages; when it goes, the next one
    gets what it held (redelivered) and the rest, in order."""
    bus = await bus_factory()
    queue = await bus.work_queue(queue_name, maxsize=100, single_active=True)
    active = await queue.consume(prefetch=2)
    standby = await (await (await bus_factory()).work_queue(queue_name, maxsize=100, single_active=True)).consume(prefetch=2)
    for seq in range(6):
        await queue.put(_encoded(seq))
    got = await take(active, 2)
    await got[0].ack()
    await take(active, 1)
    await nothing_more(standby)
    await active.close()
    rest = await take(standby, 2)
    assert [seq_of(d) for d in rest] == [1, 2] and all(d.redelivered for d in rest)
    for delivery in rest:
        await delivery.ack()
    rest = await take(standby, 2)
    assert [seq_of(d) for d in rest] == [3, 4]


async def test_a_full_rejecting_queue_refuses_put(bus_factory, queue_name):
    """``overflow="reject"``: a put to a full queue raises QueueFull at once and the queue
    keeps what it had."""
    bus = await bus_factory()
    queue = await bus.work_queue(queue_name, maxsize=2, overflow="reject")
    await queue.put(_encoded(0))
    await queue.put(_encoded(1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(QueueFull):
        await queue.put(_encoded(2))
    assert loop.time() - started < AT_ONCE
    sub = await queue.consume(prefetch=5)
    assert [seq_of(d) for d in await take(sub, 2)] == [0, 1]
    await nothing_more(sub)


async def test_a_full_dropping_queue_keeps_the_newest(bus_factory, queue_name):
    """``overflow="drop-oldest"``: the oldest waiting message makes room for a new one."""
    bus = await bus_factory()
    queue = await bus.work_queue(queue_name, events=["#"], maxsize=3)
    for seq in range(5):
        await bus.publish(event("alpha", seq))
    sub = await queue.consume(prefetch=5)
    assert [seq_of(d) for d in await take(sub, 3)] == [2, 3, 4]


async def test_declaring_a_queue_again_with_other_arguments_fails(bus_factory, queue_name):
    """A second declaration that disagrees with the queue is a clear ValueError."""
    bus = await bus_factory()
    await bus.work_queue(queue_name, maxsize=10)
    other = await bus_factory()
    with pytest.raises(ValueError, match="other arguments"):
        await other.work_queue(queue_name, maxsize=11)
