"""``resofleet agent [--config FILE] [--amqp URL]``: serve this host's headless servers."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "agent",
        help="serve this host's headless servers on the bus",
        description="Drive every [[servers]] entry of the config and serve it over RabbitMQ.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: $RESOFLEET_CONFIG)")
    parser.add_argument("--amqp", metavar="URL", help="broker URL (default: [bus] url or $RESOFLEET_AMQP_URL)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from resofleet.bus import AlreadyServed, AmqpBus, BusUnavailable
    from resofleet.audit import AuditLog, AuditLogUnavailable, start_audit_log
    from resofleet.config import ConfigError, load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"resofleet agent: {exc}", file=sys.stderr)
        return 2
    url = args.amqp or config.bus_url
    if not url:
        print("resofleet agent: no broker: pass --amqp URL, set [bus] url or RESOFLEET_AMQP_URL", file=sys.stderr)
        return 2
    if not config.servers:
        print(f"resofleet agent: {config.source}: no [[servers]] to serve", file=sys.stderr)
        return 2

    async def main() -> int:
        try:
            audit = await start_audit_log(config.agent.audit_log, source="agent")
        except AuditLogUnavailable as exc:
            print(f"resofleet agent: {exc}", file=sys.stderr)
            return 1
        try:
            return await serve(audit)
        finally:
            if audit is not None:
                await audit.close()  # after the agent: its last commands are recorded

    async def serve(audit: AuditLog | None) -> int:
        from resofleet.agent import Agent
        from resofleet.contracts import Topology

        bus = AmqpBus(
            url, topology=Topology(prefix=config.bus_prefix), name=f"resofleet-agent {config.agent.name}"
        )
        try:
            await bus.start()
        except BusUnavailable as exc:
            print(f"resofleet agent: {exc}", file=sys.stderr)
            return 1
        agent = Agent(bus, servers=config.servers, settings=config.agent, audit=audit)
        try:
            await agent.start()
        except AlreadyServed as exc:
            print(f"resofleet agent: {exc}", file=sys.stderr)
            await bus.close()
            return 1
        ids = ", ".join(s.id for s in config.servers)
        print(f"resofleet: agent {agent.id} serving {ids}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await agent.close()
        await bus.close()
        return 0

    return asyncio.run(main())
