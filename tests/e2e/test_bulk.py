"""Bulk commands end to end: one `command` or `container` request with `servers` patterns,
answered once per matched server and then `bulk_done`. Real gateways and agents driving
emulated consoles, over both buses."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Any

from resofleet.contracts import Role
from resofleet.gateway.security import Security
from resofleet.gateway.settings import Limits
from resofleet.gateway.tokens import Keyring, new_secret
from tests.integration.gateway.client import Client, RecordingClient
from tests.support.timing import AT_ONCE

from .conftest import emulated, servers_online

Message = dict[str, Any]

#: Seconds a save takes on the consoles of the concurrency test: long against the
#: gateway's and the bus's own delays (milliseconds), so overlaps are unmistakable.
SLOW_SAVE = 0.4
#: Seconds by which two commands must overlap at the agents to count as in flight together
#: (the audit log's times are rounded to the millisecond).
OVERLAP = 0.05


async def bulk(client: Client, message: Message, timeout: float = 30.0) -> list[Message]:
    """Send a bulk request; every message answering it (its `id`), up to and including
    `bulk_done`, or the one `error` that refuses it whole (an error without `server`)."""
    message = {"id": f"bulk-{uuid.uuid4().hex[:8]}", **message}
    await client.send(message)
    got: list[Message] = []
    async with asyncio.timeout(timeout):
        while True:
            reply = await client.expect(lambda m: m.get("id") == message["id"])
            got.append(reply)
            if reply["type"] == "bulk_done" or (reply["type"] == "error" and "server" not in reply):
                return got


def by_server(replies: list[Message]) -> dict[str, Message]:
    """The per-server replies of a bulk request, each server once."""
    found: dict[str, Message] = {}
    for reply in replies[:-1]:
        assert reply["server"] not in found, reply
        found[reply["server"]] = reply
    return found


async def test_a_bulk_save_runs_on_every_matched_server_of_two_agents(fleet):
    """`save` on ["eu-*", "lab"]: one command_response per server, each with its server,
    the request's id and outcome executed, then bulk_done; a server not matched never runs it."""
    await fleet.agent("eu-1", "eu-2", name="host-a")
    await fleet.agent("eu-3", "lab", "us-1", name="host-b")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    watcher = await fleet.client(gateway.url, cls=RecordingClient)
    await servers_online(client, ["eu-1", "eu-2", "eu-3", "lab", "us-1"])

    replies = await bulk(client, {"type": "command", "command": "save", "servers": ["eu-*", "lab"], "id": 7})
    done = replies[-1]
    assert done == {"type": "bulk_done", "results": {"eu-1": "ok", "eu-2": "ok", "eu-3": "ok", "lab": "ok"}, "id": 7}
    answers = by_server(replies)
    assert sorted(answers) == ["eu-1", "eu-2", "eu-3", "lab"]
    assert {(m["type"], m["command"], m["id"], m["outcome"]) for m in answers.values()} == {
        ("command_response", "save", 7, "executed")
    }
    assert all(m["output"] == "" for m in answers.values())  # save prints nothing

    # A marker typed on us-1 arrives after anything the bulk could have made it print.
    marker = f"unban marker-{uuid.uuid4().hex[:8]}"
    await client.request({"type": "command", "command": marker, "server": "us-1"})
    await watcher.seen(lambda m: m["type"] == "container_output" and m["server"] == "us-1" and m["output"].endswith(marker))
    assert not watcher.received(lambda m: m["type"] == "container_output" and m["server"] == "us-1"
                                and m["output"].rstrip().endswith(">save"))


