"""Every reply to a command or a container action says whether it ran: ``outcome`` is
``executed``, ``not_executed`` or ``unknown``, stated by whoever knows (the gateway for what
it refused or lost track of, the agent for what it did). Real gateways, agents and
emulators, over LocalBus and RabbitMQ."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from resofleet.bus import AmqpBus
from resofleet.gateway import Gateway, Timeouts
from tests.integration.gateway.client import Client, wait_until

from .conftest import emulated, servers_online

#: Seconds the gateway gives ``save`` in these tests; the emulator's save takes 30.
SHORT_SAVE = 2.0


async def test_commands_and_container_actions_that_ran_say_executed(fleet):
    """command_response and container_response carry outcome executed; nothing else changes."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["alpha"])

    reply = await client.request({"type": "command", "command": "version", "id": 1})
    assert set(reply) == {"type", "command", "output", "server", "id", "outcome"}
    assert (reply["type"], reply["outcome"]) == ("command_response", "executed")
    restart = await client.request({"type": "container", "action": "restart"}, timeout=30)
    assert (restart["type"], restart["outcome"]) == ("container_response", "executed")
    status = await client.request({"type": "get_status"}, timeout=15)
    assert "outcome" not in status  # reads change nothing: no outcome to state


async def test_refusals_before_the_console_say_not_executed(fleet):
    """Refused by the gateway (bad input, unknown or offline server) or by the agent before
    the console got the line (the headless is stopped): not_executed."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["alpha"])

    await client.send('{"type": "command", "command": "users\\nshutdown", "id": "cc"}')
    control = await client.expect(lambda m: m.get("id") == "cc")
    unknown = await client.request({"type": "command", "command": "users", "server": "No Such"})
    offline = await client.request({"type": "command", "command": "users", "server": "nobody"})
    assert [(m["code"], m["outcome"]) for m in (control, unknown, offline)] == [
        ("bad_request", "not_executed"), ("unknown_server", "not_executed"),
        ("server_offline", "not_executed"),
    ]
    stopped = await client.request({"type": "container", "action": "stop"}, timeout=30)
    assert stopped["outcome"] == "executed"
    refused = await client.request({"type": "command", "command": "users"})
    assert (refused["type"], refused["outcome"]) == ("error", "not_executed")
    pong = await client.request({"type": "ping"})
    assert "outcome" not in pong


async def test_a_command_handed_to_the_console_without_an_answer_says_unknown(fleet):
    """The console took the line and died (crash), or gave no answer in time (a 30 s save
    against a shorter timeout): the command may have run, and the reply says unknown."""
    await fleet.agent(emulated("crashy"), emulated("slow", "--latency", "save=30"))
    gateway = await fleet.gateway(timeouts=Timeouts(long_commands={"save": SHORT_SAVE}))
    client = await fleet.client(gateway.url)
    await servers_online(client, ["crashy", "slow"])

    crashed = await client.request({"type": "command", "command": "crash", "server": "crashy"})
    assert (crashed["type"], crashed["outcome"]) == ("error", "unknown")
    late = await client.request({"type": "command", "command": "save", "server": "slow"})
    assert (late["type"], late["code"], late["outcome"]) == ("error", "timeout", "unknown")


@pytest.mark.parametrize("transport", ["amqp"], indirect=True)
async def test_bus_unavailable_says_whether_the_request_had_left(fleet, amqp_url, topology, proxy):
    """The gateway's broker link down before the request is sent: not_executed; dropped
    while a command is at the agent: unknown."""
    await fleet.agent(emulated("alpha", "--tty", "--latency", "save=30"))
    parts = urlsplit(amqp_url)
    creds = parts.netloc.rpartition("@")[0]
    bus = AmqpBus(urlunsplit(parts._replace(netloc=f"{creds}@127.0.0.1:{proxy.port}")), topology=topology)
    await bus.start()
    gateway = Gateway(bus, host="127.0.0.1", port=0)
    await gateway.start()
    try:
        async with await Client.connect(gateway.url) as client:
            await servers_online(client, ["alpha"])
            await client.send({"type": "command", "command": "save", "id": "save"})
            await client.expect(lambda m: m["type"] == "container_output" and m["output"].endswith("save"))
            proxy.refuse = True
            proxy.cut()
            dropped = await client.expect(lambda m: m.get("id") == "save")
            assert (dropped["code"], dropped["outcome"]) == ("bus_unavailable", "unknown")
            await wait_until(lambda: not bus.connected, what="the gateway's link down")
            refused = await client.request({"type": "command", "command": "users", "server": "alpha"})
            assert (refused["code"], refused["outcome"]) == ("bus_unavailable", "not_executed")
    finally:
        await gateway.close()
        await bus.close()
