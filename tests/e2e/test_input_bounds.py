"""Integers a client sends are bounded at the gateway's edge, end to end.

An ``id``, ``since``, ``limit`` or ``world`` index beyond what the contract allows (2**53 - 1,
the largest integer a JavaScript client holds exactly) is answered ``bad_request`` naming
the field; nothing reaches an agent, nothing is logged as a failure, and the connection
lives on. Over LocalBus and over RabbitMQ.
"""

from __future__ import annotations

import logging

import pytest

from resofleet.agent.server import ManagedServer
from resofleet.contracts import MAX_SAFE_INTEGER

from .conftest import servers_online

HUGE = 2**70

#: (name, request, the field the error names, the id the error echoes)
OVERSIZED: list[tuple[str, dict, str, object]] = [
    ("id on a bus request", {"type": "get_status", "id": HUGE}, "$.id", None),
    ("negative id", {"type": "get_worlds", "id": -HUGE}, "$.id", None),
    ("id one past the bound", {"type": "get_status", "id": MAX_SAFE_INTEGER + 1}, "$.id", None),
    ("id on a ping", {"type": "ping", "id": HUGE}, "$.id", None),
    ("since", {"type": "get_output", "since": HUGE, "id": "since"}, "$.since", "since"),
    ("since one past the bound", {"type": "get_output", "since": MAX_SAFE_INTEGER + 1, "id": "s1"}, "$.since", "s1"),
    ("limit", {"type": "get_output", "limit": HUGE, "id": "limit"}, "$.limit", "limit"),
    ("world index", {"type": "command", "command": "maxUsers 3", "world": HUGE, "id": "w"}, "$.world", "w"),
    ("negative world index", {"type": "command", "command": "maxUsers 3", "world": -1, "id": "w-1"}, "$.world", "w-1"),
]


@pytest.fixture
def seen_by_agents(monkeypatch) -> list[object]:
    """Every request body an agent's handler is given, from agents started after this."""
    seen: list[object] = []
    handle = ManagedServer.handle

    async def recording(self, request, deadline):  # type: ignore[no-untyped-def]
        seen.append(request.body)
        return await handle(self, request, deadline)

    monkeypatch.setattr(ManagedServer, "handle", recording)
    return seen


async def test_integers_past_the_bound_are_bad_request_and_reach_no_agent(fleet, seen_by_agents, caplog):
    """Each oversized integer field is `bad_request` naming it, with nothing sent on the
    bus, no traceback in any log, and the connection still answering."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["alpha"])
    seen_by_agents.clear()

    with caplog.at_level(logging.DEBUG):
        for name, request, field, echoed in OVERSIZED:
            await client.send(request)
            reply = await client.expect(lambda m: m["type"] == "error" or "id" in m)  # not an event
            assert (reply["type"], reply.get("code")) == ("error", "bad_request"), (name, reply)
            assert field in reply["message"], (name, reply["message"])
            assert reply.get("id") == echoed, name
            assert str(HUGE) not in reply["message"]
            assert (await client.request({"type": "ping"}))["type"] == "pong"

    assert seen_by_agents == []
    failures = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert failures == [], [r.getMessage() for r in failures]


async def test_integers_at_the_bound_are_accepted_and_echoed_exactly(fleet):
    """The largest allowed id, since and world index are carried through and answered."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["alpha"])

    largest, smallest = MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER
    assert (await client.request({"type": "get_status", "id": largest}))["id"] == largest
    assert (await client.request({"type": "ping", "id": smallest}))["id"] == smallest
    history = await client.request({"type": "get_output", "since": largest, "limit": 100_000})
    assert history["type"] == "output_history"
    world = await client.request({"type": "command", "command": "users", "world": largest})
    assert (world["type"], world["code"]) == ("error", "unknown_world")