async def test_role_and_scope_are_checked_per_server(audit_file, fleet):
    """A token scoped to eu-* reaches eu servers only, and a name outside its scope reads
    as one that does not exist; a viewer's moderator command is forbidden on each server,
    audited per server, and runs nowhere."""
    audit = await audit_file("gateway")
    keyring = Keyring((new_secret(),))
    await fleet.agent("eu-1", "eu-2", name="host-a")
    await fleet.agent("us-1", name="host-b")
    gateway = await fleet.gateway(security=Security(keyring=keyring), audit=audit.log)

    async def client_as(sub: str, role: Role, servers: list[str] | None) -> RecordingClient:
        token = keyring.issue(role=role, sub=sub, servers=servers, ttl=600)
        return await fleet.client(gateway.url, cls=RecordingClient,
                                  additional_headers={"Authorization": f"Bearer {token}"})

    root = await client_as("root", Role.ADMIN, None)
    await servers_online(root, ["eu-1", "eu-2", "us-1"])
    eu_mod = await client_as("eu-mod", Role.MODERATOR, ["eu-*"])
    viewer = await client_as("vic", Role.VIEWER, None)

    marker = f"unban scoped-{uuid.uuid4().hex[:8]}"
    replies = await bulk(eu_mod, {"type": "command", "command": marker, "servers": ["*"]})
    assert replies[-1]["results"] == {"eu-1": "ok", "eu-2": "ok"}
    assert not any("us-1" in f for f in eu_mod.frames)

    # A plain name outside the scope is answered exactly as one that does not exist.
    hidden = await bulk(eu_mod, {"type": "command", "command": "users", "servers": ["us-1"], "id": "x"})
    absent = await bulk(eu_mod, {"type": "command", "command": "users", "servers": ["zz-9"], "id": "x"})
    assert len(hidden) == len(absent) == 1
    assert json.loads(json.dumps(hidden[0]).replace("us-1", "zz-9")) == absent[0]
    assert (hidden[0]["code"], hidden[0]["outcome"]) == ("unknown_server", "not_executed")

    # An operator command from a moderator, and a moderator command from a viewer.
    save = await bulk(eu_mod, {"type": "command", "command": "save", "servers": ["eu-*"]})
    assert save[-1]["results"] == {"eu-1": "forbidden", "eu-2": "forbidden"}
    ban = f"unban viewer-{uuid.uuid4().hex[:8]}"
    forbidden = await bulk(viewer, {"type": "command", "command": ban, "servers": ["*"]})
    assert forbidden[-1]["results"] == {"eu-1": "forbidden", "eu-2": "forbidden", "us-1": "forbidden"}
    errors = by_server(forbidden)
    assert {(m["code"], m["outcome"]) for m in errors.values()} == {("forbidden", "not_executed")}
    assert "needs moderator" in errors["us-1"]["message"]

    records = await audit.refusals("forbidden", 5)
    assert sorted((r["who"], r["server"]) for r in records) == [
        ("eu-mod", "eu-1"), ("eu-mod", "eu-2"), ("vic", "eu-1"), ("vic", "eu-2"), ("vic", "us-1"),
    ]
    assert [r["command"] for r in records if r["who"] == "vic"] == [ban] * 3
    scope = await audit.refusals("out_of_scope", 2)  # as `server` outside the scope is
    assert sorted((r["who"], r["server"]) for r in scope) == [("eu-mod", "us-1"), ("eu-mod", "zz-9")]

    # The marker ran on the eu consoles and nowhere else; the viewer's unban nowhere.
    check = f"unban check-{uuid.uuid4().hex[:8]}"
    await bulk(root, {"type": "command", "command": check, "servers": ["*"]})
    for server in ("eu-1", "eu-2", "us-1"):
        await root.seen(lambda m, s=server: m["type"] == "container_output" and m["server"] == s and m["output"].endswith(check))
    ran = {m["server"] for m in root.received(lambda m: m["type"] == "container_output" and m["output"].endswith(marker))}
    assert ran == {"eu-1", "eu-2"}
    assert not root.received(lambda m: m["type"] == "container_output" and m["output"].endswith(ban))


async def test_patterns_matching_nothing_are_one_unknown_server_error(fleet):
    """A set of patterns that matches no server is one error, and nothing else follows."""
    await fleet.agent("eu-1")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["eu-1"])
    [error] = await bulk(client, {"type": "container", "action": "stop", "servers": ["nowhere-*", "lab-?"], "id": 3})
    assert (error["type"], error["code"], error["id"], error["outcome"]) == ("error", "unknown_server", 3, "not_executed")
    assert "'nowhere-*'" in error["message"]
    pong = await client.request({"type": "ping", "id": "after"})
    assert pong == {"type": "pong", "id": "after"}
    assert not [m for m in client.skipped if m.get("id") == 3]
    status = await client.request({"type": "get_status", "server": "eu-1"})
    assert status["status"]["status"] == "running"

    both = await bulk(client, {"type": "command", "command": "save", "server": "eu-1", "servers": ["eu-*"], "id": 4})
    assert [(m["code"], m["outcome"]) for m in both] == [("bad_request", "not_executed")]


