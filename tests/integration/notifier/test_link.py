"""A notifier whose broker connection drops (a TCP proxy cuts it) delivers, once it is
back, what was published meanwhile, and what it held unacknowledged when it dropped."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from resofleet.bus import AmqpBus
from resofleet.contracts import Topology
from resofleet.notifier import Notifier
from tests.integration.bus.test_amqp_link import via, wait_until_connected
from tests.support.notices import state
from tests.support.receiver import Receiver

from .conftest import delete_queues, hook

pytestmark = pytest.mark.amqp

#: Seconds a test watches for POSTs that must not come.
QUIET = 1.0


async def test_events_published_while_the_link_is_down_arrive_after(amqp_url, topology: Topology, proxy, receiver: Receiver):
    """Cut the notifier's link, publish, let it reconnect: every event arrives once."""
    agents = AmqpBus(amqp_url, topology=topology, name="test-agents")
    notifier_bus = AmqpBus(via(amqp_url, proxy), topology=topology, name="test-notifier")
    await agents.start()
    await notifier_bus.start()
    webhook = hook(receiver, "ops")
    notifier = Notifier(notifier_bus, webhooks=[webhook], secrets={"ops": webhook.secret}, topology=topology)
    try:
        await notifier.start()
        await agents.publish(state("s0", "ready"))
        await receiver.wait_for("ops", 1)
        proxy.refuse = True
        proxy.cut()
        await wait_until_connected(notifier_bus, False)
        for i in range(1, 11):
            await agents.publish(state(f"s{i}", "ready"))
        proxy.refuse = False
        await wait_until_connected(notifier_bus)
        await receiver.wait_for("ops", 11, timeout=20)
        await asyncio.sleep(QUIET)
        assert Counter(p.json["server"] for p in receiver.posts["ops"]) == Counter(f"s{i}" for i in range(11))
    finally:
        await notifier.close()
        await notifier_bus.close()
        await agents.close()
        await delete_queues(amqp_url, topology)
