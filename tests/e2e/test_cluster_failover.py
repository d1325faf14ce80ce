"""A fleet on a three-node RabbitMQ cluster of the test's own loses the node its agent and
its gateway are connected to (SIGKILL) while clients work: `resofleet agent` as its own
process with every node in `[bus] url`, a gateway over an AmqpBus with the same list, and
closed-loop clients tagging every command. Every client is served again within a bound,
nothing runs twice, nothing hangs."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from resofleet.bus import AmqpBus
from resofleet.contracts import Topology
from resofleet.gateway import Gateway
from resofleet.gateway.routing import Timeouts
from tests.integration.gateway.client import Client, wait_until
from tests.support.rabbit_node import rabbit_cluster
from tests.support.timing import AT_ONCE

from .closed_loop import LoopClient, audited, check_at_most_once, until
from .agent_cli import start_agent
from .test_commands import START_TIMEOUT

pytestmark = pytest.mark.amqp

#: Closed-loop clients working throughout.
CLIENTS = 6
#: The gateway's timeout for a console command: short, so a hang would show quickly.
COMMAND_TIMEOUT = 5.0
#: Commands each client gets answered before the node is killed, and after.
BEFORE, AFTER = 3, 3
#: Seconds within which every client is served again once the node is gone: both
#: processes reconnect to the next node at once (a round trip) and restore their queues
#: there after RESTORE_SETTLE (1 s), the agent declaring its server's queue; the registry waits out its own link; this leaves room for a
#: second attempt (RECONNECT_INTERVAL) should the first node tried not have noticed the
#: loss yet, on two shared cores.
RECOVER_WITHIN = 10.0


async def test_killing_the_node_of_an_agent_and_a_gateway_loses_nothing_and_runs_nothing_twice(tmp_path):
    """SIGKILL the node both are connected to: every client is served again within
    RECOVER_WITHIN, every request is answered within its timeout, every command answered
    as run is in the agent's audit exactly once, and no tag runs or echoes twice."""
    async with rabbit_cluster(tmp_path / "cluster", size=3) as cluster:
        prefix = f"cluster-{uuid.uuid4().hex[:8]}."
        urls = ", ".join(f'"{url}"' for url in cluster.urls)
        cli = await start_agent(tmp_path, bus_url=f"[{urls}]", prefix=prefix)
        audit = cli.audit
        bus = AmqpBus(cluster.urls, topology=Topology(prefix=prefix), name="cluster-gateway")
        gateway = Gateway(bus, host="127.0.0.1", port=0, timeouts=Timeouts(command=COMMAND_TIMEOUT))
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        try:
            await cli.serving()
            await bus.start()
            await gateway.start()
            first = cluster.nodes[0]
            assert bus.broker == f"amqp://guest:***@127.0.0.1:{first.port}/"
            async with await Client.connect(gateway.url) as probe:

                async def listed() -> bool:
                    reply = await probe.request({"type": "get_servers"})
                    return [s["server"] for s in reply["servers"] if s["online"]] == ["eu-1"]

                await wait_until(listed, timeout=START_TIMEOUT, what="eu-1 online")
            connections = await first.ctl("list_connections", "client_properties")
            for name in ("resofleet-agent host-a", "cluster-gateway"):  # both on the first node
                assert name in connections, connections

            clients = [
                LoopClient(f"c{i}", [gateway.url], "eu-1", timeout=COMMAND_TIMEOUT + AT_ONCE)
                for i in range(CLIENTS)
            ]
            tasks = [asyncio.create_task(c.run(stop)) for c in clients]
            loop = asyncio.get_running_loop()
            await until(lambda: all(c.successes_after(0) >= BEFORE for c in clients),
                        timeout=START_TIMEOUT, what="every client served")

            await first.stop()  # SIGKILL
            killed = loop.time()
            await until(lambda: all(c.successes_after(killed) >= AFTER for c in clients),
                        timeout=RECOVER_WITHIN + COMMAND_TIMEOUT, what="every client served again")
            stop.set()
            async with asyncio.timeout(COMMAND_TIMEOUT + 2 * AT_ONCE):
                await asyncio.gather(*tasks)  # raises if any request went unanswered
            served = [c.served_after(killed) for c in clients]
            recovered = max(s for s in served if s is not None) - killed
            assert bus.broker != f"amqp://guest:***@127.0.0.1:{first.port}/"

            def all_audited() -> bool:
                runs = {tag for (tag, outcome) in audited(audit) if outcome == "ok"}
                return all(s.tag in runs for c in clients for s in c.history if s.ok)

            await until(all_audited, timeout=5.0, what="every answered command audited")
            kinds = check_at_most_once(clients, audited(audit))
            print(f"\nnode killed -> every client served again: {recovered * 1000:.0f} ms; endings: {kinds}")
            assert recovered < RECOVER_WITHIN, recovered
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await gateway.close()
            await bus.close()
            await cli.stop()
