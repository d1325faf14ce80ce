"""One part of the system in its own process, so its CPU and memory are measured alone.

``python -m bench.node ROLE --spec JSON`` runs one of:

- ``gateway``: a :class:`resofleet.gateway.Gateway` over an :class:`resofleet.bus.AmqpBus` (as ``resofleet
  gateway`` runs it), with authentication on when ``RESOFLEET_SECRET`` is set;
- ``agent``: an :class:`resofleet.agent.Agent` over an AmqpBus serving emulated servers ``s0``..
  (as ``resofleet agent`` runs it; audit log off unless the spec gives ``audit_dir``);
- ``up``: both over one in-process :class:`resofleet.bus.LocalBus` (as ``resofleet up`` runs them);
- ``ws-echo``: a bare ``websockets`` server that echoes every frame (a baseline);
- ``rpc-echo``: a bare aio-pika consumer answering on direct reply-to (a baseline);
- ``ws-broadcast``: a bare ``websockets`` server broadcasting emulator-like console lines
  at the fan-out benchmark's rate, encoded as the gateway encodes them (a baseline).

The parts of the system (``gateway``, ``agent``, ``up``) run on the event loop the
commands use (:mod:`resofleet.eventloop`: uvloop where installed); the baselines on
asyncio's own loop, as the bare libraries run out of the box, unless the spec's ``loop``
says otherwise (``"auto"``, ``"uvloop"``, ``"asyncio"``). The benchmarks' own clients
run on asyncio's loop too, for the system and the baselines alike.

With ``audit_dir`` in the spec the gateway and the agent keep their audit logs there
(``gateway.jsonl``, ``agent.jsonl``), as the commands do by default; without it, none.

With ``BENCH_CPROFILE=DIR`` in the environment the whole run is profiled with cProfile
into ``DIR/<role>.prof`` (deterministic, but it slows every Python call: for where the
calls go, not for figures).

It prints ``READY {json}`` (the port, when it listens) on stdout once serving, and stops
when its stdin closes (so a crashed benchmark never leaves it behind) or on SIGTERM.
Logs go to stderr, which the benchmark sends to a file under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
import resource
import signal
import sys
from typing import Any

__all__ = ["main", "raise_fd_limit"]


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one (thousands of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _servers(spec: dict[str, Any]) -> list[Any]:
    from resofleet.agent.settings import ServerConfig

    return [
        ServerConfig(
            id=f"s{i}",
            runtime="emulator",
            scenario=spec.get("scenario") or "default",
            emulator_args=tuple(spec.get("emulator_args", ())),
        )
        for i in range(int(spec.get("servers", 1)))
    ]


async def _audit(spec: dict[str, Any], source: str, closers: list[Any]) -> Any:
    """The started audit log of ``source`` under ``spec["audit_dir"]`` (None: no audit)."""
    if not spec.get("audit_dir"):
        return None
    from resofleet.audit import start_audit_log

    audit = await start_audit_log(os.path.join(spec["audit_dir"], f"{source}.jsonl"), source=source)
    closers.append(audit.close)
    return audit


def _agent(bus: Any, spec: dict[str, Any], audit: Any = None) -> Any:
    from resofleet.agent import Agent
    from resofleet.agent.settings import AgentSettings

    return Agent(bus, servers=_servers(spec), settings=AgentSettings(name="bench"), audit=audit)


def _gateway(bus: Any, spec: dict[str, Any], audit: Any = None) -> tuple[Any, bool]:
    """The gateway, with a :class:`resofleet.gateway.security.Security` when the secret is set and
    the gateway takes one; returns (gateway, whether authentication is on)."""
    from resofleet.gateway import Gateway

    options: dict[str, Any] = {}
    params = inspect.signature(Gateway).parameters
    secret = os.environ.get("RESOFLEET_SECRET", "").split()
    auth = False
    if secret and "security" in params:
        from resofleet.gateway.security import Security
        from resofleet.gateway.tokens import Keyring
        from resofleet.gateway.settings import Limits

        limits = Limits(connections_per_address=int(spec.get("connections_per_address", 10_000)))
        options["security"] = Security(keyring=Keyring(tuple(secret)), limits=limits)
        auth = True
    if "audit" in params:
        options["audit"] = audit
    return Gateway(bus, host="127.0.0.1", port=0, **options), auth


async def _amqp(spec: dict[str, Any], name: str) -> Any:
    from resofleet.bus import AmqpBus
    from resofleet.contracts import Topology

    bus = AmqpBus(spec["amqp"], topology=Topology(prefix=spec["prefix"]), name=name)
    await bus.start()
    return bus


async def _ws_echo(spec: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    from websockets.asyncio.server import serve

    from resofleet.gateway.server import MAX_FRAME, MAX_QUEUE

    async def echo(connection: Any) -> None:
        async for frame in connection:
            await connection.send(frame)

    server = await serve(echo, "127.0.0.1", 0, max_size=MAX_FRAME, max_queue=MAX_QUEUE)
    port = server.sockets[0].getsockname()[1]

    async def close() -> None:
        server.close()
        await server.wait_closed()

    return {"port": port}, close


async def _rpc_echo(spec: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """N queues (one per "server"), each consumed with the agent's prefetch, answering
    every request on its reply-to with the request's own body: AmqpBus.serve minus the
    agent and the console."""
    import aio_pika

    from resofleet.agent.service import SERVE_CONCURRENCY

    connection = await aio_pika.connect(spec["amqp"])
    channels = []
    for i in range(int(spec.get("servers", 1))):
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=SERVE_CONCURRENCY)
        queue = await channel.declare_queue(
            f"{spec['prefix']}echo.s{i}", exclusive=True, auto_delete=True
        )

        def handler(ch: Any) -> Any:
            async def on_request(message: Any) -> None:
                await ch.default_exchange.publish(
                    aio_pika.Message(
                        message.body,
                        correlation_id=message.correlation_id,
                        delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
                    ),
                    routing_key=message.reply_to,
                    mandatory=False,
                )
                await message.ack()

            return on_request

        await queue.consume(handler(channel))
        channels.append(channel)
    return {}, connection.close


async def _ws_broadcast(spec: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The fan-out minus the bus and the agent: every TICK seconds each of ``servers``
    servers emits its share of ``rate`` lines/s (emulator chatter text, numbered), encoded
    once per form and written with ``websockets.broadcast`` to the connections watching it,
    one message per line or one batch, as each connection's ``subscribe`` asked."""
    import random

    import msgspec
    from websockets.asyncio.server import broadcast, serve

    from resofleet.contracts import ContainerOutput, ContainerOutputBatch, OutputLine, encode_server
    from resofleet.emulator import noise
    from resofleet.emulator.state import Server
    from resofleet.gateway.server import MAX_FRAME, MAX_QUEUE

    tick = 0.01
    servers = [f"s{i}" for i in range(int(spec.get("servers", 1)))]
    rate = float(spec["rate"])
    watchers: dict[str, tuple[set[Any], set[Any]]] = {s: (set(), set()) for s in servers}

    async def handler(connection: Any) -> None:
        watched: list[tuple[set[Any], set[Any]]] = []
        try:
            async for frame in connection:
                request = msgspec.json.decode(frame)
                if request.get("type") != "subscribe":
                    continue
                for lines, batches in watched:
                    lines.discard(connection)
                    batches.discard(connection)
                names = servers if request.get("servers") == "*" else request.get("servers", [])
                watched = [watchers[s] for s in names if s in watchers]
                for lines, batches in watched:
                    (batches if request.get("batch") else lines).add(connection)
        finally:
            for lines, batches in watched:
                lines.discard(connection)
                batches.discard(connection)

    async def emit() -> None:
        rng = random.Random(1)
        chatter = Server()
        seq = dict.fromkeys(servers, 0)
        budget = dict.fromkeys(servers, 0.0)
        pending: dict[str, list[str]] = {s: [] for s in servers}
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for server in servers:
                budget[server] += rate * (now - last)
                out = pending[server]
                while budget[server] >= 1:
                    block = noise.log_block(rng, chatter)
                    out.extend(block)
                    budget[server] -= len(block)
                if not out:
                    continue
                batch = []
                for text in out:
                    seq[server] += 1
                    batch.append(OutputLine(seq=seq[server], output=text))
                out.clear()
                lines, batches = watchers[server]
                if lines:
                    for line in batch:
                        broadcast(lines, encode_server(ContainerOutput(
                            output=line.output, server=server, seq=line.seq, epoch="bench")), text=True)
                if batches:
                    broadcast(batches, encode_server(
                        ContainerOutputBatch(server=server, epoch="bench", lines=batch)), text=True)
            last = now

    server = await serve(handler, "127.0.0.1", 0, max_size=MAX_FRAME, max_queue=MAX_QUEUE)
    task = asyncio.create_task(emit())

    async def close() -> None:
        task.cancel()
        server.close()
        await server.wait_closed()

    return {"port": server.sockets[0].getsockname()[1]}, close


