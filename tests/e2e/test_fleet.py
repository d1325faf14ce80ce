"""End to end: real websockets clients, real gateways, real agents driving emulated
headless consoles, over LocalBus and over RabbitMQ."""

from __future__ import annotations

import asyncio
import time

from tests.support.timing import AT_ONCE

from .conftest import TEST_ANNOUNCE_INTERVAL, emulated, servers_online

SEED_WORLD_FIELDS = {
    "name", "sessionId", "users", "present", "maxUsers", "uptime", "accessLevel", "hidden",
    "mobileFriendly", "description", "tags", "users_list",
}
SEED_USER_FIELDS = {"username", "userId", "present", "ping", "fps", "silenced"}
STATUS_FIELDS = {
    "status", "name", "id", "cpu_usage", "memory_percent", "memory_used", "memory_total",
    "uptime", "restarts", "memory_used_bytes", "memory_total_bytes",
}


async def test_each_seed_request_gets_its_documented_reply(fleet):
    """get_worlds, get_status, command and listbans answered with the seed's shapes."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["alpha"])

    worlds = await client.request({"type": "get_worlds", "id": 1})
    assert set(worlds) == {"type", "output", "server", "id"}
    assert (worlds["type"], worlds["server"], worlds["id"]) == ("worlds_update", "alpha", 1)
    assert [w["name"] for w in worlds["output"]] == ["Harbor Lounge", "Night Market"]
    lounge = worlds["output"][0]
    assert SEED_WORLD_FIELDS <= set(lounge) and {"index", "uptime_raw"} <= set(lounge)
    assert lounge["uptime"] == "1 day 2 hours 3 minutes"
    assert lounge["users_list"][0]["username"] == "HarborHost"  # the headless's own account first
    for user in lounge["users_list"]:
        assert SEED_USER_FIELDS <= set(user) and "role" in user
    assert [u["username"] for u in lounge["users_list"][1:]] == ["Mira", "Tobias"]

    status = await client.request({"type": "get_status", "id": "s"})
    assert (status["type"], status["server"], status["id"]) == ("status_update", "alpha", "s")
    assert STATUS_FIELDS <= set(status["status"])
    assert isinstance(status["status"]["cpu_usage"], (int, float))
    assert isinstance(status["status"]["memory_percent"], (int, float))
    assert status["status"]["memory_used"].endswith("B")

    users = await client.request({"type": "command", "command": "users", "id": 2})
    assert set(users) == {"type", "command", "output", "server", "id", "outcome"}  # outcome: added
    assert (users["type"], users["command"], users["server"]) == ("command_response", "users", "alpha")
    assert "HarborHost" in users["output"] and ">" not in users["output"].splitlines()[-1]

    in_world = await client.request({"type": "command", "command": "users", "world": "Harbor Lounge"})
    assert "Mira" in in_world["output"] and "Tobias" in in_world["output"]

    bans = await client.request({"type": "command", "command": "listbans", "id": 3})
    assert bans == {
        "type": "bans_update", "server": "alpha", "id": 3,
        "bans": [{"username": "SpamBot", "userId": "U-SpamBot01", "machineIds": ["4q8w0e2r6t1y9u3i5o7p"]}],
    }

    history = await client.request({"type": "get_output", "limit": 5})
    assert history["type"] == "output_history" and history["server"] == "alpha"
    assert {"epoch", "lines", "complete"} <= set(history)

    [info] = await servers_online(client, ["alpha"])
    assert info["runtime"] == "emulator" and info["host"] and info["agent"]


async def test_container_output_streams_a_commands_echo_and_result(fleet):
    """A command's echo and its result arrive as container_output lines, numbered."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["alpha"])
    reply = await client.request({"type": "command", "command": "users", "world": 0})
    result_lines = reply["output"].splitlines()

    streamed: list[dict] = []
    async with asyncio.timeout(10):
        while not set(result_lines) <= {m["output"] for m in streamed}:
            message = await client.expect_kept(lambda m: m["type"] == "container_output")
            assert set(message) == {"type", "output", "server", "seq", "epoch"}
            streamed.append(message)
    texts = [m["output"] for m in streamed]
    echo = next(i for i, t in enumerate(texts) if t.rstrip().endswith("users"))
    assert echo < texts.index(result_lines[0])
    seqs = [m["seq"] for m in streamed]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_two_agents_with_two_servers_each_behind_one_gateway(fleet):
    """One gateway serves four servers on two agents; each answers for itself."""
    await fleet.agent("a1", "a2", name="host-a")
    await fleet.agent("b1", "b2", name="host-b")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    listed = await servers_online(client, ["a1", "a2", "b1", "b2"])
    assert {s["server"]: s["agent"].split("-")[1] for s in listed} == {"a1": "a", "a2": "a", "b1": "b", "b2": "b"}

    replies = await client.requests([{"type": "get_worlds", "server": s} for s in ("a1", "a2", "b1", "b2")])
    assert [r["server"] for r in replies] == ["a1", "a2", "b1", "b2"]
    assert all(r["type"] == "worlds_update" and len(r["output"]) == 2 for r in replies)

    ambiguous = await client.request({"type": "get_status"})
    assert ambiguous["code"] == "ambiguous_server" and "(a1, a2, b1, b2)" in ambiguous["message"]


