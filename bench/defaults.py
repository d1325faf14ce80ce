"""Benchmark 1b (part of ``roundtrip``): the command round trip under **default settings**.

What a dashboard sees from a fleet run with the commands' defaults: the agent and the
gateway keep their audit logs (``agent.jsonl``, ``gateway.jsonl``, as ``resofleet
up``/``gateway``/``agent`` write them unless told not to), the client keeps the default
subscription (every server it may see), so each command's echo and answer lines stream to
it while it waits for the next answer, and it presents an admin token. One client sends
``version`` commands one after another to one server:

- over RabbitMQ, gateway and agent in their own processes (``resofleet gateway`` +
  ``resofleet agent``);
- over LocalBus, both in one process (``resofleet up``).

Baselines, same run: a bare ``websockets`` echo of the same frame, the bare aio-pika
direct reply-to RPC with the same ``BusRequest``, and the console driver alone running
``version`` against the emulator (a raw pipe loop). Target: p50 within 1.5x of the sum of
the bare parts, on each bus.

The five loops **take turns** (:data:`TURN` seconds each, :data:`TURNS` rounds), so a
change in the machine's load (two shared cores) hits every figure alike. CPU per request
(psutil, user + system, the child's threads included) is read around the system's own
turns: the gateway's and the agent's over RabbitMQ, the one process's over LocalBus.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Final

from .consoles import DirectConsole
from .fleet import Caller, Fleet
from .load import percentile
from .procs import Child, amqp_url, start_node, unique_prefix
from .roundtrip import _bus_body, _command, _RpcClient
from .table import Row, Table

__all__ = ["COMMAND", "default_case", "run"]

#: The command: read-only, one short line of answer, and audited like any other command.
COMMAND: Final = "version"
#: Seconds of one turn of one loop, and rounds of turns (every loop gets TURNS turns).
TURN: Final = 0.6
TURNS: Final = 6
QUICK_TURN: Final = 0.2
QUICK_TURNS: Final = 2
#: Requests before the first turn, so every path is warm (imports, caches, connections).
WARM: Final = 50

Call = Callable[[], Awaitable[object]]


class _Loop:
    """One sequential loop (one request in flight), timed over its turns, with the CPU
    seconds of ``children`` read around them."""

    def __init__(self, name: str, call: Call, children: tuple[Child, ...] = ()) -> None:
        self.name = name
        self.call = call
        self.children = children
        self.latencies: list[float] = []
        self.calls = 0
        self.cpu = [0.0] * len(children)

    async def warm(self) -> None:
        for _ in range(WARM):
            await self.call()

    async def turn(self, seconds: float) -> None:
        clock = time.perf_counter
        before = [c.cpu_seconds() for c in self.children]
        end = clock() + seconds
        while (t0 := clock()) < end:
            await self.call()
            self.latencies.append(clock() - t0)
            self.calls += 1
        for i, child in enumerate(self.children):
            self.cpu[i] += child.cpu_seconds() - before[i]

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    def cpu_us(self, i: int) -> float:
        return self.cpu[i] / self.calls * 1e6 if self.calls else float("nan")


async def default_case(table: Table, *, quick: bool = False) -> None:
    """Add the default-settings rows to ``table`` (see the module docstring)."""
    turn, turns = (QUICK_TURN, QUICK_TURNS) if quick else (TURN, TURNS)
    url = amqp_url()
    async with contextlib.AsyncExitStack() as stack:
        audit_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-audit-"))
        fleets: list[tuple[str, Fleet]] = []
        # the audit logs close (flushed, fsynced) when their fleets stop: counted after that
        stack.push_async_callback(_count_audited, table, audit_dir, fleets)
        loops: dict[str, _Loop] = {}

        echo = await start_node("ws-echo", {}, name="defaults-ws-echo")
        stack.push_async_callback(echo.stop)
        ws = await Caller.open("127.0.0.1", echo.port, None)
        stack.callback(ws.close)
        frame = _command("s0", COMMAND)
        loops["ws"] = _Loop("ws echo", lambda: ws.call(frame))

        console = await DirectConsole("d0").start()
        stack.push_async_callback(console.close)
        loops["driver"] = _Loop("driver", lambda: console.driver.run(COMMAND))

        if url:
            prefix = unique_prefix()
            node = await start_node("rpc-echo", {"amqp": url, "prefix": prefix, "servers": 1},
                                    name="defaults-rpc-echo")
            stack.push_async_callback(node.stop)
            rpc = _RpcClient(url, prefix)
            await rpc.start()
            stack.push_async_callback(rpc.close)
            body = _bus_body("s0", COMMAND)
            loops["rpc"] = _Loop("rpc echo", lambda: rpc.call("s0", body))
            fleets.append(("amqp", Fleet("amqp", servers=1, name="defaults-amqp",
                                         audit_dir=f"{audit_dir}/amqp")))
        fleets.append(("local", Fleet("local", servers=1, name="defaults-local",
                                      audit_dir=f"{audit_dir}/local")))
        for transport, fleet in fleets:
            await fleet.start()
            stack.push_async_callback(fleet.stop)
            caller = await Caller.open("127.0.0.1", fleet.port, fleet.token)
            stack.callback(caller.close)
            request = _command("s0", COMMAND)
            children = tuple(c for c in (fleet.gateway, fleet.agent) if c is not None)
            loops[transport] = _Loop(transport, lambda c=caller, r=request: c.call(r), children)

        for loop in loops.values():
            await loop.warm()
        for _ in range(turns):
            for loop in loops.values():
                await loop.turn(turn)
        _rows(table, loops)
    table.notes.append(
        f"default settings: `{COMMAND}`, one client, one server, audit logs on, "
        "the client subscribed to the server's output, admin token; "
        f"the five loops take turns, {turns} x {turn:g} s each"
    )


def _rows(table: Table, loops: dict[str, _Loop]) -> None:
    ws, driver, rpc = loops["ws"], loops["driver"], loops.get("rpc")
    for transport in ("amqp", "local"):
        loop = loops.get(transport)
        if loop is None:
            continue
        label = f"default settings, {'RabbitMQ' if transport == 'amqp' else 'LocalBus'}"
        parts = [ws, driver] + ([rpc] if transport == "amqp" and rpc is not None else [])
        name = "+".join(p.name.split()[0] for p in (ws, *(parts[2:]), driver))
        base = sum(p.p(0.5) for p in parts)
        table.add(Row(f"{label}: p50", loop.p(0.5), "ms", name, base)).judge(
            lambda r: r.ratio <= 1.5, "ratio <= 1.5")
        table.add(Row(f"{label}: p99", loop.p(0.99), "ms", name + " p99",
                      sum(p.p(0.99) for p in parts)))
        if transport == "amqp":
            table.add(Row(f"{label}: gateway CPU per request", loop.cpu_us(0), "us"))
            table.add(Row(f"{label}: agent CPU per request", loop.cpu_us(1), "us"))
        else:
            table.add(Row(f"{label}: process CPU per request (gateway + agent)",
                          loop.cpu_us(0), "us"))
    for part in (ws, *([rpc] if rpc is not None else []), driver):
        table.add(Row(f"default settings, {part.name} ({COMMAND}): p50", part.p(0.5), "ms"))


async def _count_audited(table: Table, audit_dir: str, fleets: list[tuple[str, Fleet]]) -> None:
    """Note what the agents' audit logs hold once their fleets stopped."""
    counts = []
    for transport, _ in fleets:
        path = f"{audit_dir}/{transport}/agent.jsonl"
        try:
            with open(path, "rb") as f:
                counts.append(f"{transport}: {sum(1 for _ in f):,} agent records")
        except OSError:
            counts.append(f"{transport}: no agent audit file")
    table.notes.append("audit records written: " + "; ".join(counts))


async def run(quick: bool = False) -> Table:
    """``python -m bench defaults``: this case alone."""
    table = Table("command round trip under default settings (version), taking turns")
    await default_case(table, quick=quick)
    return table
