"""Security end to end: input that tries to become more than one console command, or to
rewrite a terminal, never reaches the console, and the audit log records each attempt on
one line of its own.

Every attempt smuggles a second command (``name PWNED-...``: it would rename the focused
world, which ``get_worlds`` shows) behind a line break, a NUL, an escape sequence or a
Unicode separator, in the command or in the ``world`` field, or is simply too long. The
sender is an admin, so no permission check stands in the way: only the input check does.
"""

from __future__ import annotations

import json


from resofleet.contracts import Role
from resofleet.gateway.security import Security
from resofleet.gateway.tokens import Keyring, new_secret
from tests.integration.gateway.client import RecordingClient

from .conftest import servers_online

#: (name, request fields) of each attempt; each would rename the world to PWNED-<name>.
ATTEMPTS: list[tuple[str, dict]] = [
    (name, {"command": f"version{sep}name PWNED-{name}"})
    for name, sep in [
        ("LF", "\n"), ("CR", "\r"), ("CRLF", "\r\n"), ("NUL", "\x00"), ("TAB", "\t"),
        ("VT", "\x0b"), ("FF", "\x0c"), ("FS", "\x1c"), ("DEL", "\x7f"),
        ("ANSI", "\x1b[2J\x1b[31m"), ("OSC", "\x1b]0;title\x07"), ("CSI8", "\x9b2J"),
        ("NEL", "\x85"), ("LS", "\u2028"), ("PS", "\u2029"),
    ]
] + [("LONG", {"command": "name PWNED-LONG " + "A" * 5000})]
#: The same tricks in the ``world`` field, which the agent sends as ``focus <world>``.
WORLD_ATTEMPTS: list[tuple[str, str]] = [
    ("WORLD-LF", "Night Market\nname PWNED-WORLD-LF"),
    ("WORLD-QUOTE-LF", 'Night Market"\nname PWNED-WORLD-QUOTE-LF'),
    ("WORLD-CR", "Night Market\rname PWNED-WORLD-CR"),
    ("WORLD-LS", "Night Market\u2028name PWNED-WORLD-LS"),
    ("WORLD-NUL", "Night Market\x00name PWNED-WORLD-NUL"),
    ("WORLD-ESC", "\x1b[2JNight Market"),
]
#: A command of 1 MiB: over the 64 KiB frame limit, so the gateway closes with 1009.
HUGE = "name PWNED-HUGE " + "A" * (1 << 20)


async def test_control_characters_separators_and_oversize_commands_never_reach_the_console(audit_file, fleet):
    """CR, LF, NUL, ANSI/OSC escapes, C1 controls, Unicode line separators (in the command
    or the world), a 5000-character and a 1 MiB command are refused, the connection lives
    on (but for the 1 MiB frame: 1009), and the console never runs any of them."""
    gateway_audit, agent_audit = await audit_file("gateway"), await audit_file("agent")
    keyring = Keyring((new_secret(),))
    await fleet.agent("i-1", audit=agent_audit.log)
    gateway = await fleet.gateway(security=Security(keyring=keyring), audit=gateway_audit.log)
    token = keyring.issue(role=Role.ADMIN, sub="mallory", ttl=600)
    headers = {"additional_headers": {"Authorization": f"Bearer {token}"}}
    attacker = await fleet.client(gateway.url, cls=RecordingClient, **headers)
    watcher = await fleet.client(gateway.url, cls=RecordingClient, **headers)
    await servers_online(watcher, ["i-1"])

    accepted = []  # every attempt is sent (and checked at the end) even if one slips through
    for name, fields in ATTEMPTS:
        reply = await attacker.request({"type": "command", "server": "i-1", "id": name, **fields})
        if (reply["type"], reply.get("code"), reply["id"]) != ("error", "bad_request", name):
            accepted.append((name, reply))
        assert "PWNED" not in reply.get("message", "")
        assert (await attacker.request({"type": "ping"}))["type"] == "pong"  # still open

    huge = await fleet.client(gateway.url, cls=RecordingClient, **headers)
    await huge.send({"type": "command", "command": HUGE, "server": "i-1", "id": "HUGE"})
    assert await huge.closed() == 1009

    marker = "unban injection-marker"
    await watcher.request({"type": "command", "command": marker, "server": "i-1"})
    await watcher.seen(lambda m: m["type"] == "container_output" and m["output"].endswith(">" + marker))
    worlds = await watcher.request({"type": "get_worlds", "server": "i-1"})
    names = [w["name"] for w in worlds["output"]]
    assert not accepted and names == ["Harbor Lounge", "Night Market"], ([a for a, _ in accepted], names)
    assert not [f for f in watcher.frames if "PWNED" in f or "\\u001b" in f]
    status = await watcher.request({"type": "get_status", "server": "i-1"})
    assert (status["status"]["status"], status["status"]["restarts"]) == ("running", 0)
    executed = [r["command"] for r in await agent_audit.records()]
    assert executed == [marker]

    # The gateway's audit log: one record per attempt, each on one line, the text intact.
    records = [r for r in await gateway_audit.records() if r["outcome"] == "rejected_input"]
    assert len(records) == len(ATTEMPTS) + 1, [r["command"] for r in records]
    assert all(r["who"] == "mallory" and r["role"] == "admin" for r in records)
    commands = [r["command"] for r in records]
    for name, fields in ATTEMPTS:
        assert fields["command"][:1024] in commands, name
    assert sum(1 for r in records if r.get("truncated")) >= 1  # the 5000-character one, capped
    raw = gateway_audit.path.read_bytes()
    assert raw.count(b"\n") == len(await gateway_audit.records())
    for forbidden in (b"\x1b", b"\r", b"\x00", "\x85".encode(), "\x9b".encode(), "\u2028".encode(), "\u2029".encode(), b"\x7f"):
        assert forbidden not in raw, forbidden
    assert [json.loads(line)["outcome"] for line in raw.splitlines()].count("rejected_input") == len(records)


async def test_a_viewer_cannot_smuggle_a_command_through_the_world_field(audit_file, fleet):
    """A viewer's read-only command whose `world` carries a line break, a NUL, an escape or a
    Unicode separator is refused: nothing runs, the focused world keeps its name."""
    gateway_audit, agent_audit = await audit_file("gateway"), await audit_file("agent")
    keyring = Keyring((new_secret(),))
    await fleet.agent("i-1", audit=agent_audit.log)
    gateway = await fleet.gateway(security=Security(keyring=keyring), audit=gateway_audit.log)
    viewer = await fleet.client(
        gateway.url, cls=RecordingClient,
        additional_headers={"Authorization": f"Bearer {keyring.issue(role=Role.VIEWER, sub='vic', ttl=600)}"},
    )
    await servers_online(viewer, ["i-1"])

    accepted = []
    for name, world in WORLD_ATTEMPTS:
        reply = await viewer.request({"type": "command", "command": "users", "world": world, "server": "i-1", "id": name})
        if (reply["type"], reply.get("code")) != ("error", "bad_request"):
            accepted.append(name)
    worlds = await viewer.request({"type": "get_worlds", "server": "i-1"})
    names = [w["name"] for w in worlds["output"]]
    assert not accepted and names == ["Harbor Lounge", "Night Market"], (accepted, names)
    assert await agent_audit.records() == []
    records = [r for r in await gateway_audit.records() if r["outcome"] == "rejected_input"]
    assert [(r["who"], r["role"], r["command"]) for r in records] == [("vic", "viewer", "users")] * len(WORLD_ATTEMPTS)