async def test_an_offline_server_answers_at_once_and_a_lost_one_does_not_hold_up_the_rest(fleet):
    """eu-4's agent is gone before the bulk (server_offline, first and at once), eu-3's
    agent goes while it holds a 30 s save (server_lost, at once), eu-1 and eu-2 save."""
    await fleet.agent("eu-1", "eu-2", name="host-a")
    doomed = await fleet.agent(emulated("eu-3", "--tty", "--latency", "save=30"), name="host-b")
    gone = await fleet.agent("eu-4", name="host-c")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url, cls=RecordingClient)
    await servers_online(client, ["eu-1", "eu-2", "eu-3", "eu-4"])
    await gone.close()
    await servers_online(client, ["eu-1", "eu-2", "eu-3"])

    loop = asyncio.get_running_loop()
    started = loop.time()
    sending = asyncio.create_task(bulk(client, {"type": "command", "command": "save", "servers": ["eu-*"]}, timeout=20))
    await client.seen(lambda m: m["type"] == "container_output" and m["server"] == "eu-3" and m["output"].endswith(">save"))
    closing = asyncio.create_task(doomed.close())
    closed = loop.time()
    replies = await sending
    answered = loop.time() - closed
    await closing

    assert replies[-1]["results"] == {"eu-1": "ok", "eu-2": "ok", "eu-3": "server_lost", "eu-4": "server_offline"}
    assert (replies[0]["server"], replies[0]["code"], replies[0]["outcome"]) == ("eu-4", "server_offline", "not_executed")
    answers = by_server(replies)
    assert (answers["eu-3"]["code"], answers["eu-3"]["outcome"]) == ("server_lost", "unknown")
    assert answered < AT_ONCE, answered
    assert loop.time() - started < 15  # far below the save's 30 s


