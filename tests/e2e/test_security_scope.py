"""Security end to end: a client scoped to some servers never learns that the others exist.

A client holding a token for ``eu-*`` shares a gateway with ``us-1``, a busy server (engine
chatter, users joining and leaving, frequent polls) that a full-scope admin drives and
restarts meanwhile. Every raw frame the scoped client receives is recorded; none may carry
``us-1``, its agent, its world names, its account or its session ids, except the echo of
the id the client itself typed, in replies worded exactly as for a server that does not
exist at all.
"""

from __future__ import annotations

import json
import time
import uuid

from websockets.exceptions import InvalidStatus

from resofleet.contracts import Role
from resofleet.gateway.security import Security
from resofleet.gateway.tokens import Keyring, new_secret
from resofleet.agent.settings import AgentSettings
from tests.integration.gateway.client import RecordingClient, wait_until

from .conftest import emulated, servers_online

#: Polls every fraction of a second, so us-1 publishes status and worlds changes while
#: the test runs (its activity makes users join and leave every ~0.3 s).
FAST = {"status_interval": 0.3, "worlds_interval": 0.5, "bans_interval": 1.0}
#: What the busy scenario alone has: its account and world names the default one lacks.
BUSY_ONLY = ["FleetHost", "U-FleetHost01", "Club > Midnight", "東京ナイトクラブ", "Quiet Corner",
             "An Extremely Long World Name", "Grief Lord"]

#: Requests naming a server, by kind; each is sent once naming us-1 and once naming zz-9.
PROBES = {
    "command": {"type": "command", "command": "version", "server": "SERVER"},
    "command_in_world": {"type": "command", "command": "users", "world": 0, "server": "SERVER"},
    "get_status": {"type": "get_status", "server": "SERVER"},
    "get_worlds": {"type": "get_worlds", "server": "SERVER"},
    "get_output": {"type": "get_output", "server": "SERVER", "since": 0},
    "container": {"type": "container", "action": "restart", "server": "SERVER"},
    "subscribe": {"type": "subscribe", "servers": ["SERVER"]},
    "subscribe_mixed": {"type": "subscribe", "servers": ["eu-1", "SERVER"]},
}


def with_server(probe: dict, server: str) -> dict:
    return json.loads(json.dumps(probe).replace("SERVER", server))


def mentions(frame: str | bytes, secrets: list[str]) -> list[str]:
    text = frame.decode() if isinstance(frame, bytes) else frame
    decoded = json.dumps(json.loads(text), ensure_ascii=False)  # \\u escapes spelled out
    return [s for s in secrets if s in text or s in decoded]


class ScopeFleet:
    """eu-1 (default scenario) and a busy us-1 on two agents, behind one gateway with tokens."""

    def __init__(self, fleet, gateway, keyring: Keyring, us_agent) -> None:
        self.fleet, self.gateway, self.keyring, self.us_agent = fleet, gateway, keyring, us_agent

    @classmethod
    async def start(cls, fleet, audit) -> ScopeFleet:
        keyring = Keyring((new_secret(),))
        await fleet.agent("eu-1", settings=AgentSettings(name="host-a", **FAST))
        us_agent = await fleet.agent(
            emulated("us-1", "--chatter-rate", "4", "--activity-interval", "0.3", scenario="busy"),
            settings=AgentSettings(name="host-b", **FAST),
        )
        gateway = await fleet.gateway(security=Security(keyring=keyring), audit=audit.log)
        return cls(fleet, gateway, keyring, us_agent)

    async def client(self, sub: str, servers: list[str] | None, path: str = "") -> RecordingClient:
        token = self.keyring.issue(role=Role.ADMIN, sub=sub, servers=servers, ttl=600)
        return await self.fleet.client(
            self.gateway.url + path, cls=RecordingClient,
            additional_headers={"Authorization": f"Bearer {token}"},
        )

    async def secrets(self, full: RecordingClient) -> list[str]:
        """What only us-1 has: its id, its agent, its account, worlds and session ids."""
        us_worlds = await full.request({"type": "get_worlds", "server": "us-1"}, timeout=15)
        secrets = ["us-1", self.us_agent.id, *BUSY_ONLY, *(w["sessionId"] for w in us_worlds["output"])]
        assert len(secrets) == len(BUSY_ONLY) + 2 + 6  # six worlds, each with its own session id
        return secrets


