"""Fixtures for the notifier's tests: a webhook receiver, notifiers on the test's buses,
and clean-up of the durable queues they declare on the shared broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import pytest

from resofleet.bus import Bus
from resofleet.contracts import Topology
from resofleet.notifier import Notifier, NotifierSettings, WebhookSettings
from tests.support.receiver import Receiver

SECRET = "test-secret-0123456789abcdef"
#: Webhook names the tests use (their durable queues are deleted after each test).
HOOK_NAMES = ("ops", "fast", "slow", "chat", "dead")

MakeNotifier = Callable[..., Awaitable[Notifier]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.close()


def hook(receiver: Receiver, name: str, **fields: Any) -> WebhookSettings:
    """A webhook posting to ``receiver`` at /<name>, with test-sized retries."""
    fields.setdefault("backoff", 0.05)
    fields.setdefault("max_backoff", 0.2)
    fields.setdefault("timeout", 5.0)
    if fields.get("format", "json") == "json":
        fields.setdefault("secret", SECRET)
    return WebhookSettings(name=name, url=receiver.url(name), **fields)


async def delete_queues(amqp_url: str, topology: Topology) -> None:
    names = [topology.notify_events, topology.notify_dead, *map(topology.notify_queue, HOOK_NAMES)]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


@pytest.fixture
async def notifiers(
    bus_factory: Any, transport: str, topology: Topology, request: pytest.FixtureRequest
) -> AsyncIterator[MakeNotifier]:
    """``await notifiers(bus, [hooks], **settings)``: a started notifier, closed after the
    test (before its buses: it depends on ``bus_factory``); over RabbitMQ the test's durable
    queues are deleted after."""
    made: list[Notifier] = []

    async def make(bus: Bus, hooks: list[WebhookSettings], **settings: Any) -> Notifier:
        notifier = Notifier(
            bus, webhooks=hooks, secrets={h.name: h.secret for h in hooks},
            settings=NotifierSettings(**settings), topology=topology, name=f"test-notifier-{len(made)}",
        )
        made.append(notifier)
        await notifier.start()
        return notifier

    yield make
    for notifier in made:
        await notifier.close()
    if transport == "amqp":
        await delete_queues(request.getfixturevalue("amqp_url"), topology)
