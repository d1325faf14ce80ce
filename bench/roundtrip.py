"""Benchmark 1: command round trip.

``{"type":"command","command":"status"}`` to its ``command_response``, through
ws -> gateway -> RabbitMQ -> agent -> emulator and back, and through LocalBus (gateway and
agent in one process, as ``resofleet up``). p50, p99 and throughput with 1, 10 and 100
concurrent clients (closed loop: one request in flight per client) over 1 and 10 servers;
client ``i`` asks server ``s{i mod S}``.

Baselines, same run, same clients:

- **ws echo**: a bare ``websockets`` server (own process) echoing the same frame;
- **rpc echo**: bare aio-pika direct reply-to RPC with the bus's wire options (publisher
  confirms, ``mandatory``, one queue per server consumed with the agent's prefetch and
  acked, own process), the request being the same msgpack ``BusRequest``;
- **driver**: the console driver alone against the emulator (``status``), one loop per
  console.

Printed too, at 1 client/1 server and 100 clients/10 servers: the CPU seconds per request
of the gateway and of the agent processes (psutil; LocalBus: the one process), so a
regression shows even when latency hides it. The case under **default settings** (audit
on, output streamed to the client, ``version``) is :mod:`bench.defaults`, run at the end.

Targets: p50 over RabbitMQ within 1.5x (ws echo + rpc echo + driver), over LocalBus within
1.5x (ws echo + driver), with one client on one server (more clients on a serial console
measure its queue, not the path); 100 clients over 10 servers at least 70% of the rpc echo
throughput with the same concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final


from .consoles import DirectConsole
from .fleet import Caller, Fleet
from .load import LoadResult, closed_loop
from .procs import amqp_url, start_node, unique_prefix
from .table import Row, Table

__all__ = ["run"]

CLIENTS: Final = (1, 10, 100)
SERVERS: Final = (1, 10)
DURATION: Final = 3.0
WARMUP: Final = 0.5
QUICK_CLIENTS: Final = (1, 10)
QUICK_SERVERS: Final = (1,)
QUICK_DURATION: Final = 0.5
QUICK_WARMUP: Final = 0.2

#: The emulator for latency runs: the default scenario (every quirk off, no chatter).
SCENARIO: Final = "default"


def _command(server: str, command: str = "status") -> dict[str, Any]:
    return {"type": "command", "command": command, "server": server}


async def _ws_clients(port: int, token: str | None, n: int) -> list[Caller]:
    return list(await asyncio.gather(*(Caller.open("127.0.0.1", port, token) for _ in range(n))))


async def _through_gateway(fleet: Fleet, clients: int, servers: int, duration: float,
                           warmup: float, *, quiet: bool = True) -> LoadResult:
    """``quiet``: clients subscribe to no server's events first, so the figure is the
    request path alone; otherwise every client also gets every command's output lines
    (the default subscription), as the seed's clients do."""
    callers = await _ws_clients(fleet.port, fleet.token, clients)
    try:
        if quiet:
            await asyncio.gather(*(c.call({"type": "subscribe", "servers": []}) for c in callers))
        ids = fleet.server_ids[:servers]
        calls = [
            (lambda c=c, req=_command(ids[i % len(ids)]): c.call(req))
            for i, c in enumerate(callers)
        ]
        return await closed_loop(calls, duration=duration, warmup=warmup)
    finally:
        for c in callers:
            c.close()


async def _ws_echo(port: int, clients: int, duration: float, warmup: float) -> LoadResult:
    callers = await _ws_clients(port, None, clients)
    try:
        calls = [(lambda c=c, req=_command(f"s{i}"): c.call(req)) for i, c in enumerate(callers)]
        return await closed_loop(calls, duration=duration, warmup=warmup)
    finally:
        for c in callers:
            c.close()


