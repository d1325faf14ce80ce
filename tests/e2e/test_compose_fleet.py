"""The compose fleet (deploy/compose.yaml) on a real Docker engine, through its load
balancer: two gateways behind HAProxy, RabbitMQ with a user per agent, agents host-a
(a1, a2) and host-b (b1, b2) driving emulated headless containers over the Docker socket,
and the notifier posting to the stack's webhook receiver (profile "webhooks").

One stack for the module (`deploy/fleet.py up`, as `make fleet` runs it), removed at the
end whatever happened. The tests run in file order: the ones that kill or stop parts come
last, each putting back what it broke. Measured figures (start, failovers) are printed
(`pytest -s` shows them).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest
from resofleet.bus import AmqpBus, NotPermitted
from resofleet.contracts import BusRequest, RunCommand, encode_bus
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.compose_stack import Stack, docker, why_not
from tests.integration.gateway.client import Client

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

SERVERS = ("a1", "a2", "b1", "b2")
#: Seconds within which the fleet must recover from a failure it is built to survive.
RECOVERY = 30.0
#: Seconds for one request through the load balancer.
WAIT = 15.0


def report(what: str, seconds: float) -> None:
    print(f"\ncompose fleet: {what}: {seconds:.3f} s", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    problem = why_not()
    if problem is not None:
        pytest.skip(problem)
    fleet = Stack(tmp_path_factory.mktemp("compose-fleet"))
    try:
        fleet.up()
        report("stack start (compose up -> every server online through the LB, images built)", fleet.start_seconds)
        yield fleet
    finally:
        fleet.down()


@pytest.fixture(scope="module")
def token(stack: Stack) -> str:
    return stack.token()


async def connect(stack: Stack, token: str) -> Client:
    return await Client.connect(stack.url, additional_headers={"Authorization": f"Bearer {token}"})


def gateway_of(client: Client) -> str:
    """Which gateway the load balancer sent this connection to (its response header)."""
    return client.ws.response.headers["X-Resofleet-Gateway"]


async def online(client: Client, servers: tuple[str, ...] = SERVERS, timeout: float = RECOVERY) -> None:
    async with asyncio.timeout(timeout):
        while True:
            listed = (await client.request({"type": "get_servers"}, timeout=WAIT))["servers"]
            if set(servers) <= {s["server"] for s in listed if s["online"] and s["status"] == "running"}:
                return
            await asyncio.sleep(0.2)


# -- requests and events through the load balancer -----------------------------------------


async def test_every_seed_request_to_every_server(stack: Stack, token: str) -> None:
    """command, get_status, get_worlds and listbans (as bans_update) answered by each of
    the four servers, through the load balancer and either gateway."""
    async with await connect(stack, token) as client:
        await online(client)
        for server in SERVERS:
            command = await client.request({"type": "command", "command": "users", "server": server}, WAIT)
            assert (command["type"], command["server"]) == ("command_response", server), command
            assert command["output"].splitlines()[0].split("\t")[1].startswith("ID: ")
            status = await client.request({"type": "get_status", "server": server}, WAIT)
            assert (status["type"], status["server"], status["status"]["status"]) == ("status_update", server, "running")
            assert status["status"]["name"] == f"{stack.project}-{server}"  # the container, by name
            worlds = await client.request({"type": "get_worlds", "server": server}, WAIT)
            assert worlds["type"] == "worlds_update" and worlds["output"], worlds
            assert all({"name", "users", "users_list", "index"} <= set(w) for w in worlds["output"])
            bans = await client.request({"type": "command", "command": "listbans", "server": server}, WAIT)
            assert (bans["type"], bans["server"]) == ("bans_update", server)
            assert isinstance(bans["bans"], list)


async def test_output_streams_through_the_load_balancer(stack: Stack, token: str) -> None:
    """A command's echo (the TTY's) and its result come back as container_output lines."""
    async with await connect(stack, token) as client:
        await online(client, ("a2",))
        reply = await client.request({"type": "command", "command": "users", "server": "a2"}, WAIT)
        wanted = set(reply["output"].splitlines())
        seen: set[str] = set()
        async with asyncio.timeout(WAIT):
            while not wanted <= seen:
                line = await client.expect(lambda m: m["type"] == "container_output" and m["server"] == "a2")
                seen.add(line["output"])
        assert any(text.rstrip().endswith(">users") for text in seen), seen  # the echo


async def two_clients_on_two_gateways(stack: Stack, token: str) -> tuple[Client, Client]:
    first = await connect(stack, token)
    others: list[Client] = []
    try:
        for _ in range(8):  # leastconn alternates; a few tries at most
            other = await connect(stack, token)
            if gateway_of(other) != gateway_of(first):
                for extra in others:
                    await extra.close()
                return first, other
            others.append(other)
    except BaseException:
        for client in [first, *others]:
            await client.close()
        raise
    raise AssertionError("every connection landed on one gateway")


async def test_two_clients_on_different_gateways_see_the_same_events(stack: Stack, token: str) -> None:
    """One client's command to b1 streams the same numbered lines to a client of the
    other gateway."""
    first, second = await two_clients_on_two_gateways(stack, token)
    async with first, second:
        await online(first, ("b1",))
        marker = f"compose-{uuid.uuid4().hex[:8]}"
        # Not a console command: answered "Unknown command", and its TTY echo streamed.
        await first.request({"type": "command", "command": marker, "server": "b1"}, WAIT)

        async def line_with_marker(client: Client) -> dict[str, Any]:
            return await client.expect(
                lambda m: m["type"] == "container_output" and m["server"] == "b1" and m["output"].rstrip().endswith(marker),
                WAIT,
            )

        one, two = await asyncio.gather(line_with_marker(first), line_with_marker(second))
        assert (one["seq"], one["epoch"]) == (two["seq"], two["epoch"])


async def test_x_forwarded_for_names_the_client_not_the_load_balancer(stack: Stack, token: str) -> None:
    """A refused handshake is audited with the address HAProxy saw (the host, through the
    published port), not HAProxy's own, and not what the client wrote in X-Forwarded-For."""
    spoofed = "203.0.113.77"
    for _ in range(2):  # one refusal per gateway, whichever the LB picks
        with pytest.raises(InvalidStatus) as refused:
            await Client.connect(stack.url, additional_headers={"Authorization": "Bearer nope", "X-Forwarded-For": spoofed})
        assert refused.value.response.status_code == 401
    lb = stack.env["RESOFLEET_LB_ADDRESS"]

    def refusals() -> list[dict[str, Any]]:
        found = []
        for gateway in ("gateway-1", "gateway-2"):
            text = docker("exec", stack.container(gateway), "cat", "/var/lib/resofleet/audit/gateway.jsonl", check=False)
            found += [r for r in map(json.loads, text.splitlines()) if r["outcome"] == "handshake_refused"]
        return found

    async with asyncio.timeout(WAIT):  # the audit log is written in batches
        while not (records := refusals()):
            await asyncio.sleep(0.2)
    clients = {r["client"] for r in records}
    assert lb not in clients and spoofed not in clients, clients
    assert all(c.startswith(stack.env["RESOFLEET_FLEET_SUBNET"].rsplit(".", 1)[0] + ".") for c in clients), clients