def intervals(records: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """When each audited command ran at its agent: (start, end), in seconds."""
    spans = []
    for record in records:
        end = datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()
        spans.append((end - record["duration"], end))
    return spans


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals that overlap by more than OVERLAP at any moment."""
    edges = sorted([(s + OVERLAP / 2, 1) for s, _ in spans] + [(e - OVERLAP / 2, -1) for _, e in spans],
                   key=lambda edge: (edge[0], edge[1]))
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


async def test_at_most_bulk_concurrency_servers_are_in_flight_at_once(audit_file, fleet):
    """With bulk_concurrency 2 and six servers whose saves take 0.4 s, the agents' audit
    logs show exactly two saves at a time, and the whole takes three rounds."""
    slow = ("--latency", f"save={SLOW_SAVE}")
    audits = [await audit_file("agent-a"), await audit_file("agent-b")]
    await fleet.agent(*(emulated(f"eu-{i}", *slow) for i in (1, 2, 3)), name="host-a", audit=audits[0].log)
    await fleet.agent(*(emulated(f"eu-{i}", *slow) for i in (4, 5, 6)), name="host-b", audit=audits[1].log)
    gateway = await fleet.gateway(bulk_concurrency=2)
    client = await fleet.client(gateway.url)
    servers = [f"eu-{i}" for i in range(1, 7)]
    await servers_online(client, servers)

    loop = asyncio.get_running_loop()
    started = loop.time()
    replies = await bulk(client, {"type": "command", "command": "save", "servers": ["eu-*"]})
    took = loop.time() - started
    assert replies[-1]["results"] == dict.fromkeys(servers, "ok")

    records = [r for a in audits for r in await a.records() if r["command"] == "save"]
    assert sorted(r["server"] for r in records) == servers
    assert most_at_once(intervals(records)) == 2
    assert took >= 3 * SLOW_SAVE, took  # three rounds of two, never more at once
    print(f"\nbulk save over 6 servers, 2 at a time, {SLOW_SAVE} s each: {took:.2f} s")


async def test_a_bulk_container_restart_restarts_each_matched_server(fleet):
    """`container restart` on ["lab-*"]: container_response per server, each console
    restarted (its restart count grows), bulk_done ok."""
    await fleet.agent("lab-1", name="host-a")
    await fleet.agent("lab-2", "prod", name="host-b")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["lab-1", "lab-2", "prod"])
    before = {s: (await client.request({"type": "get_status", "server": s}))["status"]["restarts"]
              for s in ("lab-1", "lab-2", "prod")}

    replies = await bulk(client, {"type": "container", "action": "restart", "servers": ["lab-*"], "id": 5}, timeout=60)
    assert replies[-1] == {"type": "bulk_done", "results": {"lab-1": "ok", "lab-2": "ok"}, "id": 5}
    answers = by_server(replies)
    assert {(m["type"], m["action"], m["outcome"]) for m in answers.values()} == {("container_response", "restart", "executed")}
    after = {s: (await client.request({"type": "get_status", "server": s}, timeout=15))["status"]["restarts"]
             for s in ("lab-1", "lab-2", "prod")}
    assert after["lab-1"] == before["lab-1"] + 1 and after["lab-2"] == before["lab-2"] + 1
    assert after["prod"] == before["prod"]


async def test_a_bulk_request_costs_a_rate_limit_token_per_server(fleet):
    """A moderator with a burst of 4 runs one bulk command over three servers (3 tokens);
    the next, at once, is one `rate_limited` error and runs nowhere."""
    keyring = Keyring((new_secret(),))
    limits = Limits(command_rate=0.1, command_burst=4)  # a token every 10 s: no refill here
    await fleet.agent("eu-1", "eu-2", name="host-a")
    await fleet.agent("eu-3", name="host-b")
    gateway = await fleet.gateway(security=Security(keyring=keyring, limits=limits))
    headers = {"Authorization": f"Bearer {keyring.issue(role=Role.ADMIN, sub='root', ttl=600)}"}
    root = await fleet.client(gateway.url, cls=RecordingClient, additional_headers=headers)
    await servers_online(root, ["eu-1", "eu-2", "eu-3"])
    token = keyring.issue(role=Role.MODERATOR, sub="mod", ttl=600)
    mod = await fleet.client(gateway.url, additional_headers={"Authorization": f"Bearer {token}"})

    first, second = (f"unban limited-{n}-{uuid.uuid4().hex[:8]}" for n in (1, 2))
    replies = await bulk(mod, {"type": "command", "command": first, "servers": ["eu-*"]})
    assert replies[-1]["results"] == {"eu-1": "ok", "eu-2": "ok", "eu-3": "ok"}
    [limited] = await bulk(mod, {"type": "command", "command": second, "servers": ["eu-*"], "id": "again"})
    assert (limited["code"], limited["id"], limited["outcome"]) == ("rate_limited", "again", "not_executed")
    assert "bulk request one per server" in limited["message"]

    marker = f"unban after-{uuid.uuid4().hex[:8]}"
    await bulk(root, {"type": "command", "command": marker, "servers": ["eu-*"]})
    for server in ("eu-1", "eu-2", "eu-3"):
        await root.seen(lambda m, s=server: m["type"] == "container_output" and m["server"] == s and m["output"].endswith(marker))
    assert not root.received(lambda m: m["type"] == "container_output" and m["output"].endswith(second))


async def test_patterns_that_match_nothing_are_paid_for_before_they_are_expanded(fleet):
    """Each pattern of a bulk request costs a token before it is matched against the
    fleet: a moderator's frame of 4 patterns matching nothing empties a burst of 4, and
    the next request at once is `rate_limited` though nothing ran."""
    keyring = Keyring((new_secret(),))
    limits = Limits(command_rate=0.1, command_burst=4)  # a token every 10 s: no refill here
    await fleet.agent("eu-1", name="host-a")
    gateway = await fleet.gateway(security=Security(keyring=keyring, limits=limits))
    headers = {"Authorization": f"Bearer {keyring.issue(role=Role.ADMIN, sub='root', ttl=600)}"}
    root = await fleet.client(gateway.url, additional_headers=headers)
    await servers_online(root, ["eu-1"])  # an admin waits: no token of the moderator's spent
    token = keyring.issue(role=Role.MODERATOR, sub="mod", ttl=600)
    mod = await fleet.client(gateway.url, additional_headers={"Authorization": f"Bearer {token}"})
    [nothing] = await bulk(mod, {"type": "command", "command": "users",
                                 "servers": ["zz-*", "yy-*", "xx-*", "ww-*"], "id": 1})
    assert (nothing["code"], nothing["id"]) == ("unknown_server", 1)
    [limited] = await bulk(mod, {"type": "command", "command": "users", "servers": ["eu-1"], "id": 2})
    assert (limited["code"], limited["id"]) == ("rate_limited", 2)