async def test_two_gateways_share_the_fleet(fleet):
    """Two gateways see the same servers; output of a command sent through one reaches the other."""
    await fleet.agent("a1", "a2")
    await fleet.agent("b1", "b2")
    first, second = await fleet.gateway(), await fleet.gateway()
    one, two = await fleet.client(first.url), await fleet.client(second.url)
    await servers_online(one, ["a1", "a2", "b1", "b2"])
    await servers_online(two, ["a1", "a2", "b1", "b2"])

    reply = await one.request({"type": "command", "command": "worlds", "server": "b2"})
    assert reply["type"] == "command_response" and "Harbor Lounge" in reply["output"]
    seen = await two.expect(
        lambda m: m["type"] == "container_output" and m["server"] == "b2" and "Harbor Lounge" in m["output"]
    )
    assert seen["epoch"]
    reply = await two.request({"type": "command", "command": "worlds", "server": "a1"})
    assert reply["server"] == "a1"


async def test_pinned_endpoint_answers_seed_requests_and_streams_only_its_server(fleet):
    """/ws/<id>: seed requests without `server` go to it; only its output arrives."""
    await fleet.agent("a1", "a2")
    gateway = await fleet.gateway()
    everything = await fleet.client(gateway.url)
    await servers_online(everything, ["a1", "a2"])
    pinned = await fleet.client(gateway.url + "/a2")

    for request, kind in (
        ({"type": "get_worlds"}, "worlds_update"),
        ({"type": "get_status"}, "status_update"),
        ({"type": "command", "command": "users"}, "command_response"),
    ):
        await pinned.send(request)  # exactly as the seed's clients do: no id, no server
        reply = await pinned.expect(lambda m: m["type"] == kind)
        assert reply["server"] == "a2" and "id" not in reply
    servers = (await pinned.request({"type": "get_servers"}))["servers"]
    assert [s["server"] for s in servers] == ["a2"]

    await everything.request({"type": "command", "command": "worlds", "server": "a1"})
    await everything.request({"type": "command", "command": "version", "server": "a2"})
    await pinned.expect(lambda m: m["type"] == "container_output" and m["output"].rstrip().endswith("version"))
    streamed = [m for m in pinned.skipped if m["type"].startswith("container_output")]
    assert streamed and {m["server"] for m in streamed} == {"a2"}


async def test_offline_server_answered_at_once_and_reported(fleet):
    """An agent that stops: its servers are server_offline at once (not at the timeout), then listed offline."""
    agent = await fleet.agent("gone")
    await fleet.agent("stays")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["gone", "stays"])
    await agent.close()

    started = time.perf_counter()
    reply = await client.request({"type": "command", "command": "users", "server": "gone"})
    assert time.perf_counter() - started < AT_ONCE
    assert (reply["code"], reply["server"]) == ("server_offline", "gone")

    listed = await servers_online(client, ["stays"], timeout=TEST_ANNOUNCE_INTERVAL * 3 + 5)
    assert {s["server"]: (s["online"], s["status"] == "offline") for s in listed} == {
        "gone": (False, True), "stays": (True, False),
    }
    reply = await client.request({"type": "get_status"})  # the one online server is the default again
    assert (reply["type"], reply["server"]) == ("status_update", "stays")


