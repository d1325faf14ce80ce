"""Benchmark: notifier delivery latency, an event published on the bus to its POST received.

A webhook receiver (aiohttp.web on 127.0.0.1) runs in this process; events are
``server_state`` events for distinct servers (each makes one ``server_up`` notice) so that
every event is one POST. Closed loop: publish one event, wait for its POST, then the next;
p50/p95 over a few hundred events after a warm-up. Then a burst: every event published at
once, and the time until the last POST (throughput).

- **RabbitMQ**: ``resofleet notifier`` in its own process (as deployed), events published
  by an AmqpBus in this process. The path: events queue -> notifier -> the webhook's
  durable queue (persistent, confirmed) -> the notifier's sender -> POST.
- **LocalBus**: the notifier in this process over the in-process bus, as ``resofleet up``.

Baselines, same run: **hop**, a bare aio-pika publish to a topic exchange and consume
from a queue bound to it (closed loop), transient as the agents' events are; **durable
hop**, the same with a durable queue, persistent messages, publisher confirms and acks, as
the webhook queues; **POST**, a bare aiohttp POST to the same receiver. The notifier's path
is one of each, so its figure is compared with hop + durable hop + POST.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Final

import aio_pika
import aiohttp

from resofleet.bus import AmqpBus, LocalBus
from resofleet.contracts import BusEvent, ServerState, Topology, encode_bus
from resofleet.notifier import Notifier, WebhookSettings
from tests.support.receiver import Receiver

from .procs import LOG_DIR, amqp_url, unique_prefix
from .table import Row, Table

__all__ = ["run"]

EVENTS: Final = 400
WARMUP: Final = 30
QUICK_EVENTS: Final = 60
QUICK_WARMUP: Final = 10
#: Seconds one event may take to arrive before the run is abandoned.
EVENT_TIMEOUT: Final = 10.0
SECRET: Final = "bench-secret-0123456789abcdef"


def _event(i: int) -> BusEvent:
    server = f"s{i}"
    return BusEvent(server=server, kind="state", body=ServerState(server=server, state="ready"))


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _closed_loop(publish, receiver: Receiver, path: str, first: int, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    samples = []
    for i in range(first, first + n):
        before = len(receiver.posts[path])
        started = time.perf_counter()
        await publish(_event(i))
        posts = await receiver.wait_for(path, before + 1, timeout=EVENT_TIMEOUT)
        samples.append(posts[before].at - started)
    return samples


async def _burst(publish, receiver: Receiver, path: str, first: int, n: int) -> float:  # type: ignore[no-untyped-def]
    before = len(receiver.posts[path])
    started = time.perf_counter()
    for i in range(first, first + n):
        await publish(_event(i))
    await receiver.wait_for(path, before + n, timeout=EVENT_TIMEOUT * 3)
    return n / (time.perf_counter() - started)


async def _hop_baseline(url: str, prefix: str, n: int, *, durable: bool) -> list[float]:
    """Bare aio-pika, closed loop: publish to a topic exchange, consume from a bound queue.
    ``durable``: as the notifier's webhook queues (a durable queue, persistent messages,
    publisher confirms, acked); else as the events (transient, no confirms, no ack)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=durable)
        exchange = await channel.declare_exchange(f"{prefix}hop", aio_pika.ExchangeType.TOPIC, auto_delete=True)
        queue = await channel.declare_queue(f"{prefix}hop-{durable}", durable=durable, auto_delete=not durable)
        await queue.bind(exchange, routing_key="#")
        arrived: asyncio.Queue[float] = asyncio.Queue()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            arrived.put_nowait(time.perf_counter())
            if durable:
                await message.ack()

        await queue.consume(on_message, no_ack=not durable)
        mode = aio_pika.DeliveryMode.PERSISTENT if durable else aio_pika.DeliveryMode.NOT_PERSISTENT
        payload = encode_bus(_event(0))
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            await exchange.publish(aio_pika.Message(payload, delivery_mode=mode), routing_key="s0.state")
            samples.append(await asyncio.wait_for(arrived.get(), EVENT_TIMEOUT) - started)
        await queue.delete(if_unused=False, if_empty=False)
        return samples


async def _post_baseline(receiver: Receiver, n: int) -> list[float]:
    samples = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            started = time.perf_counter()
            async with session.post(receiver.url("bare"), data=b'{"x":1}') as response:
                await response.read()
            samples.append(receiver.posts["bare"][-1].at - started)
    return samples


