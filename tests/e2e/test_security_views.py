"""Security end to end: what each role sees of the hosts behind the fleet. Viewers do not
see agent host names, process ids or host memory totals (operators and up do); machine
ids of bans only moderators and up; and after an in-band `auth` narrows a connection's
scope, replies to requests made under the old token for servers now out of scope are
dropped.

Real gateways in front of agents driving emulated consoles, over LocalBus and RabbitMQ.
"""

from __future__ import annotations


from resofleet.agent.settings import AgentSettings
from resofleet.contracts import Role
from resofleet.gateway.security import Security
from resofleet.gateway.tokens import Keyring, new_secret
from tests.integration.gateway.client import RecordingClient

from .conftest import emulated, servers_online

#: Seconds a `users` command takes on the slow server of the scope test: long enough to
#: send a narrowing `auth` while it runs.
SLOW = 2.0


def bearer(token: str) -> dict:
    return {"additional_headers": {"Authorization": f"Bearer {token}"}}


async def test_viewers_do_not_see_host_names_process_ids_or_host_memory(fleet):
    """`get_servers` and `get_status` give a viewer no host name, agent name, process id or
    memory total; an operator gets them all."""
    keyring = Keyring((new_secret(),))
    await fleet.agent("v-1", name="host-secret-7")
    gateway = await fleet.gateway(security=Security(keyring=keyring))
    viewer = await fleet.client(gateway.url, **bearer(keyring.issue(role=Role.VIEWER, sub="vic", ttl=600)))
    operator = await fleet.client(gateway.url, **bearer(keyring.issue(role=Role.OPERATOR, sub="olga", ttl=600)))

    seen = (await servers_online(operator, ["v-1"]))[0]
    assert seen["host"] and seen["agent"].startswith("host-secret-7")
    hidden = (await servers_online(viewer, ["v-1"]))[0]
    assert hidden["host"] == "" and hidden["agent"] == "", hidden

    full = (await operator.request({"type": "get_status", "server": "v-1"}))["status"]
    assert full["id"] and full["memory_total"] not in ("", "0B"), full
    status = (await viewer.request({"type": "get_status", "server": "v-1"}))["status"]
    assert status["id"] == "" and status["memory_total"] == "" and status["memory_total_bytes"] == 0, status
    assert status["status"] == full["status"] and status["memory_used"]  # the rest is there


async def test_machine_ids_of_bans_only_for_moderators_and_up(fleet):
    """`listbans` answers a viewer with the banned users but no machine ids; a moderator
    gets the machine ids."""
    keyring = Keyring((new_secret(),))
    await fleet.agent("v-1")
    gateway = await fleet.gateway(security=Security(keyring=keyring))
    viewer = await fleet.client(gateway.url, **bearer(keyring.issue(role=Role.VIEWER, sub="vic", ttl=600)))
    moderator = await fleet.client(gateway.url, **bearer(keyring.issue(role=Role.MODERATOR, sub="mo", ttl=600)))
    await servers_online(moderator, ["v-1"])

    full = await moderator.request({"type": "command", "command": "listbans", "server": "v-1"})
    assert full["type"] == "bans_update" and full["bans"][0]["machineIds"], full
    bans = await viewer.request({"type": "command", "command": "listbans", "server": "v-1"})
    assert [b["username"] for b in bans["bans"]] == [b["username"] for b in full["bans"]]
    assert all(b["machineIds"] == [] for b in bans["bans"]), bans


async def test_after_auth_narrows_the_scope_replies_for_servers_left_out_are_dropped(fleet):
    """A request to a server sent under a token for every server, answered after an `auth`
    with a token for other servers only, never reaches the client; the connection goes on
    with the servers still in scope."""
    keyring = Keyring((new_secret(),))
    await fleet.agent(emulated("w-1", "--tty", "--latency", f"users={SLOW}"), emulated("k-1"))
    gateway = await fleet.gateway(security=Security(keyring=keyring))
    admin = await fleet.client(gateway.url, **bearer(keyring.issue(role=Role.ADMIN, sub="root", ttl=600)))
    client = await fleet.client(
        gateway.url, cls=RecordingClient, **bearer(keyring.issue(role=Role.VIEWER, sub="vic", ttl=600))
    )
    await servers_online(client, ["k-1", "w-1"])
    probe = {"type": "command", "command": "users", "server": "w-1"}
    assert (await admin.request(probe, timeout=15 + SLOW))["type"] == "command_response"

    await client.send({**probe, "id": "old-scope"})
    narrowed = keyring.issue(role=Role.VIEWER, sub="vic", ttl=600, servers=["k-*"])
    assert (await client.request({"type": "auth", "token": narrowed}))["type"] == "authenticated"
    # The console answers in order: once the admin's `users` is answered, so was the old one.
    assert (await admin.request(probe, timeout=15 + 2 * SLOW))["type"] == "command_response"
    assert (await client.request({"type": "get_status", "server": "k-1"}))["type"] == "status_update"
    assert not client.received(lambda m: m.get("id") == "old-scope")
    assert not any("old-scope" in f for f in client.frames)


async def test_pushed_updates_hide_the_same_fields_from_viewers(fleet):
    """The `bans_update` a ban pushes to every watcher carries machine ids for a moderator
    and none for a viewer; the `status_update` each status poll pushes carries no process id or memory total for a
    viewer."""
    keyring = Keyring((new_secret(),))
    await fleet.agent("v-2", settings=AgentSettings(name="views", status_interval=0.2))
    gateway = await fleet.gateway(security=Security(keyring=keyring))
    viewer = await fleet.client(gateway.url, cls=RecordingClient, **bearer(keyring.issue(role=Role.VIEWER, sub="vic", ttl=600)))
    moderator = await fleet.client(gateway.url, cls=RecordingClient, **bearer(keyring.issue(role=Role.MODERATOR, sub="mo", ttl=600)))
    operator = await fleet.client(gateway.url, cls=RecordingClient, **bearer(keyring.issue(role=Role.OPERATOR, sub="olga", ttl=600)))
    await servers_online(moderator, ["v-2"])
    for client in (viewer, moderator, operator):
        assert (await client.request({"type": "subscribe", "servers": ["v-2"]}))["type"] == "subscribed"

    reply = await moderator.request({"type": "command", "command": "ban Mira", "server": "v-2", "world": 0})
    assert reply["type"] == "command_response", reply

    def pushed_bans(message) -> bool:
        return message["type"] == "bans_update" and "id" not in message and any(b["username"] == "Mira" for b in message["bans"])

    full = await moderator.seen(pushed_bans)
    assert any(b["machineIds"] for b in full["bans"]), full
    hidden = await viewer.seen(pushed_bans)
    assert [b["username"] for b in hidden["bans"]] == [b["username"] for b in full["bans"]]
    assert all(b["machineIds"] == [] for b in hidden["bans"]), hidden

    def pushed_status(message) -> bool:
        return message["type"] == "status_update" and "id" not in message

    seen = await operator.seen(pushed_status)
    assert seen["status"]["id"] and seen["status"]["memory_total_bytes"], seen
    hidden = await viewer.seen(pushed_status)
    assert hidden["status"]["id"] == "" and hidden["status"]["memory_total_bytes"] == 0, hidden