async def test_a_client_scoped_to_eu_receives_no_byte_about_us_1(audit_file, fleet):
    """A client scoped to eu-* sees eu-1's events and replies, and nothing at all of a busy
    us-1: not in get_servers, no events, and `unknown_server` worded as for no server."""
    audit = await audit_file("gateway")
    scope = await ScopeFleet.start(fleet, audit)
    full = await scope.client("root", None)
    scoped = await scope.client("eu-admin", ["eu-*"])
    listed = await servers_online(full, ["eu-1", "us-1"])
    secrets = await scope.secrets(full)
    assert {s["server"]: s["agent"] for s in listed}["us-1"] == scope.us_agent.id

    # What the scoped client sees of the fleet: eu-1 alone, the default for requests too.
    servers = await scoped.request({"type": "get_servers", "id": "servers"})
    assert [s["server"] for s in servers["servers"]] == ["eu-1"]
    status = await scoped.request({"type": "get_status", "id": "default-server"})
    assert (status["type"], status["server"]) == ("status_update", "eu-1")

    # Every request naming us-1 is answered exactly as one naming zz-9, which does not exist.
    latency: dict[str, list[float]] = {"us-1": [], "zz-9": []}
    for kind, probe in PROBES.items():
        replies = {}
        for server in ("us-1", "zz-9"):
            started = time.perf_counter()
            replies[server] = await scoped.request({**with_server(probe, server), "id": f"probe-{server}-{kind}"})
            latency[server].append(time.perf_counter() - started)
        assert replies["us-1"]["code"] == "unknown_server", (kind, replies["us-1"])
        assert json.loads(json.dumps(replies["us-1"]).replace("us-1", "zz-9")) == replies["zz-9"], kind

    # An id in scope that no agent serves is offline, answered at once by the bus.
    started = time.perf_counter()
    offline = await scoped.request({"type": "get_status", "server": "eu-9", "id": "offline"})
    offline_latency = time.perf_counter() - started
    assert (offline["code"], offline["server"]) == ("server_offline", "eu-9"), offline

    # us-1 is busy: chatter, joins and leaves, polls; the full-scope admin drives and restarts it.
    for command in ("users", "worlds", "sessionID", "listbans", "friendRequests", "status"):
        reply = await full.request({"type": "command", "command": command, "server": "us-1"}, timeout=15)
        assert reply["type"] in ("command_response", "bans_update"), reply
    await full.request({"type": "get_output", "server": "us-1", "limit": 50})
    restart = await full.request({"type": "container", "action": "restart", "server": "us-1"}, timeout=30)
    assert restart["type"] == "container_response", restart
    await full.request({"type": "command", "command": "users", "server": "us-1"}, timeout=15)

    def seen(kind: str, server: str) -> int:
        return sum(1 for f in full.frames if (m := json.loads(f))["type"] == kind and m.get("server") == server)

    await wait_until(
        lambda: seen("status_update", "us-1") >= 2 and seen("worlds_update", "us-1") >= 2
        and seen("container_output", "us-1") >= 20,
        timeout=15, what="us-1 streaming status, worlds and output to the full-scope client",
    )
    # eu-1 events reach the scoped client all along; a marker typed now arrives after
    # everything us-1 published above (one event queue per gateway, in order).
    for command in ("users", "worlds"):
        await scoped.request({"type": "command", "command": command, "server": "eu-1"})
    marker = f"unban marker-{uuid.uuid4().hex[:8]}"
    await scoped.request({"type": "command", "command": marker, "server": "eu-1"})
    await scoped.seen(lambda m: m["type"] == "container_output" and m["output"].endswith(">" + marker))
    await wait_until(
        lambda: any((m := json.loads(f))["type"] == "status_update" and "id" not in m for f in scoped.frames),
        timeout=5, what="an eu-1 status event on the scoped client",
    )

    probe_replies = {f for f in scoped.frames if json.loads(f).get("id", "").startswith("probe-us-1-")}
    assert len(probe_replies) == len(PROBES)
    leaks = [(f, mentions(f, secrets)) for f in scoped.frames if f not in probe_replies and mentions(f, secrets)]
    assert not leaks, leaks[:3]
    kinds = {json.loads(f)["type"] for f in scoped.frames}
    assert {"container_output", "status_update", "command_response"} <= kinds, kinds

    records = [r for r in await audit.records() if r["outcome"] == "out_of_scope" and r["who"] == "eu-admin"]
    assert sum(1 for r in records if r["server"] == "us-1") >= len(PROBES)
    print(f"\nserver_offline reply for an in-scope id no agent serves: {offline_latency * 1000:.2f} ms")
    print(f"unknown_server reply: us-1 median {sorted(latency['us-1'])[len(PROBES) // 2] * 1000:.2f} ms, "
          f"zz-9 median {sorted(latency['zz-9'])[len(PROBES) // 2] * 1000:.2f} ms")


