"""Fan-out over a real bus: events published on the bus reach the clients watching them.

The events are published by the test on the bus (a separate connection over RabbitMQ),
exactly as an agent publishes them.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from contracts import (
    Ban,
    BansUpdate,
    BusEvent,
    ContainerOutputBatch,
    OutputLine,
    ServerState,
    Status,
    StatusUpdate,
)

from .client import WAIT, Client


def output(server: str, first: int, count: int, text: str = "line", epoch: str = "e1") -> BusEvent:
    lines = [OutputLine(seq=s, output=f"{text} {s}") for s in range(first, first + count)]
    return BusEvent(server=server, kind="output", body=ContainerOutputBatch(server=server, epoch=epoch, lines=lines))


def status(server: str) -> BusEvent:
    body = StatusUpdate(
        status=Status(status="running", name=server, id="c1", cpu_usage=1.5, memory_percent=2.5,
                      memory_used="1.0GB", memory_total="8.0GB"),
        server=server,
    )
    return BusEvent(server=server, kind="status", body=body)


async def ready(client: Client) -> None:
    """A ping round trip: the session is registered with the fan-out before it reads."""
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_output_arrives_one_line_per_message(start_gateway, bus_factory):
    """An output batch reaches a default client as one container_output per line, in order."""
    gateway = await start_gateway()
    agent_bus = await bus_factory()
    async with await Client.connect(gateway.url) as client:
        await ready(client)
        await agent_bus.publish(output("alpha", 1, 3))
        got = [await client.recv() for _ in range(3)]
    assert got == [
        {"type": "container_output", "output": f"line {s}", "server": "alpha", "seq": s, "epoch": "e1"}
        for s in (1, 2, 3)
    ]


async def test_batch_subscribers_get_batches_and_line_subscribers_lines(start_gateway, bus_factory):
    """subscribe batch:true switches one client to container_output_batch; others keep lines."""
    gateway = await start_gateway()
    agent_bus = await bus_factory()
    async with await Client.connect(gateway.url) as lines, await Client.connect(gateway.url) as batches:
        await ready(lines)
        assert await batches.request({"type": "subscribe", "servers": "*", "batch": True, "id": 1}) == {
            "type": "subscribed", "servers": ["*"], "batch": True, "id": 1,
        }
        await agent_bus.publish(output("alpha", 10, 2))
        assert await batches.recv() == {
            "type": "container_output_batch", "server": "alpha", "epoch": "e1",
            "lines": [{"seq": 10, "output": "line 10"}, {"seq": 11, "output": "line 11"}],
        }
        assert [(await lines.recv())["seq"] for _ in range(2)] == [10, 11]


async def test_status_worlds_and_bans_events_are_forwarded(start_gateway, bus_factory):
    """status/bans events reach watchers as the client messages the agent built."""
    gateway = await start_gateway()
    agent_bus = await bus_factory()
    async with await Client.connect(gateway.url) as client:
        await ready(client)
        await agent_bus.publish(status("alpha"))
        update = await client.recv()
        assert update["type"] == "status_update" and update["server"] == "alpha"
        assert update["status"]["cpu_usage"] == 1.5 and "id" not in update
        bans = BansUpdate(bans=[Ban(username="Troll", userId="U-troll", machineIds=["m1"])], server="alpha")
        await agent_bus.publish(BusEvent(server="alpha", kind="bans", body=bans))
        assert await client.recv() == {
            "type": "bans_update", "server": "alpha",
            "bans": [{"username": "Troll", "userId": "U-troll", "machineIds": ["m1"]}],
        }


async def test_pinned_and_subscribed_clients_see_only_their_servers(start_gateway, bus_factory):
    """/ws/<id> streams only that server; subscribe with a list streams only those."""
    gateway = await start_gateway()
    agent_bus = await bus_factory()
    async with (
        await Client.connect(gateway.url + "/alpha") as pinned,
        await Client.connect(gateway.url) as picky,
        await Client.connect(gateway.url) as everything,
    ):
        await ready(pinned)
        await ready(everything)
        assert (await picky.request({"type": "subscribe", "servers": ["beta"]}))["servers"] == ["beta"]
        await agent_bus.publish(output("alpha", 1, 1, "from alpha"))
        await agent_bus.publish(output("beta", 1, 1, "from beta"))
        await agent_bus.publish(output("alpha", 2, 1, "from alpha"))
        assert [m["output"] for m in [await pinned.recv(), await pinned.recv()]] == ["from alpha 1", "from alpha 2"]
        assert (await picky.recv())["output"] == "from beta 1"
        assert [(await everything.recv())["server"] for _ in range(3)] == ["alpha", "beta", "alpha"]
        # nothing else is queued for the pinned or the picky client
        for client in (pinned, picky):
            assert (await client.request({"type": "ping"}))["type"] == "pong"
            assert client.skipped == []


async def test_subscribe_to_nothing_silences_the_stream(start_gateway, bus_factory):
    """subscribe with an empty list stops every event; requests still work."""
    gateway = await start_gateway()
    agent_bus = await bus_factory()
    async with await Client.connect(gateway.url) as client:
        assert (await client.request({"type": "subscribe", "servers": []}))["servers"] == []
        await agent_bus.publish(output("alpha", 1, 5))
        await agent_bus.publish(status("alpha"))
        with pytest.raises(TimeoutError):
            await client.recv(timeout=0.3)


async def test_state_events_show_in_get_servers(start_gateway, bus_factory):
    """A server's lifecycle event updates the status get_servers reports."""
    from contracts import Announce, ServerPresence

    gateway = await start_gateway()
    agent_bus = await bus_factory()
    async with await Client.connect(gateway.url) as client:
        await ready(client)
        await agent_bus.broadcast(
            Announce(agent="a1", host="h1", servers=[ServerPresence(server="alpha", status="running")], interval=30)
        )

        async def status_of_alpha() -> str | None:
            servers = (await client.request({"type": "get_servers"}))["servers"]
            return servers[0]["status"] if servers else None

        async with asyncio.timeout(WAIT):
            while await status_of_alpha() != "running":
                await asyncio.sleep(0.02)
        await agent_bus.publish(BusEvent(server="alpha", kind="state", body=ServerState(server="alpha", state="restarting")))
        async with asyncio.timeout(WAIT):
            while await status_of_alpha() != "restarting":
                await asyncio.sleep(0.02)


async def test_slow_client_is_cut_off_while_a_fast_one_keeps_receiving(start_gateway, bus_factory):
    """A client that stops reading is closed with 1013 and counted; the fast one sees every line."""
    gateway = await start_gateway(slow_client_buffer=256 * 1024)
    agent_bus = await bus_factory()
    fast = await Client.connect(gateway.url)
    slow = await connect(gateway.url, max_queue=1, open_timeout=WAIT)  # never reads from here on
    await ready(fast)
    await slow.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(slow.recv(), WAIT))["type"] == "pong"

    per_event, text = 100, "x" * 2000
    seq = 0
    async with asyncio.timeout(60):
        while gateway.fanout.cut_off == 0:
            await agent_bus.publish(output("alpha", seq, per_event, text))
            seq += per_event
            while (await fast.recv())["seq"] != seq - 1:  # the fast client keeps up
                pass
    assert gateway.fanout.cut_off == 1
    await agent_bus.publish(output("alpha", seq, 1, "after the cut"))
    assert (await fast.recv())["output"] == f"after the cut {seq}"

    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(WAIT):
            while True:
                await slow.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1013
    assert "get_output" in info.value.rcvd.reason
    await fast.close()
