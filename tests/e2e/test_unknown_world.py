"""A command for a world the server does not have runs nowhere, end to end.

``world`` naming no world of the server (a name it does not list, an index past its last
world) is answered ``error unknown_world``; the command never reaches the console (no echo
on the stream, the agent's audit log says so), no world's settings change and the focus
stays where it was. Real agents driving emulated consoles, over LocalBus and RabbitMQ.
"""

from __future__ import annotations

import pytest

from tests.integration.gateway.client import RecordingClient

from .conftest import servers_online

#: The default scenario's worlds, by index, and the one focused after startup.
WORLDS = ["Harbor Lounge", "Night Market"]
FOCUSED = "Night Market"


def settings(worlds: dict) -> list[tuple]:
    return [(w["name"], w["maxUsers"], w["accessLevel"], w["description"]) for w in worlds["output"]]


@pytest.mark.parametrize(
    ("world", "words"),
    [
        ("No Such World", "no world named 'No Such World'"),
        (2, "no world at index 2"),
        (7, "no world at index 7"),
        ("9", "no world at index 9"),  # digits are an index to the console
        ("night market", "no world named 'night market'"),
    ],
)
async def test_an_unknown_world_is_refused_and_nothing_runs(fleet, audit_file, world, words):
    """`maxUsers 3` for an unknown world: `unknown_world`, nothing echoed, nothing changed."""
    agent_audit = await audit_file("agent")
    await fleet.agent("alpha", audit=agent_audit.log)
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url, cls=RecordingClient)
    await servers_online(client, ["alpha"])
    before = await client.request({"type": "get_worlds"})
    assert [w["name"] for w in before["output"]] == WORLDS

    reply = await client.request({"type": "command", "command": "maxUsers 3", "world": world, "id": "w"})
    assert (reply["type"], reply["code"], reply["id"], reply["server"]) == ("error", "unknown_world", "w", "alpha")
    assert words in reply["message"] and "get_worlds" in reply["message"]

    # a marker after it: once its echo streamed, anything the refused command printed has too
    marker = await client.request({"type": "command", "command": "version"})
    assert marker["type"] == "command_response"
    await client.seen(lambda m: m["type"] == "container_output" and m["output"].endswith(">version"))
    streamed = [m["output"] for m in client.received(lambda m: m["type"] == "container_output")]
    assert not [line for line in streamed if "maxUsers" in line or "focus" in line], streamed

    after = await client.request({"type": "get_worlds"})
    assert settings(after) == settings(before)
    status = await client.request({"type": "command", "command": "status"})
    assert status["output"].splitlines()[0] == f"Name: {FOCUSED}"
    records = [(r["command"], r["outcome"]) for r in await agent_audit.records()]
    assert records == [("maxUsers 3", "unknown_world"), ("version", "ok"), ("status", "ok")]


async def test_a_known_world_by_name_or_index_still_runs_there(fleet):
    """The same command for a world the server has runs in it and puts the focus back."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["alpha"])

    by_name = await client.request({"type": "command", "command": "maxUsers 3", "world": "Harbor Lounge"})
    by_index = await client.request({"type": "command", "command": "maxUsers 5", "world": 1})
    by_digits = await client.request({"type": "command", "command": "description digits", "world": "0"})
    assert [r["type"] for r in (by_name, by_index, by_digits)] == ["command_response"] * 3
    worlds = await client.request({"type": "get_worlds"})
    assert [(w["name"], w["maxUsers"]) for w in worlds["output"]] == [("Harbor Lounge", 3), ("Night Market", 5)]
    assert worlds["output"][0]["description"] == "digits"
    status = await client.request({"type": "command", "command": "status"})
    assert status["output"].splitlines()[0] == f"Name: {FOCUSED}"
