"""A bounded soak of a gateway process: many idle connections, and churn of clients that
subscribe, ask, and vanish without a goodbye.

Clients that drop their TCP connection mid-conversation are the normal case for a
browser on a flaky network; a gateway must forget them within seconds, at no cost to the
clients that stay, and without growing. Over the in-process bus (`resofleet up`) and over
RabbitMQ (`resofleet agent` + `resofleet gateway`), each as the processes a provider runs:

- IDLE connections stay open throughout;
- two rounds of churn, CHURN_RATE connections a second for CHURN_SECONDS each: every one
  subscribes to every server, asks for status and a console command, pings, and aborts its
  TCP connection as soon as the pong arrives;
- a steady client pings all along.

Asserted: every churned client's first pong and every steady ping come at once; after each
round the gateway's descriptors fall back to what the idle connections hold, within
seconds; its memory after the second round is where the first left it; once the idle
clients leave too, its descriptors are back to where they started. Longer soaks live in
bench/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.timing import AT_ONCE

from .test_commands import START_TIMEOUT, clean_env, resofleet

#: Connections held open for the whole soak.
IDLE = 1000
#: New connections per second while churning, and seconds of each of the two rounds.
CHURN_RATE = 150
CHURN_SECONDS = 8.0
#: Servers each churning client watches that no other client watches.
WATCHED = 3
#: Churning clients in flight at most (each lives a few milliseconds).
CHURN_CONCURRENCY = 50
#: Seconds a dead client's session may outlive its connection ("within seconds").
SESSION_END = 10.0
#: Descriptors the gateway may hold beyond its baseline after churn (the bus, log files,
#: a console command's pipe: none of them per client).
FD_SLACK = 8
#: Growth of the gateway's resident memory from the first round's end to the second's.
RSS_SLACK = 16 * 1024 * 1024
SERVER = "soak-1"


@dataclass
class Stats:
    first_pong: list[float] = field(default_factory=list)
    steady: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def resident(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def settle(pid: int, at_most: int, timeout: float) -> int:
    """Wait until the gateway holds at most ``at_most`` descriptors; how many it holds."""
    deadline = time.monotonic() + timeout
    while (n := descriptors(pid)) > at_most:
        if time.monotonic() > deadline:
            raise AssertionError(f"the gateway still holds {n} descriptors (expected <= {at_most})")
        await asyncio.sleep(0.1)
    return n


@contextlib.asynccontextmanager
async def gateway_process(transport: str, tmp: Path, amqp_url: str | None) -> AsyncIterator[tuple[str, int]]:
    """A gateway process (with an agent, in one process or two); its URL and pid."""
    config = tmp / "fleet.toml"
    bus = f'[bus]\nurl = "{amqp_url}"\nprefix = "soak-{uuid.uuid4().hex[:8]}."\n' if amqp_url else ""
    config.write_text(
        bus
        + f"[gateway.limits]\nconnections_per_address = {IDLE * 4}\n"
        + '[agent]\nname = "soak-host"\naudit_log = false\n'
        + f'[[servers]]\nid = "{SERVER}"\nruntime = "emulator"\n'
    )
    env = clean_env(RESOFLEET_CONFIG=str(config), RESOFLEET_LOG_LEVEL="WARNING",
                    RESOFLEET_AUDIT_DIR=str(tmp / "audit"))
    processes: list[asyncio.subprocess.Process] = []

    async def spawn(*args: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *resofleet(), *args, cwd=tmp, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        processes.append(process)
        return process

    async def first_line(process: asyncio.subprocess.Process) -> str:
        assert process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            return (await process.stdout.readline()).decode()

    try:
        if transport == "amqp":
            assert "serving" in await first_line(await spawn("agent"))
            gateway = await spawn("gateway", "--port", "0")
        else:
            gateway = await spawn("up", "--port", "0")
        line = await first_line(gateway)
        url = line.split(" on ", 1)[1].split()[0]
        yield url, gateway.pid
    finally:
        for process in reversed(processes):
            if process.returncode is None:
                process.terminate()
                try:
                    async with asyncio.timeout(START_TIMEOUT):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def pong(ws: ClientConnection, request_id: object) -> None:
    await ws.send(json.dumps({"type": "ping", "id": request_id}))
    while json.loads(await ws.recv()).get("id") != request_id:
        pass


async def vanishing_client(url: str, stats: Stats, n: int) -> None:
    """Connect, subscribe, ask, ping, and drop the TCP connection without a goodbye. Each
    client watches servers of its own besides the real one (ids nobody serves yet, as a
    dashboard watching a fleet that is still starting does), so every session has
    subscriptions that no other session shares."""
    started = time.perf_counter()
    watched = [SERVER, *(f"soak-{n}-{i}" for i in range(WATCHED))]
    try:
        async with asyncio.timeout(START_TIMEOUT):
            ws = await connect(url, compression=None)
            await ws.send(json.dumps({"type": "subscribe", "servers": watched, "batch": True}))
            await ws.send(json.dumps({"type": "get_status", "server": SERVER}))
            await ws.send(json.dumps({"type": "command", "command": "version", "server": SERVER}))
            await pong(ws, "hello")
        stats.first_pong.append(time.perf_counter() - started)
        ws.transport.abort()
    except Exception as exc:  # recorded and asserted on: a client that failed to connect
        stats.failed.append(repr(exc))


async def churn(url: str, stats: Stats) -> None:
    slots = asyncio.Semaphore(CHURN_CONCURRENCY)
    tasks: set[asyncio.Task[None]] = set()

    async def one(n: int) -> None:
        try:
            await vanishing_client(url, stats, n)
        finally:
            slots.release()

    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(int(CHURN_RATE * CHURN_SECONDS)):
        await asyncio.sleep(max(0.0, start + i / CHURN_RATE - loop.time()))
        await slots.acquire()
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)


async def steady_client(url: str, stats: Stats, stop: asyncio.Event) -> None:
    async with connect(url, compression=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "servers": []}))
        n = 0
        while not stop.is_set():
            n += 1
            started = time.perf_counter()
            async with asyncio.timeout(START_TIMEOUT):
                await pong(ws, n)
            stats.steady.append(time.perf_counter() - started)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await stop.wait()


@pytest.mark.parametrize("transport", ["local", "amqp"])
async def test_churn_leaves_no_session_behind_and_costs_the_others_nothing(transport, tmp_path, request):
    amqp_url = request.getfixturevalue("amqp_url") if transport == "amqp" else None
    async with gateway_process(transport, tmp_path, amqp_url) as (url, pid):
        start_fds = descriptors(pid)
        idle: list[ClientConnection] = []
        for _ in range(IDLE // CHURN_CONCURRENCY):
            idle += await asyncio.gather(*(connect(url, compression=None) for _ in range(CHURN_CONCURRENCY)))
        await pong(idle[-1], "idle")
        with_idle = descriptors(pid)
        assert with_idle >= start_fds + IDLE - FD_SLACK  # one socket per idle client

        stats, stop = Stats(), asyncio.Event()
        steady = asyncio.create_task(steady_client(url, stats, stop))
        rss = []
        for _ in range(2):
            await churn(url, stats)
            await settle(pid, with_idle + FD_SLACK, SESSION_END)
            rss.append(resident(pid))
        stop.set()
        await steady

        assert not stats.failed, stats.failed[:5]
        assert len(stats.first_pong) == 2 * int(CHURN_RATE * CHURN_SECONDS)
        assert max(stats.first_pong) < AT_ONCE, f"slowest new client {max(stats.first_pong):.2f} s"
        assert stats.steady and max(stats.steady) < AT_ONCE, f"slowest steady ping {max(stats.steady):.2f} s"
        assert rss[1] - rss[0] < RSS_SLACK, f"memory grew {(rss[1] - rss[0]) / 2**20:.1f} MiB in the second round"

        await asyncio.gather(*(ws.close() for ws in idle))
        await settle(pid, start_fds + FD_SLACK, SESSION_END)
