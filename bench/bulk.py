"""Benchmark: a bulk command over 10 servers against the same command on one server.

One client sends ``{"type":"command","command":C,"servers":["s*"]}`` (ten emulated servers
``s0``..``s9``) and waits for ``bulk_done``, one request at a time, through the gateway and
RabbitMQ (gateway and agent in their own processes), and through LocalBus (one process,
as ``resofleet up``). Two commands: ``status`` (fast: the figure is the path's own cost)
and ``save`` (the default scenario's console takes 0.2 s over it: the figure shows the
servers working in parallel, ``bulk_concurrency`` 16 letting all ten run at once).

Baselines, same run, same fleet, same client, taking turns with the bulk request (one of
each per round, so a machine whose load drifts weighs on all three alike):

- **one server**: the same command with ``server`` set, reply to reply: what a bulk
  request costs at least;
- **10 requests at once**: ten one-server requests sent together, until the tenth reply:
  what a client gets by fanning out on its own, without bulk.

Target: the bulk ``save`` within 1.5x one server's (the ten consoles work side by side).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, Final

import msgspec

from .fleet import Fleet
from .load import percentile
from .table import Row, Table
from .wsclient import RawClient, connect

__all__ = ["run"]

SERVERS: Final = 10
#: Requests timed per figure (each one a closed loop of one request in flight).
ROUNDS: Final = 40
QUICK_ROUNDS: Final = 6
#: Requests sent first and not timed (first commands, JIT-free Python: caches, pools).
WARMUP: Final = 3
#: Commands measured (see the module docstring).
COMMANDS: Final = ("status", "save")
#: Seconds one request may take before the benchmark gives up on it.
TIMEOUT: Final = 30.0


class _Reply(msgspec.Struct):
    type: str
    id: int | str | None = None


_decode = msgspec.json.Decoder(_Reply).decode


class _Client:
    """Sends a request and waits until it is answered ``replies`` times, or by ``bulk_done``."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[asyncio.Future[None], list[int]]] = {}
        self.raw: RawClient | None = None
        self.errors = 0

    @classmethod
    async def open(cls, port: int, token: str | None) -> _Client:
        client = cls()
        client.raw = await connect("127.0.0.1", port, path="/ws", token=token, on_message=client._on)
        return client

    def _on(self, payload: bytes) -> None:
        try:
            reply = _decode(payload)
        except msgspec.DecodeError:
            return
        entry = self._waiting.get(reply.id) if isinstance(reply.id, int) else None
        if entry is None:
            return
        future, left = entry
        if reply.type == "error":
            self.errors += 1
        left[0] -= 1
        if (reply.type == "bulk_done" or left[0] <= 0) and not future.done():
            future.set_result(None)

    async def send(self, requests: list[dict[str, Any]], *, replies: int) -> float:
        """Send ``requests`` under one id; seconds until ``replies`` answers (or bulk_done)."""
        assert self.raw is not None
        rid = next(self._ids)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = (future, [replies])
        started = time.perf_counter()
        for request in requests:
            self.raw.send(msgspec.json.encode({**request, "id": rid}))
        try:
            async with asyncio.timeout(TIMEOUT):
                await future
        finally:
            self._waiting.pop(rid, None)
        return time.perf_counter() - started

    def close(self) -> None:
        if self.raw is not None:
            self.raw.abort()


async def _timed(client: _Client, cases: dict[str, tuple[list[dict[str, Any]], int]],
                 rounds: int) -> dict[str, list[float]]:
    """Each case's times, ``(requests, replies)``: the cases take turns, one request each
    per round, so a machine whose load drifts during the run weighs on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for n in range(WARMUP + rounds):
        for name, (requests, replies) in cases.items():
            took = await client.send(requests, replies=replies)
            if n >= WARMUP:
                times[name].append(took)
    return times


async def _measure(table: Table, label: str, fleet: Fleet, client: _Client, command: str,
                   rounds: int) -> None:
    """The rows of one command on one transport (see the module docstring)."""
    times = await _timed(client, {
        "one": ([{"type": "command", "command": command, "server": "s0"}], 1),
        "fanned": ([{"type": "command", "command": command, "server": s} for s in fleet.server_ids],
                   SERVERS),
        "bulk": ([{"type": "command", "command": command, "servers": ["s*"]}], SERVERS + 1),
    }, rounds)
    p50 = {name: percentile(v, 0.5) * 1000 for name, v in times.items()}
    figure = f"{label}, {command}: bulk over {SERVERS}"
    row = table.add(Row(f"{figure}, p50", p50["bulk"], "ms", "one server", p50["one"]))
    if command == "save":
        row.judge(lambda r: r.ratio is not None and r.ratio <= 1.5, "ratio <= 1.5")
    table.add(Row(f"{figure}, p50", p50["bulk"], "ms", f"{SERVERS} requests at once", p50["fanned"]))
    table.add(Row(f"{figure}, p99", percentile(times["bulk"], 0.99) * 1000, "ms",
                  "one server p99", percentile(times["one"], 0.99) * 1000))


async def run(quick: bool = False) -> Table:
    rounds = QUICK_ROUNDS if quick else ROUNDS
    table = Table(f"bulk command over {SERVERS} servers vs one server")
    errors = 0
    for transport in ("amqp", "local"):
        label = "RabbitMQ" if transport == "amqp" else "LocalBus"
        name = f"bulk-{transport}"
        async with Fleet(transport, servers=SERVERS, scenario="default", name=name) as fleet:
            client = await _Client.open(fleet.port, fleet.token)
            try:
                await client.send([{"type": "subscribe", "servers": []}], replies=1)  # no events
                for command in COMMANDS:
                    await _measure(table, label, fleet, client, command, rounds)
                errors += client.errors
            finally:
                client.close()
    table.notes.append(
        f"{rounds} timed requests per figure after {WARMUP} untimed, the three kinds taking "
        f"turns; one request in flight; bulk_concurrency 16 (the default), so all {SERVERS} "
        f"servers run at once; {errors} error replies"
    )
    return table
