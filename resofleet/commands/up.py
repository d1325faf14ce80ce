"""``resofleet up``: a gateway and an agent in one process, over the in-process bus.

For one host and no broker. ``--demo`` (or a configuration without ``[[servers]]``)
manages one emulated headless named ``demo``; ``[[schedules]]`` run on the servers it
manages (with ``--demo`` and configured servers, their schedules are set aside with them).
With ``[[webhooks]]`` configured it also runs the notifier (:mod:`resofleet.notifier`) on
the same in-process bus: its queues live as long as the process, and its dead letters are
a bounded list plus a log line. Shutdown on SIGTERM/SIGINT: the gateway first (clients get
1001), then the notifier (POSTs in progress end; stopping ``up`` itself sends no
``server_down``), then the agent (its headless servers stop), then the bus, then the audit
logs (so the last commands are on disk).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .common import (
    FAILURE,
    CommandError,
    add_config_argument,
    add_listen_arguments,
    announce,
    auth_note,
    listen_error,
    listen_options,
    load_config,
    opened_audit,
    security_for,
    serve,
    stop_signals,
    warn_if_open,
)
from .notifier import make_notifier

if TYPE_CHECKING:
    import ssl

    from resofleet.agent.settings import ServerConfig
    from resofleet.config import Config
    from resofleet.gateway import Security

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
    config = load_config(args)
    host, port, context = listen_options(args, config)
    security = security_for(host, config)
    return serve(
        _serve(config, servers_for(config, demo=args.demo), host, port, context, security=security)
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
    """Serve until SIGTERM/SIGINT, then shut down in the order the module docstring gives."""
    from resofleet.agent import Agent
    from resofleet.agent.schedules import ScheduleError
    from resofleet.bus import LocalBus
    from resofleet.gateway import Gateway

    schedules = config.schedules if servers == config.servers or not config.servers else ()

    async with (
        opened_audit(config.agent.audit_log, source="agent") as agent_audit,
        opened_audit(config.gateway.audit_log, source="gateway") as gateway_audit,
    ):
        bus = LocalBus()
        try:
            agent = Agent(
                bus, servers=servers, settings=config.agent, audit=agent_audit, schedules=schedules
            )
        except ScheduleError as exc:
            raise CommandError(f"{config.source}: schedules: {exc}", status=FAILURE) from None
        await bus.start()
        notifier = make_notifier(bus, config) if config.webhooks else None
        scraped = (agent.metrics.registry,) + ((notifier.metrics.registry,) if notifier else ())
        gateway = Gateway(
            bus, host=host, port=port, ssl_context=context, security=security,
            audit=gateway_audit, compression=config.gateway.compression,
            bulk_concurrency=config.gateway.bulk_concurrency,
            scraped=scraped,  # one port serves every part's metrics
        )
        warn_if_open(security)
        try:
            if notifier is not None:  # first: it hears the servers start
                await notifier.start()
            try:
                await agent.start()
            except Exception as exc:
                raise CommandError(f"the agent could not start: {exc}", status=FAILURE) from None
            try:
                await gateway.start()
            except OSError as exc:
                raise listen_error(host, port, exc) from None
            with stop_signals() as stop:
                announce(
                    gateway.url,
                    f" (servers: {', '.join(s.id for s in servers)}){auth_note(security)}",
                )
                await stop.wait()
            return 0
        finally:
            await gateway.close()
            if notifier is not None:
                await notifier.close()
            await agent.close()
            await bus.close()