async def _run(role: str, spec: dict[str, Any]) -> int:
    closers: list[Any] = []
    from resofleet.eventloop import loop_name

    info: dict[str, Any] = {"pid": os.getpid(), "loop": loop_name(asyncio.get_running_loop())}
    try:
        if role == "gateway":
            audit = await _audit(spec, "gateway", closers)
            bus = await _amqp(spec, "bench-gateway")
            closers.append(bus.close)
            gateway, auth = _gateway(bus, spec, audit)
            await gateway.start()
            closers.append(gateway.close)
            info.update(port=gateway.port, auth=auth)
        elif role == "agent":
            audit = await _audit(spec, "agent", closers)
            bus = await _amqp(spec, "bench-agent")
            closers.append(bus.close)
            agent = _agent(bus, spec, audit)
            await agent.start()
            closers.append(agent.close)
        elif role == "up":
            from resofleet.bus import LocalBus

            agent_audit = await _audit(spec, "agent", closers)
            gateway_audit = await _audit(spec, "gateway", closers)
            bus = LocalBus()
            await bus.start()
            closers.append(bus.close)
            agent = _agent(bus, spec, agent_audit)
            await agent.start()
            closers.append(agent.close)
            gateway, auth = _gateway(bus, spec, gateway_audit)
            await gateway.start()
            closers.append(gateway.close)
            info.update(port=gateway.port, auth=auth)
        elif role == "ws-echo":
            more, close = await _ws_echo(spec)
            closers.append(close)
            info.update(more)
        elif role == "ws-broadcast":
            more, close = await _ws_broadcast(spec)
            closers.append(close)
            info.update(more)
        elif role == "rpc-echo":
            more, close = await _rpc_echo(spec)
            closers.append(close)
            info.update(more)
        else:
            raise SystemExit(f"unknown role {role!r}")
        print("READY " + json.dumps(info), flush=True)
        await _wait_for_stop()
        return 0
    finally:
        for close in reversed(closers):
            try:
                await asyncio.wait_for(close(), 10)
            except Exception as exc:  # shutting down: say so, do not hang
                logging.getLogger("bench.node").warning("close failed: %r", exc)


