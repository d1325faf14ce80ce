"""A gateway SIGKILLed while clients work through it: `resofleet agent` and two `resofleet
gateway` processes on the shared broker (their own prefix), closed-loop clients tagging
every command. The clients reconnect to the other gateway and carry on; nothing answered
runs twice, and a command whose answer died with the gateway ran at most once."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.integration.gateway.client import Client, wait_until

from .closed_loop import LoopClient, audited, check_at_most_once, until
from .agent_cli import start_agent
from .test_commands import START_TIMEOUT
from .test_security_cli import started

pytestmark = pytest.mark.amqp

#: Closed-loop clients working throughout.
CLIENTS = 6
#: Seconds a client waits for an answer: the gateway's command timeout (15 s) plus a margin.
ANSWER_WITHIN = 17.0
#: Commands each client gets answered before the kill, and after.
BEFORE, AFTER = 3, 3
#: Seconds within which every client is served by the other gateway: a refused or reset
#: connection is seen at once, a new one opens in milliseconds, and the other gateway is
#: already watching the server.
RECOVER_WITHIN = 5.0


async def test_clients_of_a_killed_gateway_carry_on_through_the_other(tmp_path, amqp_url):
    """SIGKILL gateway A under six closed-loop clients: each reconnects to B and is served
    within RECOVER_WITHIN; every request on a live connection is answered; answered
    commands ran exactly once; commands whose answer was lost ran at most once."""
    prefix = f"gwkill-{uuid.uuid4().hex[:8]}."
    cli = await start_agent(
        tmp_path, bus_url=f'"{amqp_url}"', prefix=prefix, extra="[gateway]\naudit_log = false\n",
        RESOFLEET_LOG_LEVEL="WARNING",
    )
    audit, env = cli.audit, cli.env
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await cli.serving()
        async with (
            started("gateway", "--port", "0", cwd=tmp_path, env=env) as a,
            started("gateway", "--port", "0", cwd=tmp_path, env=env) as b,
        ):
            for gateway in (a, b):
                async with await Client.connect(gateway.url) as probe:

                    async def listed() -> bool:
                        reply = await probe.request({"type": "get_servers"})
                        return [s["server"] for s in reply["servers"] if s["online"]] == ["eu-1"]

                    await wait_until(listed, timeout=START_TIMEOUT, what="eu-1 online")
            clients = [LoopClient(f"c{i}", [a.url, b.url], "eu-1", timeout=ANSWER_WITHIN) for i in range(CLIENTS)]
            tasks = [asyncio.create_task(c.run(stop)) for c in clients]
            loop = asyncio.get_running_loop()
            await until(lambda: all(c.successes_after(0) >= BEFORE for c in clients),
                        timeout=START_TIMEOUT, what="every client served by gateway A")

            a.process.kill()  # SIGKILL
            killed = loop.time()
            await until(lambda: all(c.successes_after(killed) >= AFTER for c in clients),
                        timeout=RECOVER_WITHIN + ANSWER_WITHIN, what="every client served by gateway B")
            stop.set()
            async with asyncio.timeout(ANSWER_WITHIN + 2):
                await asyncio.gather(*tasks)  # raises if any request went unanswered
            assert all(c.connections == 2 for c in clients), [c.connections for c in clients]
            recovered = max(c.served_after(killed) or loop.time() for c in clients) - killed

            def all_audited() -> bool:
                runs = {tag for (tag, outcome) in audited(audit) if outcome == "ok"}
                return all(s.tag in runs for c in clients for s in c.history if s.ok)

            await until(all_audited, timeout=5.0, what="every answered command audited")
            kinds = check_at_most_once(clients, audited(audit))
            lost = [s.tag for c in clients for s in c.history if s.lost]
            ran = {tag for (tag, outcome) in audited(audit) if outcome == "ok"}
            print(
                f"\ngateway killed -> every client served by the other: {recovered * 1000:.0f} ms; "
                f"endings: {kinds}; answers lost: {len(lost)}, of which ran (once): {len(ran & set(lost))}"
            )
            assert recovered < RECOVER_WITHIN, recovered
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cli.stop()
