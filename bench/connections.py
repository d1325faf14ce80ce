"""Benchmark 3: idle connections on one gateway.

1,000 and 5,000 clients connect (with an admin token in the handshake) to one gateway over
RabbitMQ and stay idle, each with the default subscription (every server's events; no
server chatters here). Measured: the time to connect them all (swarm processes, 100
handshakes in flight each) and the gateway's RSS growth per connection once they are all
in, each size on a fresh gateway so that no memory freed by an earlier size is reused.

Baseline, same run, same clients: a bare ``websockets`` echo server (own process, the
gateway's frame and queue limits), no authentication, no sessions.

Target: under 30 KiB of RSS per idle connection.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from .fleet import Fleet
from .procs import Child, amqp_url, start_node, start_swarm
from .table import Row, Table

__all__ = ["run"]

SIZES: Final = (1000, 5000)
QUICK_SIZES: Final = (200,)
#: Connections per swarm process (each holds one file descriptor per connection).
CLIENTS_PER_SWARM: Final = 2500
SETTLE: Final = 1.0


async def _measure(target: Child, port: int, token: str | None, n: int, name: str) -> dict[str, Any]:
    await asyncio.sleep(SETTLE)
    rss0 = target.rss()
    procs = max(1, -(-n // CLIENTS_PER_SWARM))
    swarms = []
    try:
        for p in range(procs):
            count = n // procs + (1 if p < n % procs else 0)
            swarms.append(await start_swarm(
                {"port": port, "token": token, "clients": count, "concurrency": 100},
                name=f"{name}-swarm{p}",
            ))
        reports = [await s.ready(timeout=300) for s in swarms]
        await asyncio.sleep(SETTLE)
        rss1 = target.rss()
        connected = sum(r["connected"] for r in reports)
        return {
            "connected": connected,
            "failed": sum(r["failed"] for r in reports),
            "seconds": max(r["seconds"] for r in reports),
            "per_connection": (rss1 - rss0) / connected if connected else None,
            "rss": rss1,
        }
    finally:
        for s in swarms:
            await s.stop()


async def run(quick: bool = False) -> Table:
    sizes = QUICK_SIZES if quick else SIZES
    table = Table("idle connections on one gateway")
    if not amqp_url():
        table.notes.append("RESOFLEET_AMQP_URL is not set: skipped")
        return table
    auth = set()
    for n in sizes:
        echo = await start_node("ws-echo", {}, name=f"connections-echo-{n}")
        try:
            base = await _measure(echo, echo.port, None, n, f"connections-echo-{n}")
        finally:
            await echo.stop()
        async with Fleet("amqp", servers=0, name=f"connections-{n}") as fleet:
            assert fleet.gateway is not None
            auth.add(fleet.auth)
            r = await _measure(fleet.gateway, fleet.port, fleet.token, n, f"connections-{n}")
        per = r["per_connection"] / 1024 if r["per_connection"] is not None else None
        base_per = base["per_connection"] / 1024 if base["per_connection"] is not None else None
        table.add(Row(f"{n:,} idle clients: RSS per connection", per, "KiB",
                      "bare websockets", base_per)).judge(lambda row: row.value < 30, "< 30 KiB")
        table.add(Row(f"{n:,} idle clients: time to connect all", r["seconds"], "s",
                      "bare websockets", base["seconds"]))
        table.add(Row(f"{n:,} idle clients: gateway RSS", r["rss"] / 2**20, "MiB",
                      "bare websockets", base["rss"] / 2**20))
        if r["failed"] or base["failed"]:
            table.notes.append(f"{n:,}: {r['failed']} gateway / {base['failed']} baseline "
                               "connections failed")
    table.notes.insert(0, "authentication on (admin token in the handshake)" if auth == {True}
                       else "authentication OFF: this gateway has no security yet")
    table.notes.append(f"clients in swarm processes of up to {CLIENTS_PER_SWARM:,} "
                       "connections, 100 handshakes in flight each, on the same 2 cores")
    return table