async def _wait_for_stop() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # stdin EOF: the benchmark ended (or died); read it in a thread, never on the loop.
    loop.run_in_executor(None, lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)))
    await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.node")
    parser.add_argument("role", choices=["gateway", "agent", "up", "ws-echo", "rpc-echo", "ws-broadcast"])
    parser.add_argument("--spec", default="{}", help="JSON options of the role")
    args = parser.parse_args(argv)
    raise_fd_limit()
    from resofleet.commands.common import setup_logging

    setup_logging()  # as the command line does: INFO, websockets at WARNING
    from resofleet.eventloop import run

    spec = json.loads(args.spec)
    system = args.role in ("gateway", "agent", "up")
    choice = spec.get("loop") or (None if system else "asyncio")
    if os.environ.get("BENCH_CPROFILE"):  # a deterministic profile of the whole run
        import cProfile

        profile = cProfile.Profile()
        try:
            return profile.runcall(run, _run(args.role, spec), choice=choice)
        finally:
            os.makedirs(os.environ["BENCH_CPROFILE"], exist_ok=True)
            profile.dump_stats(os.path.join(os.environ["BENCH_CPROFILE"], f"{args.role}.prof"))
    return run(_run(args.role, spec), choice=choice)


if __name__ == "__main__":
    sys.exit(main())