def _rows(table: Table, name: str, samples: list[float], baseline_name: str, baseline: list[float]) -> None:
    table.add(Row(f"{name}: p50", _pct(samples, 0.5) * 1000, "ms", baseline_name, _pct(baseline, 0.5) * 1000))
    table.add(Row(f"{name}: p95", _pct(samples, 0.95) * 1000, "ms", baseline_name + " p95", _pct(baseline, 0.95) * 1000))


async def _notifier_process(url: str, prefix: str, receiver: Receiver) -> asyncio.subprocess.Process:
    from tests.e2e.test_commands import resofleet
    from tests.e2e.test_security_cli import env_for

    LOG_DIR.mkdir(parents=True, exist_ok=True)
    config = LOG_DIR / "notify-bench.toml"
    config.write_text(
        f'[bus]\nurl = "{url}"\nprefix = "{prefix}"\n'
        f'[[webhooks]]\nname = "bench"\nurl = "{receiver.url("bench")}"\nsecret = "{SECRET}"\n'
    )
    with open(LOG_DIR / "notifier.log", "wb") as err:
        process = await asyncio.create_subprocess_exec(
            *resofleet(), "notifier", env=env_for(LOG_DIR, RESOFLEET_CONFIG=str(config)),
            cwd=LOG_DIR, stdout=asyncio.subprocess.PIPE, stderr=err,
        )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    if not line.startswith(b"resofleet: notifier"):
        raise RuntimeError(f"the notifier did not start; see {LOG_DIR / 'notifier.log'}")
    return process


async def _delete(url: str, topology: Topology) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in (topology.notify_events, topology.notify_dead, topology.notify_queue("bench")):
            await channel.queue_delete(name)


async def run(*, quick: bool = False) -> Table:
    n, warm = (QUICK_EVENTS, QUICK_WARMUP) if quick else (EVENTS, WARMUP)
    table = Table("notifier delivery latency (event published -> POST received)")
    receiver = Receiver()
    await receiver.start()
    try:
        post = await _post_baseline(receiver, n)
        table.add(Row("bare POST: p50", _pct(post, 0.5) * 1000, "ms"))

        local = LocalBus()
        await local.start()
        hook = WebhookSettings(name="bench", url=receiver.url("local"), secret=SECRET)
        notifier = Notifier(local, webhooks=[hook], secrets={"bench": SECRET})
        await notifier.start()
        try:
            await _closed_loop(local.publish, receiver, "local", 0, warm)
            samples = await _closed_loop(local.publish, receiver, "local", warm, n)
            _rows(table, "LocalBus (resofleet up)", samples, "bare POST", post)
            rate = await _burst(local.publish, receiver, "local", warm + n, n)
            table.add(Row("LocalBus: burst throughput", rate, "notices/s"))
        finally:
            await notifier.close()
            await local.close()

        url = amqp_url()
        if url is None:
            table.notes.append("RabbitMQ rows skipped: set RESOFLEET_AMQP_URL")
            return table
        prefix = unique_prefix()
        topology = Topology(prefix=prefix)
        hop = await _hop_baseline(url, prefix, n, durable=False)
        table.add(Row("bare aio-pika hop: p50", _pct(hop, 0.5) * 1000, "ms"))
        durable = await _hop_baseline(url, prefix, n, durable=True)
        table.add(Row("bare aio-pika durable hop: p50", _pct(durable, 0.5) * 1000, "ms"))
        both = [h + d + p for h, d, p in zip(sorted(hop), sorted(durable), sorted(post))]
        process = await _notifier_process(url, prefix, receiver)
        bus = AmqpBus(url, topology=topology, name="bench-publisher")
        await bus.start()
        try:
            await _closed_loop(bus.publish, receiver, "bench", 0, warm)
            samples = await _closed_loop(bus.publish, receiver, "bench", warm, n)
            _rows(table, "RabbitMQ (resofleet notifier process)", samples, "hop + durable hop + POST", both)
            rate = await _burst(bus.publish, receiver, "bench", warm + n, n)
            table.add(Row("RabbitMQ: burst throughput", rate, "notices/s"))
        finally:
            await bus.close()
            process.terminate()
            await asyncio.wait_for(process.wait(), 15)
            await _delete(url, topology)
        table.notes.append(f"{n} events closed loop after {warm} warm-up; burst of {n}")
        table.notes.append(f"mean RabbitMQ latency {statistics.mean(samples) * 1000:.2f} ms")
        return table
    finally:
        await receiver.close()
