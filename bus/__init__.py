"""One small bus interface, two transports.

- :class:`AmqpBus`: RabbitMQ through aio-pika, for fleets (several hosts, several gateways).
- :class:`LocalBus`: in-process, for ``resofleet up`` on a single host.

Both give the same behaviour to their users (see :class:`Bus`); the behaviour tests run
on both. :func:`make_bus` picks one from a URL.
"""

from __future__ import annotations

from resofleet.contracts import Topology

from .amqp import AmqpBus
from .base import (
    DEFAULT_EVENT_QUEUE,
    DEFAULT_PRESENCE_QUEUE,
    MAX_CLOCK_SKEW,
    Bus,
    EventSubscription,
    Handler,
    LinkListener,
    Served,
    Subscription,
    serve_deadline,
    stamp,
    topic_matches,
)
from .errors import (
    INTERNAL_SENTENCE,
    AlreadyServed,
    BusError,
    BusUnavailable,
    NotPermitted,
    QueueFull,
    ReplyError,
    RequestTimeout,
    ServerBusy,
    ServerOffline,
    new_reference,
    reply_for,
    with_reference,
)
from .local import LocalBus
from .work import DEFAULT_PREFETCH, DEFAULT_WORK_QUEUE, Delivery, Overflow, WorkQueue

__all__ = [
    "AlreadyServed",
    "AmqpBus",
    "Bus",
    "BusError",
    "BusUnavailable",
    "DEFAULT_EVENT_QUEUE",
    "DEFAULT_PREFETCH",
    "DEFAULT_PRESENCE_QUEUE",
    "DEFAULT_WORK_QUEUE",
    "Delivery",
    "EventSubscription",
    "Handler",
    "INTERNAL_SENTENCE",
    "LinkListener",
    "LocalBus",
    "MAX_CLOCK_SKEW",
    "NotPermitted",
    "Overflow",
    "QueueFull",
    "ReplyError",
    "RequestTimeout",
    "Served",
    "ServerBusy",
    "ServerOffline",
    "Subscription",
    "make_bus",
    "new_reference",
    "reply_for",
    "serve_deadline",
    "stamp",
    "topic_matches",
    "with_reference",
    "WorkQueue",
]


def make_bus(url: str | None, *, topology: Topology | None = None, name: str = "resofleet") -> Bus:
    """An :class:`AmqpBus` for an ``amqp://`` or ``amqps://`` URL, else a :class:`LocalBus`."""
    if url:
        return AmqpBus(url, topology=topology, name=name)
    return LocalBus()
