"""``resofleet agent [--config FILE] [--amqp URL]``: serve this host's headless servers.

It prints ``resofleet: agent <id> serving <ids>`` on stdout once every server is claimed
on the bus, and serves until SIGTERM/SIGINT; then the agent stops (and its headless
servers with it), the bus closes, and the audit log last, so its last commands are on
disk. Its error lines start with ``resofleet agent:``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from .common import (
    FAILURE,
    CommandError,
    add_config_argument,
    load_config,
    opened_audit,
    started_bus,
    stop_signals,
)

if TYPE_CHECKING:
    from resofleet.config import Config

#: How this command names itself in its error lines.
COMMAND = "agent"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "agent",
        help="serve this host's headless servers on the bus",
        description="Drive every [[servers]] entry of the config and serve it over RabbitMQ.",
    )
    add_config_argument(parser)
    parser.add_argument(
        "--amqp", metavar="URL", help="broker URL (default: [bus] url or $RESOFLEET_AMQP_URL)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args, command=COMMAND)
    url = args.amqp or config.bus_url
    if not url:
        raise CommandError("no broker: pass --amqp URL, set [bus] url or RESOFLEET_AMQP_URL", command=COMMAND)
    if not config.servers:
        raise CommandError(f"{config.source}: no [[servers]] to serve", command=COMMAND)
    return asyncio.run(_serve(config, url))


async def _serve(config: Config, url: str) -> int:
    from resofleet.agent import Agent
    from resofleet.bus import AlreadyServed

    async with (
        opened_audit(config.agent.audit_log, source="agent", command=COMMAND) as audit,
        started_bus(
            url, prefix=config.bus_prefix, name=f"resofleet-agent {config.agent.name}", command=COMMAND
        ) as bus,
    ):
        agent = Agent(bus, servers=config.servers, settings=config.agent, audit=audit)
        try:
            await agent.start()  # on failure it has stopped what it started
        except AlreadyServed as exc:
            raise CommandError(str(exc), status=FAILURE, command=COMMAND) from None
        try:
            with stop_signals() as stop:
                ids = ", ".join(s.id for s in config.servers)
                print(f"resofleet: agent {agent.id} serving {ids}", flush=True)
                await stop.wait()
        finally:
            await agent.close()
    return 0
