"""Benchmark 2: fan-out of console output to many clients on one gateway.

Ten emulated servers chatter (engine log lines, :file:`bench/scenarios/chatter.toml`,
200 lines/s each: 2,000 lines/s in all) through one agent and RabbitMQ to one gateway.
10, 100 and 1,000 clients (in swarm processes, :mod:`bench.swarm`) watch one server or all
ten, subscribed with ``"batch": true`` or line by line (the seed's mode). Measured over a
window, after every client subscribed:

- console lines delivered per second (all clients together);
- loss: gaps in the ``seq`` each client saw per server (must be zero while clients keep
  up), the clients the gateway cut off for being slow, and the share of the offered lines
  (the configured rate x servers watched x clients) that was delivered per second;
- gateway CPU seconds per million line deliveries (its own process, user + system);
- the gateway's peak RSS during the window.

Baseline, same run, same clients: **bare broadcast**, a ``websockets`` server that makes
the same lines at the same rate and writes them with ``websockets.broadcast`` the same
way (one message per line, or one batch per 10 ms tick), without bus or agent.

Target: 1,000 clients x 2,000 lines/s from 10 servers with zero loss on one gateway.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Final

from .fleet import Fleet
from .procs import Child, amqp_url, start_node, start_swarm
from .table import Row, Table

__all__ = ["run"]

SCENARIO: Final = str(Path(__file__).resolve().parent / "scenarios" / "chatter.toml")
RATE: Final = 200.0  # lines/s per server
SERVERS: Final = 10
#: (servers watched, clients, batch). Line by line stops at 100 clients: 1,000 clients x
#: 2,000 lines/s is two million WebSocket messages a second, several times what even the
#: bare broadcast baseline writes from one Python process here (it has no slow-client
#: cut-off either, so it only buffers).
CASES: Final = [
    *((w, c, True) for w in (1, 10) for c in (10, 100, 1000)),
    *((w, c, False) for w in (1, 10) for c in (10, 100)),
]
QUICK_SERVERS: Final = 2
QUICK_CASES: Final = [(2, 10, True), (2, 10, False)]
WINDOW: Final = 3.0
QUICK_WINDOW: Final = 1.0
SETTLE: Final = 1.0
#: Clients per swarm process: two processes for a thousand, one per core.
CLIENTS_PER_SWARM: Final = 500


async def _swarms(port: int, token: str | None, clients: int, watch: int, batch: bool,
                  name: str) -> list[Child]:
    procs = max(1, -(-clients // CLIENTS_PER_SWARM))
    servers: Any = "*" if watch > 1 else [f"s{i}" for i in range(watch)]
    swarms = []
    for p in range(procs):
        n = clients // procs + (1 if p < clients % procs else 0)
        swarms.append(await start_swarm({
            "port": port, "token": token, "clients": n,
            "subscribe": {"servers": servers, "batch": batch},
        }, name=f"{name}-swarm{p}"))
    for s in swarms:
        await s.ready(timeout=120)
    return swarms


async def _window(swarms: list[Child], window: float, gateway: Child | None) -> dict[str, Any]:
    await asyncio.sleep(SETTLE)
    cpu0 = gateway.cpu_seconds() if gateway else 0.0
    if gateway:
        gateway.reset_peak_rss()
    for s in swarms:
        s.tell("start")
    for s in swarms:
        await s.readline(timeout=30)
    await asyncio.sleep(window)
    for s in swarms:
        s.tell("stop")
    results = []
    for s in swarms:
        while True:
            line = await s.readline(timeout=60)
            if line.startswith(b"RESULT "):
                results.append(json.loads(line[7:]))
                break
    total: dict[str, Any] = {"lines": 0, "frames": 0, "lost": 0, "cut": 0, "silent": 0,
                             "elapsed": max(r["elapsed"] for r in results)}
    spans: dict[str, list[int]] = {}
    for r in results:
        for key in ("lines", "frames", "lost", "silent"):
            total[key] += r[key]
        total["cut"] += sum(n for code, n in r["closed"].items())
        for server, (first, low, high) in r["spans"].items():
            span = spans.setdefault(server, [first, low, high])
            span[0], span[1], span[2] = min(span[0], first), min(span[1], low), max(span[2], high)
    total["lag"] = max((high - low for _, low, high in spans.values()), default=0)
    if gateway:
        total["cpu"] = gateway.cpu_seconds() - cpu0
        total["peak_rss"] = gateway.peak_rss()
    return total


async def _quiesce(child: Child, *, limit: float = 60.0) -> None:
    """Wait until ``child`` is nearly idle: a gateway left behind by an overloaded case
    still drains its event queue, which would pour old lines on the next case."""
    deadline = asyncio.get_running_loop().time() + limit
    while asyncio.get_running_loop().time() < deadline:
        cpu = child.cpu_seconds()
        await asyncio.sleep(0.5)
        if child.cpu_seconds() - cpu < 0.05:  # under 10% of a core
            return


async def _case(port: int, token: str | None, watch: int, clients: int, batch: bool,
                window: float, gateway: Child | None, name: str) -> dict[str, Any] | None:
    """One case's figures; ``None`` when the clients could not even connect or report
    (the server is overloaded): a row of dashes, never a crash."""
    swarms: list[Child] = []
    if gateway is not None:
        await _quiesce(gateway)
    try:
        swarms = await _swarms(port, token, clients, watch, batch, name)
        return await _window(swarms, window, gateway)
    except (TimeoutError, RuntimeError):
        return None
    finally:
        for s in swarms:
            await s.stop()


async def run(quick: bool = False) -> Table:
    cases = QUICK_CASES if quick else CASES
    window = QUICK_WINDOW if quick else WINDOW
    servers = QUICK_SERVERS if quick else SERVERS
    table = Table(f"fan-out: {servers} servers x {RATE:g} lines/s of console chatter")
    if not amqp_url():
        table.notes.append("RESOFLEET_AMQP_URL is not set: skipped")
        return table

    baseline: dict[tuple[int, int, bool], dict[str, Any] | None] = {}
    bare = await start_node("ws-broadcast", {"servers": servers, "rate": RATE},
                            name="fanout-broadcast")
    try:
        for watch, clients, batch in cases:
            baseline[(watch, clients, batch)] = await _case(
                bare.port, None, watch, clients, batch, window, bare, "fanout-bare")
    finally:
        await bare.stop()

    async with Fleet("amqp", servers=servers, scenario=SCENARIO, name="fanout",
                     emulator_args=("--chatter-rate", f"{RATE:g}")) as fleet:
        assert fleet.gateway is not None
        for watch, clients, batch in cases:
            r = await _case(fleet.port, fleet.token, watch, clients, batch, window,
                            fleet.gateway, "fanout")
            b = baseline[(watch, clients, batch)]
            if r is None or b is None:
                table.notes.append(f"{watch} servers, {clients} clients, batch={batch}: did not "
                                   "complete (clients could not connect or report in time)")
                continue
            mode = "batch" if batch else "per line"
            label = f"{clients} clients, {watch} server{'s' if watch > 1 else ''}, {mode}"
            offered = RATE * watch * clients
            rate, brate = r["lines"] / r["elapsed"], b["lines"] / b["elapsed"]
            row = table.add(Row(f"{label}: lines delivered/s", rate, "lines/s",
                                "bare broadcast", brate))
            row.note = f"offered {offered:,.0f}/s"
            loss = r["lost"]
            delivered = rate / offered
            row = table.add(Row(f"{label}: lost lines (gaps)", loss, "", "bare broadcast",
                                b["lost"]))
            if r["cut"] or r["silent"]:
                table.notes.append(
                    f"{label}: {r['cut']} clients cut off, {r['silent']} received nothing")
            row = table.add(Row(f"{label}: delivered share of offered", delivered * 100, "%",
                                "bare broadcast",
                                brate / offered * 100))
            if watch == SERVERS and clients == 1000 and batch:
                cut = r["cut"]
                row.judge(lambda row: row.value >= 95.0 and loss == 0 and cut == 0,
                          ">= 95%, no gap, no cut-off")
            cpu = r["cpu"] / r["lines"] * 1e6 if r["lines"] else None
            bcpu = b["cpu"] / b["lines"] * 1e6 if b["lines"] else None
            table.add(Row(f"{label}: gateway CPU s per million deliveries", cpu, "s",
                          "bare broadcast", bcpu))
            table.add(Row(f"{label}: gateway peak RSS", r["peak_rss"] / 2**20, "MiB",
                          "bare broadcast", b["peak_rss"] / 2**20))
        table.notes.insert(0, "authentication on (admin token)" if fleet.auth
                           else "authentication OFF: this gateway has no security yet")
        if fleet.restarts:
            table.notes.append(f"{fleet.restarts} chattering console(s) had to be restarted "
                               "before they answered (agent sync; see README, Findings)")
    table.notes.append(
        f"{window:g} s window per case; clients in {CLIENTS_PER_SWARM}-client swarm processes "
        "on the same 2 cores as the gateway, agent, broker and emulators"
    )
    return table