async def test_a_scoped_client_pinned_to_a_server_outside_its_scope_reaches_nothing(audit_file, fleet):
    """/ws/us-1 with an eu-* token behaves exactly as /ws/zz-9 (no such server): no reply,
    no event and no command reaches us-1."""
    audit = await audit_file("gateway")
    scope = await ScopeFleet.start(fleet, audit)
    full = await scope.client("root", None)
    await servers_online(full, ["eu-1", "us-1"])
    secrets = await scope.secrets(full)

    requests = [{"type": "get_status"}, {"type": "get_worlds"}, {"type": "get_servers"}, {"type": "ping"},
                {"type": "command", "command": "unban pinned-probe"}, {"type": "get_output"}]
    pinned: dict[str, RecordingClient | int] = {}
    for server in ("us-1", "zz-9"):
        try:
            client = await scope.client("eu-admin", ["eu-*"], path=f"/{server}")
        except InvalidStatus as exc:  # refusing the handshake is fine, if for both alike
            pinned[server] = exc.response.status_code
            continue
        pinned[server] = client
        for i, request in enumerate(requests):
            await client.request({**request, "id": f"pinned-{i}"}, timeout=15)
    assert type(pinned["us-1"]) is type(pinned["zz-9"])

    # us-1 keeps busy meanwhile; a marker typed on it arrives after everything before it.
    marker = f"unban marker-{uuid.uuid4().hex[:8]}"
    await full.request({"type": "command", "command": marker, "server": "us-1"}, timeout=15)
    await full.seen(lambda m: m.get("server") == "us-1" and m["type"] == "container_output"
                    and m["output"].endswith(">" + marker))
    assert not any(m["type"] == "container_output" and m["output"].endswith(">unban pinned-probe")
                   for m in map(json.loads, full.frames))

    if isinstance(pinned["us-1"], int):
        assert pinned["us-1"] == pinned["zz-9"]
        return
    assert isinstance(pinned["zz-9"], RecordingClient)
    replies = [json.loads(f) for f in pinned["us-1"].frames]
    assert all(r["type"] in ("error", "pong", "servers_update") for r in replies), replies
    as_if_absent = [f.replace("us-1", "zz-9") for f in pinned["us-1"].frames]
    assert as_if_absent == list(pinned["zz-9"].frames)
    assert not [f for f in pinned["us-1"].frames if mentions(f, secrets[1:])]