# -- the broker's permissions ---------------------------------------------------------------


async def own_queue(channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractQueue:
    """An exclusive queue named as the bus names its own (aio-pika's ``amq_<hex>``)."""
    return await channel.declare_queue(f"amq_{uuid.uuid4().hex}", exclusive=True)


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """A consumer that is never called: consuming is refused."""


def broker_url(stack: Stack, user: str) -> str:
    password = stack.env[f"RESOFLEET_BROKER_{user.upper().replace('-', '_')}_PASSWORD"]
    return f"amqp://{user}:{password}@{stack.address('rabbitmq')}:5672/resofleet"


async def test_host_a_cannot_serve_b1(stack: Stack) -> None:
    """host-a's broker user may not declare b1's command queue: it cannot serve b1, even
    with b1's agent gone."""
    bus = AmqpBus(broker_url(stack, "host-a"), name="compose-test host-a")
    await bus.start()
    try:
        with pytest.raises(NotPermitted, match="resofleet.commands.b1"):
            await bus.serve("b1", lambda request, deadline: None)  # type: ignore[arg-type,return-value]
    finally:
        await bus.close()


async def test_host_a_cannot_read_b1s_commands_or_publish_its_events(stack: Stack) -> None:
    """host-a may not consume b1's command queue, publish events under b1's routing keys,
    or bind a queue to anyone's events; the guest user does not exist."""
    connection = await aio_pika.connect(broker_url(stack, "host-a"))
    try:
        channel = await connection.channel()
        queue = await channel.get_queue("resofleet.commands.b1", ensure=False)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused, match="resofleet.commands.b1"):
            await queue.consume(ignore)

        channel = await connection.channel(publisher_confirms=True)
        events = await channel.get_exchange("resofleet.events", ensure=False)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused, match="b1.status"):
            await events.publish(aio_pika.Message(b"forged"), routing_key="b1.status")
            await own_queue(channel)  # the refusal closes the channel, if publish did not raise

        channel = await connection.channel()
        own = await own_queue(channel)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused, match="resofleet.events"):
            await own.bind("resofleet.events", routing_key="b1.*")
    finally:
        await connection.close()
    with pytest.raises(aio_pika.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(f"amqp://guest:guest@{stack.address('rabbitmq')}:5672/")


async def test_a_request_host_a_forges_into_b1s_queue_is_not_run(stack: Stack, token: str) -> None:
    """host-a may publish replies through the default exchange, which no permission narrows
    by queue, so it can drop a forged request into b1's command queue; b1's agent runs only
    requests whose broker-verified user_id is the gateways' user, so it is never run."""
    forged_tag, marker = f"forged-{uuid.uuid4().hex[:8]}", f"marker-{uuid.uuid4().hex[:8]}"
    async with await connect(stack, token) as client:
        await online(client, ("b1",))
        connection = await aio_pika.connect(broker_url(stack, "host-a"))
        try:
            channel = await connection.channel()
            forged = BusRequest(server="b1", body=RunCommand(command=f"users {forged_tag}"), timeout=10)
            await channel.default_exchange.publish(
                aio_pika.Message(encode_bus(forged)), routing_key="resofleet.commands.b1",
            )
        finally:
            await connection.close()
        # sent after the forged one: the queue is first in, first out
        reply = await client.request({"type": "command", "command": f"users {marker}", "server": "b1"}, timeout=WAIT)
        assert reply["type"] == "command_response", reply
        history = await client.request({"type": "get_output", "server": "b1", "since": 0}, timeout=WAIT)
        lines = [line["output"] for line in history["lines"]]
        assert any(line.endswith(marker) for line in lines), lines[-5:]
        assert not any(forged_tag in line for line in lines), lines[-5:]


async def test_the_gateway_user_cannot_serve_any_server(stack: Stack) -> None:
    """The gateways' user sends requests and reads events, and may not claim a server."""
    bus = AmqpBus(broker_url(stack, "gateway"), name="compose-test gateway")
    await bus.start()
    try:
        with pytest.raises(NotPermitted, match="'a1'"):
            await bus.serve("a1", lambda request, deadline: None)  # type: ignore[arg-type,return-value]
    finally:
        await bus.close()


async def test_host_a_cannot_bind_its_own_queue_to_b1s_requests(stack: Stack) -> None:
    """host-a may not bind even its own queue to the requests exchange with b1's id: the
    exchange is a topic one, so the broker checks the binding key against host-a's topic
    permissions (a1 and a2 only)."""
    connection = await aio_pika.connect(broker_url(stack, "host-a"))
    try:
        channel = await connection.channel()
        own = await own_queue(channel)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await own.bind("resofleet.requests", routing_key="b1")
    finally:
        await connection.close()


# -- failures -------------------------------------------------------------------------------


def received_notices(stack: Stack) -> list[dict[str, Any]]:
    """What the stack's webhook receiver logged: one JSON object per POST."""
    out = docker("logs", stack.container("webhook-receiver"))
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


async def test_a_stopped_server_is_posted_as_a_signed_server_down(stack: Stack, token: str) -> None:
    """`docker stop` a1's headless: the notifier (its own broker user, its durable queues)
    POSTs server_down for a1 to the receiver inside the stack, with a signature that
    verifies with the secret in the env file; started again, server_up follows."""
    async with await connect(stack, token) as client:
        await online(client, ("a1",))
        stopped = time.monotonic()
        docker("stop", "-t", "10", stack.container("a1"))
        try:
            async with asyncio.timeout(RECOVERY):
                while not any(n["event"] == "server_down" and n["server"] == "a1" for n in received_notices(stack)):
                    await asyncio.sleep(0.2)
            report("headless a1 stopped -> signed server_down received", time.monotonic() - stopped)
        finally:
            docker("start", stack.container("a1"))
        async with asyncio.timeout(RECOVERY):
            while not any(n["event"] == "server_up" and n["server"] == "a1" for n in received_notices(stack)):
                await asyncio.sleep(0.2)
        await online(client, ("a1",))
    notices = [n for n in received_notices(stack) if n["server"] == "a1"]
    assert all(n["verified"] for n in notices), notices
    assert [n["event"] for n in notices].count("server_down") == 1, notices  # once per outage
    assert len({n["delivery"] for n in notices}) == len(notices)


async def test_a_killed_gateway_new_and_reconnecting_clients_keep_working(stack: Stack, token: str) -> None:
    """Kill the gateway a client is on: that client is disconnected, reconnects through
    the load balancer and is answered; a client of the other gateway never notices."""
    victim_client, survivor = await two_clients_on_two_gateways(stack, token)
    victim = {"gateway-1": "gateway-1", "gateway-2": "gateway-2"}[gateway_of(victim_client)]
    try:
        killed = time.monotonic()
        docker("kill", stack.container(victim))
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(WAIT):
                while True:
                    await victim_client.request({"type": "get_servers"}, WAIT)
        report(f"{victim} killed -> its client sees the close", time.monotonic() - killed)

        async with asyncio.timeout(RECOVERY):
            while True:
                try:
                    async with await connect(stack, token) as again:
                        reply = await again.request({"type": "command", "command": "users", "server": "a1"}, WAIT)
                        assert reply["type"] == "command_response"
                        assert gateway_of(again) != victim
                        break
                except (OSError, InvalidStatus, ConnectionClosed, TimeoutError):
                    await asyncio.sleep(0.1)
        report(f"{victim} killed -> a reconnecting client answered", time.monotonic() - killed)

        for _ in range(5):  # new connections go to the survivor only, and work
            async with await connect(stack, token) as fresh:
                assert (await fresh.request({"type": "get_status", "server": "b2"}, WAIT))["type"] == "status_update"
        reply = await survivor.request({"type": "command", "command": "users", "server": "b1"}, WAIT)
        assert reply["type"] == "command_response"
    finally:
        await victim_client.close()
        await survivor.close()
        docker("start", stack.container(victim))
    async with await connect(stack, token) as client:  # put back: both gateways serving
        await online(client)


async def test_agent_host_b_stopped_its_servers_are_offline_at_once_and_return(stack: Stack, token: str) -> None:
    """Stop host-b's agent: b1 and b2 are answered server_offline at once (a1 and a2 are
    untouched); start it again: they are back."""
    async with await connect(stack, token) as client:
        await online(client)
        docker("stop", "-t", "10", stack.container("agent-b"))
        stopped = time.monotonic()
        try:
            for server in ("b1", "b2"):
                asked = time.monotonic()
                reply = await client.request({"type": "command", "command": "users", "server": server}, WAIT)
                answered = time.monotonic() - asked
                assert (reply["type"], reply.get("code")) == ("error", "server_offline"), reply
                assert answered < 1.0, answered
                report(f"agent host-b stopped -> {server} answered server_offline in", answered)
            assert (await client.request({"type": "command", "command": "users", "server": "a1"}, WAIT))["type"] == "command_response"
        finally:
            docker("start", stack.container("agent-b"))
        restarted = time.monotonic()
        async with asyncio.timeout(RECOVERY):
            for server in ("b1", "b2"):
                while (await client.request({"type": "command", "command": "users", "server": server}, WAIT))["type"] != "command_response":
                    await asyncio.sleep(0.2)
        report("agent host-b started again -> b1 and b2 answer commands", time.monotonic() - restarted)
        report("agent host-b: from stop to back (stop took part of it)", time.monotonic() - stopped)


async def test_a_killed_headless_shows_in_status_and_comes_back_per_its_restart_policy(stack: Stack, token: str) -> None:
    """Kill b2's headless (its process, as a crash would): status_update says it is down,
    Docker restarts it (restart: unless-stopped), the agent attaches again, it answers."""
    policy = stack.inspect("b2")["HostConfig"]["RestartPolicy"]["Name"]
    assert policy == "unless-stopped"
    async with await connect(stack, token) as client:
        await online(client, ("b2",))
        before = stack.inspect("b2")["RestartCount"]
        killed = time.monotonic()
        # Every process of the emulator's user; tini (PID 1) ignores SIGKILL from inside,
        # then exits with its child's status, which is what a crash looks like to Docker.
        docker("exec", stack.container("b2"), "sh", "-c", "kill -9 -1")

        def down(m: dict[str, Any]) -> bool:
            return m["type"] == "status_update" and m["server"] == "b2" and m["status"]["status"] != "running"

        went = await client.expect(down, RECOVERY)
        report(f"headless b2 killed -> status_update {went['status']['status']!r}", time.monotonic() - killed)
        async with asyncio.timeout(RECOVERY):
            while True:
                reply = await client.request({"type": "command", "command": "users", "server": "b2"}, WAIT)
                if reply["type"] == "command_response":
                    break
                assert reply["type"] == "error", reply  # starting, or not attached yet
                await asyncio.sleep(0.2)
        report("headless b2 killed -> restarted by Docker and answering again", time.monotonic() - killed)
        assert stack.inspect("b2")["RestartCount"] == before + 1
        status = await client.request({"type": "get_status", "server": "b2"}, WAIT)
        assert status["status"]["status"] == "running"


def test_every_image_is_labelled_with_its_role(stack: Stack) -> None:
    """org.resofleet.role on every container of the stack, from its image or its service."""
    roles = {}
    for service in ("rabbitmq", "gateway-1", "gateway-2", "lb", "agent-a", "agent-b", "a1", "b2", "notifier"):
        roles[service] = stack.inspect(service)["Config"]["Labels"]["org.resofleet.role"]
    assert roles == {
        "rabbitmq": "broker", "gateway-1": "gateway", "gateway-2": "gateway", "lb": "lb",
        "agent-a": "agent", "agent-b": "agent", "a1": "headless", "b2": "headless", "notifier": "notifier",
    }
    assert stack.inspect("notifier")["State"]["Health"]["Status"] == "healthy"  # its /readyz
    for service, user in (("gateway-1", "resofleet"), ("agent-a", "resofleet"), ("notifier", "resofleet"), ("a1", "65534:65534")):
        assert stack.inspect(service)["Config"]["User"].startswith(user)
    assert Path(stack.env_file).stat().st_mode & 0o077 == 0
