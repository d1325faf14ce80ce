"""get_output after an agent restart: a ``since`` from the old epoch never skips lines of
the new one, whether or not the client sends ``epoch``; a client that never sends it
still gets exactly the lines after its ``since`` while the epoch stays the same.

Real agents (stopped and started again, so the server's output gets a new epoch), real
gateways and clients, over LocalBus and over RabbitMQ.
"""

from __future__ import annotations

from typing import Any

from tests.integration.gateway.client import Client, wait_until

from .conftest import Fleet, servers_online

#: Seconds the new agent has to start its console and answer a command.
RESTART_WAIT = 30.0


async def last_line(client: Client, command: str) -> dict[str, Any]:
    """Run ``command`` and return the container_output line of its echo."""
    await client.request({"type": "command", "command": command})
    return await client.expect_kept(
        lambda m: m["type"] == "container_output" and m["output"].endswith(f">{command}")
    )


async def restart_agent(fleet: Fleet, client: Client) -> None:
    """Stop the agent serving `alpha` and start a new one (a new epoch), and wait until its
    console answers."""
    old = fleet.agents.pop()
    await old.close()
    await fleet.agent("alpha")

    async def answered() -> bool:
        reply = await client.request({"type": "command", "command": "version", "server": "alpha"})
        return reply["type"] == "command_response"

    await wait_until(answered, timeout=RESTART_WAIT, what="the new agent answering")


async def test_since_without_epoch_after_a_restart_is_a_reset_from_the_new_epochs_start(fleet):
    """A client that never sends `epoch` asks `since` its last seq after the agent
    restarted: `reset: true` and the new epoch from its first line, on a connection that
    asked get_output before the restart and on one that never did."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    asked, fresh = await fleet.client(gateway.url), await fleet.client(gateway.url)
    await servers_online(asked, ["alpha"])
    for _ in range(3):
        line = await last_line(asked, "worlds")
    old_epoch, since = line["epoch"], line["seq"]
    before = await asked.request({"type": "get_output", "since": since})
    assert before["epoch"] == old_epoch

    await restart_agent(fleet, asked)

    for client in (asked, fresh):
        history = await client.request({"type": "get_output", "since": since})
        assert history["type"] == "output_history" and history["epoch"] != old_epoch
        assert history.get("reset") is True
        assert history["lines"][0]["seq"] == 1, history["lines"][:3]
        assert any(l["output"].endswith(">version") for l in history["lines"])


async def test_since_with_the_old_epoch_after_a_restart_is_a_reset(fleet):
    """The documented way (`since` with `epoch`) keeps answering `reset: true` after a restart."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["alpha"])
    line = await last_line(client, "worlds")

    await restart_agent(fleet, client)

    history = await client.request({"type": "get_output", "since": line["seq"], "epoch": line["epoch"]})
    assert history["reset"] is True and history["epoch"] != line["epoch"]
    assert history["lines"][0]["seq"] == 1


async def test_without_epoch_in_one_epoch_since_continues_where_the_last_answer_ended(fleet):
    """A client that never sends `epoch`: its first `since` is answered from the start of
    the ring (`reset: true`: the gateway cannot know which epoch it means); after that,
    while the epoch stays, each `since` gets exactly the lines after it."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["alpha"])
    first = await last_line(client, "worlds")

    everything = await client.request({"type": "get_output", "since": first["seq"]})
    assert everything["reset"] is True and everything["lines"][0]["seq"] == 1
    assert everything["lines"][-1]["seq"] >= first["seq"]
    since = everything["lines"][-1]["seq"]

    later = await last_line(client, "users")
    more = await client.request({"type": "get_output", "since": since})
    assert more.get("reset", False) is False and more["epoch"] == first["epoch"]
    assert [l["seq"] for l in more["lines"]] == list(range(since + 1, more["lines"][-1]["seq"] + 1))
    assert later["seq"] in [l["seq"] for l in more["lines"]]

    nothing_yet = await client.request({"type": "get_output", "since": 0})
    assert nothing_yet.get("reset", False) is False and nothing_yet["lines"][0]["seq"] == 1
