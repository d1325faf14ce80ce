"""``resofleet up``: a gateway and an agent in one process, over the in-process bus.

For one host and no broker. ``--demo`` (or a configuration without ``[[servers]]``)
manages one emulated headless named ``demo``. Shutdown on SIGTERM/SIGINT: the gateway
first (clients get 1001), then the agent (its headless servers stop), then the bus, then
the audit logs (so the last commands are on disk).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from .gateway import (
    add_config_argument,
    add_listen_arguments,
    announce,
    auth_note,
    cannot_listen,
    listen_options,
    load,
    open_audit,
    security_for,
    setup_logging,
    wait_for_signal,
    warn_if_open,
)

if TYPE_CHECKING:
    import ssl

    from resofleet.gateway import Security
    from resofleet.agent.settings import ServerConfig
    from resofleet.config import Config

#: The server ``--demo`` manages: the emulator with its demo scenario (slow activity, no
#: noise, no chatter).
DEMO_SERVER_ID = "demo"
DEMO_SCENARIO = "demo"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run a gateway and an agent in one process (one host, no broker)",
        description=(
            "Serve ws://HOST:PORT/ws for the servers of the configuration, in one process "
            "over the in-process bus. --demo, or no [[servers]], manages one emulated "
            "headless named 'demo'."
        ),
    )
    add_config_argument(parser)
    parser.add_argument(
        "--demo",
        action="store_true",
        help="manage one emulated headless named 'demo' instead of the configured servers",
    )
    add_listen_arguments(parser)
    parser.set_defaults(func=_run)


def servers_for(config: Config, *, demo: bool) -> tuple[ServerConfig, ...]:
    from resofleet.agent.settings import ServerConfig

    if demo or not config.servers:
        return (ServerConfig(id=DEMO_SERVER_ID, runtime="emulator", scenario=DEMO_SCENARIO),)
    return config.servers


def _run(args: argparse.Namespace) -> int:
    config = load(args)
    if isinstance(config, int):
        return config
    options = listen_options(args, config)
    if isinstance(options, int):
        return options
    security = security_for(options[0], config)
    if isinstance(security, int):
        return security
    setup_logging()
    return asyncio.run(
        _serve(config, servers_for(config, demo=args.demo), *options, security=security)
    )


async def _serve(
    config: Config,
    servers: tuple[ServerConfig, ...],
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    *,
    security: Security,
) -> int:
    from resofleet.agent import Agent
    from resofleet.bus import LocalBus
    from resofleet.gateway import Gateway

    agent_audit = await open_audit(config.agent.audit_log, source="agent")
    if isinstance(agent_audit, int):
        return agent_audit
    gateway_audit = await open_audit(config.gateway.audit_log, source="gateway")
    if isinstance(gateway_audit, int):
        if agent_audit is not None:
            await agent_audit.close()
        return gateway_audit
    bus = LocalBus()
    await bus.start()
    agent = Agent(bus, servers=servers, settings=config.agent, audit=agent_audit)
    gateway = Gateway(
        bus, host=host, port=port, ssl_context=context, security=security, audit=gateway_audit,
        compression=config.gateway.compression,
    )
    warn_if_open(security)
    try:
        try:
            await agent.start()
        except Exception as exc:
            print(f"resofleet: the agent could not start: {exc}", file=sys.stderr, flush=True)
            return 1
        try:
            await gateway.start()
        except OSError as exc:
            return cannot_listen(host, port, exc)
        announce(
            gateway.url,
            f" (servers: {', '.join(s.id for s in servers)}){auth_note(security)}",
        )
        await wait_for_signal()
        return 0
    finally:
        await gateway.close()
        await agent.close()
        await bus.close()
        if agent_audit is not None:
            await agent_audit.close()
        if gateway_audit is not None:
            await gateway_audit.close()