class _RpcClient:
    """The requesting side of the rpc echo: AmqpBus.request's wire options, nothing else."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._pending: dict[str, asyncio.Future[bytes]] = {}

    async def start(self) -> None:
        import aio_pika

        self.connection = await aio_pika.connect(self.url)
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = await self.channel.declare_queue("amq.rabbitmq.reply-to", passive=True)
        await queue.consume(self._on_reply, no_ack=True)

    async def _on_reply(self, message: Any) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def call(self, server: str, body: bytes) -> bytes:
        import aio_pika

        cid = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._pending[cid] = future
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                body, correlation_id=cid, reply_to="amq.rabbitmq.reply-to", expiration=15,
                delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            ),
            routing_key=f"{self.prefix}echo.{server}",
            mandatory=True,
        )
        async with asyncio.timeout(15):
            return await future

    async def close(self) -> None:
        await self.connection.close()


def _bus_body(server: str, command: str = "status") -> bytes:
    from resofleet.contracts import BusRequest, RunCommand, encode_bus

    return encode_bus(BusRequest(server=server, body=RunCommand(command=command), timeout=15.0,
                                 sub="bench", role="admin", client="127.0.0.1"))


async def _driver(consoles: list[DirectConsole], duration: float, warmup: float) -> LoadResult:
    calls: list[Callable[[], Awaitable[object]]] = [
        (lambda d=c.driver: d.run("status")) for c in consoles
    ]
    return await closed_loop(calls, duration=duration, warmup=warmup)


async def run(quick: bool = False) -> Table:
    clients_set = QUICK_CLIENTS if quick else CLIENTS
    servers_set = QUICK_SERVERS if quick else SERVERS
    duration = QUICK_DURATION if quick else DURATION
    warmup = QUICK_WARMUP if quick else WARMUP
    most = max(servers_set)
    table = Table("command round trip (status), closed loop")
    url = amqp_url()

    # -- baselines -----------------------------------------------------------------
    ws: dict[int, LoadResult] = {}
    echo = await start_node("ws-echo", {}, name="roundtrip-ws-echo")
    try:
        for c in clients_set:
            ws[c] = await _ws_echo(echo.port, c, duration, warmup)
    finally:
        await echo.stop()

    rpc: dict[tuple[int, int], LoadResult] = {}
    if url:
        prefix = unique_prefix()
        node = await start_node("rpc-echo", {"amqp": url, "prefix": prefix, "servers": most},
                                name="roundtrip-rpc-echo")
        client = _RpcClient(url, prefix)
        try:
            await client.start()
            for s in servers_set:
                for c in clients_set:
                    calls = [
                        (lambda srv=f"s{i % s}", body=_bus_body(f"s{i % s}"): client.call(srv, body))
                        for i in range(c)
                    ]
                    rpc[(c, s)] = await closed_loop(calls, duration=duration, warmup=warmup)
        finally:
            with contextlib.suppress(Exception):
                await client.close()
            await node.stop()

    # one loop per busy console: c clients over s servers keep min(c, s) consoles busy
    driver: dict[int, LoadResult] = {}
    consoles = list(await asyncio.gather(*(DirectConsole(f"d{i}", SCENARIO).start()
                                           for i in range(most))))
    try:
        for k in sorted({min(c, s) for c in clients_set for s in servers_set}):
            driver[k] = await _driver(consoles[:k], duration, warmup)
    finally:
        await asyncio.gather(*(c.close() for c in consoles), return_exceptions=True)

    for c in clients_set:
        table.add(Row(f"ws echo, {c} clients: p50", ws[c].p50_ms, "ms"))
        table.add(Row(f"ws echo, {c} clients: throughput", ws[c].throughput, "req/s"))
    for (c, s), r in sorted(rpc.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        table.add(Row(f"rpc echo, {c} clients/{s} queues: p50", r.p50_ms, "ms"))
        table.add(Row(f"rpc echo, {c} clients/{s} queues: throughput", r.throughput, "req/s"))
    for s, r in driver.items():
        table.add(Row(f"driver alone, {s} consoles: p50", r.p50_ms, "ms"))
        table.add(Row(f"driver alone, {s} consoles: throughput", r.throughput, "req/s"))

    # -- the system ----------------------------------------------------------------
    transports = (["amqp"] if url else []) + ["local"]
    if not url:
        table.notes.append("RESOFLEET_AMQP_URL is not set: RabbitMQ rows skipped")
    auth_states = set()
    for transport in transports:
        async with Fleet(transport, servers=most, scenario=SCENARIO,
                         name=f"roundtrip-{transport}") as fleet:
            auth_states.add(fleet.auth)
            for s in servers_set:
                for c in clients_set:
                    children = [ch for ch in (fleet.gateway, fleet.agent) if ch is not None]
                    before = [ch.cpu_seconds() for ch in children]
                    r = await _through_gateway(fleet, c, s, duration, warmup)
                    cpu = [ch.cpu_seconds() - b for ch, b in zip(children, before)]
                    label = f"{'RabbitMQ' if transport == 'amqp' else 'LocalBus'}, {c} clients/{s} servers"
                    d = driver[min(c, s)]
                    if transport == "amqp":
                        base = ws[c].p50_ms + rpc[(c, s)].p50_ms + d.p50_ms
                        base99 = ws[c].p99_ms + rpc[(c, s)].p99_ms + d.p99_ms
                        base_name = "ws+rpc+driver"
                    else:
                        base = ws[c].p50_ms + d.p50_ms
                        base99 = ws[c].p99_ms + d.p99_ms
                        base_name = "ws+driver"
                    row = table.add(Row(f"{label}: p50", r.p50_ms, "ms", base_name, base))
                    if c == 1 and s == 1:
                        row.judge(lambda r: r.ratio <= 1.5, "ratio <= 1.5")
                    table.add(Row(f"{label}: p99", r.p99_ms, "ms", base_name + " p99", base99))
                    if transport == "amqp":
                        row = table.add(Row(f"{label}: throughput", r.throughput, "req/s",
                                            "rpc echo", rpc[(c, s)].throughput))
                        if c == 100 and s == 10:
                            row.judge(lambda r: r.ratio >= 0.7, "ratio >= 0.7")
                    else:
                        table.add(Row(f"{label}: throughput", r.throughput, "req/s",
                                      "ws echo", ws[c].throughput))
                    if (c, s) in ((1, 1), (100, 10)) and r.calls:  # CPU per request, so a regression shows
                        names = ["gateway", "agent"] if transport == "amqp" else ["process (gateway + agent)"]
                        for name, seconds in zip(names, cpu):
                            table.add(Row(f"{label}: {name} CPU per request", seconds / r.calls * 1e6, "us"))
                    if r.errors:
                        table.notes.append(f"{label}: {r.errors} requests failed")
    table.notes.insert(0, "authentication on (admin token)" if auth_states == {True}
                       else "authentication OFF: this gateway has no security yet")
    table.notes.append(
        f"{duration:g} s per figure after {warmup:g} s warm-up; ratios of p50 sums are judged "
        "at 1 client/1 server (more clients queue on a serial console)"
    )
    from .defaults import default_case

    await default_case(table, quick=quick)
    return table
