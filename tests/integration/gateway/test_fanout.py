"""Fan-out over a real bus: events published on the bus reach the clients watching them.

The events are published by the test on the bus (a separate connection over RabbitMQ),
exactly as an agent publishes them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from resofleet.contracts import (
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
    """A subscribe round trip: a session's bindings are made in the background (it never
    waits for the broker to start reading), and `subscribed` comes once they are in place."""
    assert (await client.request({"type": "subscribe", "servers": "*"}))["type"] == "subscribed"


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
    from resofleet.contracts import Announce, ServerPresence

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


# -- rounds: bursts merged for batch clients, one message per line for the others -------

BURST_EVENTS, BURST_LINES = 200, 5


async def publish_burst(agent_bus, server: str = "alpha") -> list[int]:
    """BURST_EVENTS output events of BURST_LINES lines each, as fast as the bus takes them."""
    for n in range(BURST_EVENTS):
        await agent_bus.publish(output(server, 1 + n * BURST_LINES, BURST_LINES))
    return list(range(1, 1 + BURST_EVENTS * BURST_LINES))


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_a_burst_reaches_a_batch_client_merged_in_seq_order_and_whole(
    start_gateway, bus_factory, compression
):
    """A burst of batches arrives in fewer, bigger batches holding every line once, in order."""
    gateway = await start_gateway(compression=compression is not None)
    agent_bus = await bus_factory()
    async with await Client.connect(gateway.url, compression=compression) as client:
        assert (await client.request({"type": "subscribe", "servers": "*", "batch": True}))["batch"]
        expected = await publish_burst(agent_bus)
        seen: list[int] = []
        frames = 0
        while len(seen) < len(expected):
            batch = await client.recv()
            assert batch["type"] == "container_output_batch" and batch["server"] == "alpha"
            seen += [line["seq"] for line in batch["lines"]]
            frames += 1
    assert seen == expected
    assert frames < BURST_EVENTS


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_a_burst_reaches_a_line_client_one_message_per_line_in_order(
    start_gateway, bus_factory, compression
):
    """In line mode every line of a burst is its own container_output message, in seq order."""
    gateway = await start_gateway(compression=compression is not None)
    agent_bus = await bus_factory()
    async with await Client.connect(gateway.url, compression=compression) as client:
        await ready(client)
        expected = await publish_burst(agent_bus)
        got = [await client.recv() for _ in expected]
    assert [m["type"] for m in got] == ["container_output"] * len(expected)
    assert [m["seq"] for m in got] == expected
    assert got[-1] == {
        "type": "container_output", "output": f"line {expected[-1]}", "server": "alpha",
        "seq": expected[-1], "epoch": "e1",
    }


async def test_merged_rounds_keep_scope_and_updates_in_place(start_gateway, bus_factory):
    """Two servers' bursts and a status update in one stream: a pinned batch client gets only
    its server, whole and in order, with the update after the output published before it."""
    gateway = await start_gateway()
    agent_bus = await bus_factory()
    async with await Client.connect(gateway.url + "/alpha") as pinned:
        assert (await pinned.request({"type": "subscribe", "servers": "*", "batch": True}))["batch"]
        for n in range(50):
            await agent_bus.publish(output("beta", 1 + n * 4, 4, "from beta"))
            await agent_bus.publish(output("alpha", 1 + n * 4, 4))
            if n == 24:
                await agent_bus.publish(status("alpha"))
        seen: list[int] = []
        kinds: list[str] = []
        while len(seen) < 200:
            message = await pinned.recv()
            assert message["server"] == "alpha"
            kinds.append(message["type"])
            if message["type"] == "status_update":
                assert seen == list(range(1, 101))  # everything published before it
            else:
                seen += [line["seq"] for line in message["lines"]]
        assert seen == list(range(1, 201)) and kinds.count("status_update") == 1
        assert (await pinned.request({"type": "ping"}))["type"] == "pong"
        assert pinned.skipped == []


async def test_a_seq_published_twice_reaches_a_client_once(start_gateway, bus_factory):
    """The same lines published again (same epoch) are not sent again."""
    gateway = await start_gateway()
    agent_bus = await bus_factory()
    async with await Client.connect(gateway.url) as client:
        await ready(client)
        await agent_bus.publish(output("alpha", 1, 2))
        await agent_bus.publish(output("alpha", 1, 3))
        assert [(await client.recv())["seq"] for _ in range(3)] == [1, 2, 3]
        await agent_bus.publish(output("alpha", 1, 1, epoch="e2"))  # the agent restarted
        assert (await client.recv())["epoch"] == "e2"


@pytest.mark.parametrize("batch", [False, True])
async def test_a_stalled_client_is_cut_off_while_a_fast_one_keeps_every_line(
    start_gateway, bus_factory, batch
):
    """Under a steady stream, a client that never reads is closed with 1013 and a reading one,
    in either mode and without compression, gets every seq once and in order."""
    gateway = await start_gateway(slow_client_buffer=256 * 1024)
    agent_bus = await bus_factory()
    fast = await Client.connect(gateway.url, compression=None)
    if batch:
        assert (await fast.request({"type": "subscribe", "servers": "*", "batch": True}))["batch"]
    else:
        await ready(fast)
    slow = await connect(gateway.url, max_queue=1, open_timeout=WAIT, compression=None)
    await slow.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(slow.recv(), WAIT))["type"] == "pong"

    seen: list[int] = []

    async def read_until(last: int) -> None:
        while not seen or seen[-1] < last:
            message = await fast.recv()
            if message["type"] == "container_output_batch":
                seen.extend(line["seq"] for line in message["lines"])
            else:
                seen.append(message["seq"])

    per_event, text, seq = 20, "x" * 1000, 1
    async with asyncio.timeout(60):
        while gateway.fanout.cut_off == 0:
            for _ in range(5):  # a few events per turn: rounds carry several of them
                await agent_bus.publish(output("alpha", seq, per_event, text))
                seq += per_event
            await read_until(seq - 1)
    assert gateway.fanout.cut_off == 1
    await agent_bus.publish(output("alpha", seq, 1))
    await read_until(seq)
    assert seen == list(range(1, seq + 1))

    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(WAIT):
            while True:
                await slow.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1013
    await fast.close()


async def test_stalled_clients_together_stay_within_the_gateway_budget(start_gateway, bus_factory):
    """Clients each under their own bound, but over the gateway's budget together, are cut
    off (1013) furthest behind first, while a reading client keeps every line."""
    gateway = await start_gateway(slow_client_buffer=4 * 1024 * 1024, slow_clients_budget=512 * 1024)
    agent_bus = await bus_factory()
    fast = await Client.connect(gateway.url, compression=None)
    await ready(fast)
    stalled = []
    for _ in range(3):
        ws = await connect(gateway.url, max_queue=1, open_timeout=WAIT, compression=None)
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "pong"
        stalled.append(ws)

    seen: list[int] = []

    async def read_until(last: int) -> None:
        while not seen or seen[-1] < last:
            seen.append((await fast.recv())["seq"])

    per_event, text, seq = 20, "x" * 1000, 1
    async with asyncio.timeout(60):
        while gateway.fanout.cut_off < 2:
            for _ in range(5):
                await agent_bus.publish(output("alpha", seq, per_event, text))
                seq += per_event
            await read_until(seq - 1)
    assert seen == list(range(1, seq))

    async def drained(ws: Any) -> int | None:
        """The close code once everything queued for ``ws`` is read; None: still open (a
        ping sent now is answered after what was queued)."""
        try:
            async with asyncio.timeout(WAIT):
                await ws.send(json.dumps({"type": "ping", "id": "still-there"}))
                while json.loads(await ws.recv()).get("id") != "still-there":
                    pass
                return None
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else -1

    codes = await asyncio.gather(*(drained(ws) for ws in stalled))
    assert sorted(codes, key=str) == [1013, 1013, None]  # two cut off; the third fits the budget
    for ws in stalled:
        await ws.close()
    await fast.close()
