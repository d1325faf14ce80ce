"""Security end to end: every role against one console command of every permission class,
and against container actions, over a real gateway, real agents and emulated consoles.

The classes come from :mod:`resofleet.contracts.permissions`, so a class added there (or a command
moved between classes) fails here until this test picks a command for it. Both directions
are checked: a role allowed to run a command gets the console's real reply, a lower role
gets ``error forbidden`` naming the role it needs, and the console never sees it (no echo
on the output stream, no record in the agent's audit log).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from resofleet.contracts import COMMAND_ROLES, CONTAINER_ROLE, Role, command_name, required_role
from resofleet.gateway.security import Security
from resofleet.gateway.tokens import Keyring, new_secret
from tests.integration.gateway.client import RecordingClient

from .conftest import servers_online

#: One harmless command per permission class that the default emulator answers, and the
#: last line of its reply. None of them changes anything another step depends on.
HARMLESS: dict[Role, tuple[str, str]] = {
    Role.VIEWER: ("version", "2026.5.27.1300"),
    Role.MODERATOR: ("unban Nobody", "Removed 0 matching bans"),
    Role.OPERATOR: ("gc", "GC finished"),
    Role.ADMIN: ("message Mira hello", "Message sent!"),
}
#: A command the permission table does not know: it needs admin, and the console says so.
UNKNOWN = ("frobnicate now", "Unknown command")
CONTAINER_ACTIONS = ("start", "stop", "restart")


def permission_classes() -> dict[Role, list[str]]:
    classes: dict[Role, list[str]] = {}
    for name, role in COMMAND_ROLES.items():
        classes.setdefault(role, []).append(name)
    return classes


def echoes(frames: list, command: str) -> int:
    """How many container_output lines show ``command`` typed at the prompt."""
    messages = map(json.loads, frames)
    return sum(1 for m in messages if m["type"] == "container_output" and m["output"].endswith(">" + command))


def test_every_permission_class_has_a_command_picked_here():
    """Each role of the permission table has one harmless command in this test, of that role."""
    classes = permission_classes()
    assert set(classes) == set(Role) == set(HARMLESS)
    for role, (command, _) in HARMLESS.items():
        assert required_role(command) is role and command_name(command) in classes[role]
    assert command_name(UNKNOWN[0]) not in COMMAND_ROLES and required_role(UNKNOWN[0]) is Role.ADMIN
    assert CONTAINER_ROLE is Role.ADMIN


async def test_each_role_runs_exactly_the_commands_of_its_class_and_below(audit_file, fleet):
    """A viewer, moderator, operator and admin each get real replies for their classes and
    `forbidden` naming the needed role for the others, which never reach the console."""
    gateway_audit, agent_audit = await audit_file("gateway"), await audit_file("agent")
    keyring = Keyring((new_secret(),))
    await fleet.agent("m-1", audit=agent_audit.log)
    gateway = await fleet.gateway(security=Security(keyring=keyring), audit=gateway_audit.log)

    def bearer(role: Role, sub: str) -> dict:
        token = keyring.issue(role=role, sub=sub, ttl=600)
        return {"additional_headers": {"Authorization": f"Bearer {token}"}}

    watcher = await fleet.client(gateway.url, cls=RecordingClient, **bearer(Role.ADMIN, "watcher"))
    clients = {
        role: await fleet.client(gateway.url, cls=RecordingClient, **bearer(role, f"the-{role.label}"))
        for role in Role
    }
    await servers_online(watcher, ["m-1"])

    commands = [*HARMLESS.values(), UNKNOWN]
    forbidden_latency: list[float] = []
    for role, client in clients.items():
        for command, last_line in commands:
            needed = required_role(command)
            started = time.perf_counter()
            reply = await client.request({"type": "command", "command": command, "server": "m-1"})
            if role >= needed:
                assert reply["type"] == "command_response", (role, command, reply)
                assert reply["output"].splitlines()[-1] == last_line, (role, command, reply)
            else:
                forbidden_latency.append(time.perf_counter() - started)
                assert (reply["type"], reply["code"], reply["server"]) == ("error", "forbidden", "m-1"), (role, command, reply)
                assert needed.label in reply["message"] and role.label in reply["message"], reply["message"]
        for action in CONTAINER_ACTIONS:
            if role is Role.ADMIN:
                continue  # run last: a restart changes the console under the other checks
            reply = await client.request({"type": "container", "action": action, "server": "m-1"})
            assert (reply["type"], reply["code"]) == ("error", "forbidden"), (role, action, reply)
            assert "admin" in reply["message"] and role.label in reply["message"], reply["message"]

    # Everything above is done; a marker typed now shows up on the stream after any of them.
    marker = f"unban marker-{uuid.uuid4().hex[:8]}"
    await watcher.request({"type": "command", "command": marker, "server": "m-1"})
    await watcher.seen(lambda m: m["type"] == "container_output" and m["output"].endswith(">" + marker))
    for command, _ in commands:
        allowed = sum(1 for role in Role if role >= required_role(command))
        assert echoes(watcher.frames, command) == allowed, command

    status = await watcher.request({"type": "get_status", "server": "m-1"})
    assert status["status"]["restarts"] == 0 and status["status"]["status"] == "running"

    executed = [r for r in await agent_audit.records() if r["server"] == "m-1"]
    ran = sorted((r["who"], r["role"], r["command"], r["outcome"]) for r in executed if r["who"] != "watcher")
    assert ran == sorted(
        (f"the-{role.label}", role.label, command, "ok")
        for role in Role
        for command, _ in commands
        if role >= required_role(command)
    )

    refused = [r for r in await gateway_audit.records() if r["outcome"] == "forbidden"]
    expected = sorted(
        [(f"the-{role.label}", role.label, command) for role in Role for command, _ in commands if role < required_role(command)]
        + [(f"the-{role.label}", role.label, f"container {a}") for role in Role if role < Role.ADMIN for a in CONTAINER_ACTIONS]
    )
    assert sorted((r["who"], r["role"], r["command"]) for r in refused) == expected
    assert all(r["server"] == "m-1" and r["source"] == "gateway" for r in refused)

    # Last: the admin may restart the server (and it really restarts).
    reply = await clients[Role.ADMIN].request({"type": "container", "action": "restart", "server": "m-1"}, timeout=30)
    assert (reply["type"], reply["action"], reply["server"]) == ("container_response", "restart", "m-1")
    status = await watcher.request({"type": "get_status", "server": "m-1"}, timeout=15)
    assert status["status"]["restarts"] == 1
    print(f"\nforbidden replies: {len(forbidden_latency)}, median "
          f"{sorted(forbidden_latency)[len(forbidden_latency) // 2] * 1000:.2f} ms, "
          f"max {max(forbidden_latency) * 1000:.2f} ms")


@pytest.mark.parametrize(
    ("command", "needed"),
    [
        ("role Mira Admin", Role.OPERATOR),
        ('role "Mira" builder', Role.OPERATOR),
        ("role Mira Moderator", Role.OPERATOR),
        ("role Mira Guest", Role.MODERATOR),
        ("role Mira Spectator", Role.MODERATOR),
        ("role Mira", Role.MODERATOR),  # the console answers with its usage line
        ("import /etc/passwd", Role.ADMIN),
        ("importMinecraft /srv", Role.ADMIN),
    ],
)
def test_roles_that_reach_beyond_the_granter_or_the_host_need_more(command, needed):
    """Granting a world role at or above Moderator (Moderator < Builder < Admin in
    Resonite) needs operator; reading host files (import) needs admin."""
    assert required_role(command) is needed


async def test_a_moderator_cannot_make_anyone_world_admin(audit_file, fleet):
    """A moderator's `role Mira Admin` is forbidden and never reaches the console; `role
    Mira Guest` runs; an operator's `import` of a host file is forbidden too."""
    agent_audit = await audit_file("agent")
    keyring = Keyring((new_secret(),))
    await fleet.agent("m-2", audit=agent_audit.log)
    gateway = await fleet.gateway(security=Security(keyring=keyring))

    def bearer(role: Role, sub: str) -> dict:
        return {"additional_headers": {"Authorization": f"Bearer {keyring.issue(role=role, sub=sub, ttl=600)}"}}

    moderator = await fleet.client(gateway.url, cls=RecordingClient, **bearer(Role.MODERATOR, "mod"))
    operator = await fleet.client(gateway.url, cls=RecordingClient, **bearer(Role.OPERATOR, "op"))
    await servers_online(moderator, ["m-2"])
    reply = await moderator.request({"type": "command", "command": "role Mira Admin", "server": "m-2"})
    assert (reply["type"], reply["code"]) == ("error", "forbidden") and "operator" in reply["message"]
    reply = await operator.request({"type": "command", "command": "import /etc/passwd", "server": "m-2"})
    assert (reply["type"], reply["code"]) == ("error", "forbidden") and "admin" in reply["message"]
    reply = await moderator.request({"type": "command", "command": "role Mira Guest", "server": "m-2", "world": 0})
    assert reply["type"] == "command_response" and reply["output"] == "Mira now has role Guest!", reply
    worlds = await moderator.request({"type": "get_worlds", "server": "m-2"})
    roles = {u["username"]: u["role"] for u in worlds["output"][0]["users_list"]}
    assert roles["Mira"] == "Guest"
    ran = [r["command"] for r in await agent_audit.records() if r["server"] == "m-2" and r["who"] in ("mod", "op")]
    assert ran == ["role Mira Guest"]