async def test_missed_lines_are_recovered_with_get_output_since(fleet):
    """A client that was away asks get_output since its last seq and gets exactly what it missed."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    watcher = await fleet.client(gateway.url)
    await servers_online(watcher, ["alpha"])
    await watcher.request({"type": "command", "command": "worlds"})
    last = await watcher.expect_kept(lambda m: m["type"] == "container_output" and "Night Market" in m["output"])
    since, epoch = last["seq"], last["epoch"]

    # away: another client runs commands the watcher's stream no longer delivers
    await watcher.request({"type": "subscribe", "servers": []})
    other = await fleet.client(gateway.url)
    await other.request({"type": "subscribe", "servers": ["alpha"]})
    await other.request({"type": "command", "command": "users", "world": 0})
    version = await other.request({"type": "command", "command": "version"})
    missed: list[dict] = [m for m in other.skipped if m["type"] == "container_output"]
    async with asyncio.timeout(10):
        while version["output"].splitlines()[-1] not in {m["output"] for m in missed}:
            missed.append(await other.expect(lambda m: m["type"] == "container_output"))

    history = await watcher.request({"type": "get_output", "since": since, "epoch": epoch})
    assert history["type"] == "output_history" and history["epoch"] == epoch
    assert history.get("reset", False) is False
    got = [(line["seq"], line["output"]) for line in history["lines"]]
    assert all(seq > since for seq, _ in got)
    first = missed[0]["seq"]
    assert [g for g in got if g[0] >= first][: len(missed)] == [(m["seq"], m["output"]) for m in missed]

    reset = await watcher.request({"type": "get_output", "since": since, "epoch": "another-epoch"})
    assert reset["reset"] is True and reset["lines"][0]["seq"] <= since


async def test_requests_wait_for_a_starting_console(fleet):
    """Requests sent while the console is still starting are answered once it is ready."""
    await fleet.agent(emulated("slow", "--startup-delay", "2"))
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["slow"])
    worlds, users = await client.requests(
        [{"type": "get_worlds"}, {"type": "command", "command": "users"}], timeout=15
    )
    assert worlds["type"] == "worlds_update" and len(worlds["output"]) == 2
    assert users["type"] == "command_response" and "HarborHost" in users["output"]


async def test_a_control_character_never_reaches_the_console(fleet):
    """`users\\nshutdown` is refused at the gateway; the server keeps running."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["alpha"])
    await client.send('{"type": "command", "command": "users\\nshutdown", "id": 1}')
    error = await client.expect(lambda m: m.get("id") == 1)
    assert (error["type"], error["code"]) == ("error", "bad_request")
    status = await client.request({"type": "get_status"})
    assert status["status"]["status"] == "running"
    reply = await client.request({"type": "command", "command": "version"})
    assert reply["type"] == "command_response"


async def test_container_actions_and_a_request_waiting_for_the_restart(fleet):
    """container restart/stop/start answer container_response; a command after a restart
    waits for the console to be ready again; a stopped server says how to start it."""
    await fleet.agent(emulated("alpha", "--startup-delay", "1"))
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await servers_online(client, ["alpha"])
    await client.request({"type": "command", "command": "version"}, timeout=15)  # first boot done

    restart = await client.request({"type": "container", "action": "restart", "id": "c1"}, timeout=30)
    assert set(restart) == {"type", "action", "server", "status", "id", "outcome"}
    assert (restart["type"], restart["action"], restart["server"]) == ("container_response", "restart", "alpha")
    users = await client.request({"type": "command", "command": "users"}, timeout=15)
    assert users["type"] == "command_response" and "HarborHost" in users["output"]

    stop = await client.request({"type": "container", "action": "stop"}, timeout=30)
    assert (stop["type"], stop["status"]) == ("container_response", "exited")
    refused = await client.request({"type": "command", "command": "users"})
    assert (refused["type"], refused["server"]) == ("error", "alpha") and "start" in refused["message"]
    start = await client.request({"type": "container", "action": "start"}, timeout=30)
    assert (start["type"], start["status"]) == ("container_response", "running")
    users = await client.request({"type": "command", "command": "users"}, timeout=15)
    assert users["type"] == "command_response"
