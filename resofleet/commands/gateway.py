"""``resofleet gateway``: the WebSocket gateway of a fleet, over RabbitMQ.

What it shares with ``resofleet up`` (the listen options, the security settings and the
refusal to listen beyond loopback without a secret, the listening line, the bus, the audit
log, the wait for SIGTERM/SIGINT) is in :mod:`resofleet.commands.common`. Only argparse and
the standard library are imported at module level: the command line imports every command
module whenever it starts.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .common import (
    CommandError,
    add_amqp_argument,
    add_config_argument,
    add_listen_arguments,
    announce,
    auth_note,
    broker_url,
    connection_name,
    listen_error,
    listen_options,
    load_config,
    opened_audit,
    security_for,
    serve,
    started_bus,
    stop_signals,
    warn_if_open,
)

if TYPE_CHECKING:
    import ssl

    from resofleet.gateway import Security


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="run a WebSocket gateway in front of a fleet (over RabbitMQ)",
        description=(
            "Serve the client protocol on ws://HOST:PORT/ws for every server whose agent is on "
            "the message bus. Needs a bus: --amqp, RESOFLEET_AMQP_URL or [bus] url."
        ),
    )
    add_config_argument(parser)
    add_amqp_argument(parser)
    add_listen_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    config = load_config(args)
    url = broker_url(args, config, missing=(
        "the gateway needs a message bus: pass --amqp URL, set RESOFLEET_AMQP_URL or "
        f"[bus] url in {config.source} (or run `resofleet up` for one host without a broker)"
    ))
    if not url.startswith(("amqp://", "amqps://")):
        raise CommandError(f"--amqp must be an amqp:// or amqps:// URL, not {url!r}")
    host, port, context = listen_options(args, config)
    security = security_for(host, config)
    return serve(
        _serve(
            url, host, port, context, security=security, audit_log=config.gateway.audit_log,
            prefix=config.bus_prefix, compression=config.gateway.compression,
            bulk_concurrency=config.gateway.bulk_concurrency,
        )
    )


async def _serve(
    url: str,
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    *,
    security: Security,
    audit_log: str | None,
    prefix: str = "",
    compression: bool = False,
    bulk_concurrency: int,
) -> int:
    """Serve until SIGTERM/SIGINT; then the gateway closes, the bus, the audit log."""
    from resofleet.gateway import Gateway

    async with (
        opened_audit(audit_log, source="gateway") as audit,
        started_bus(url, prefix=prefix, name=connection_name("gateway")) as bus,
    ):
        gateway = Gateway(
            bus, host=host, port=port, ssl_context=context, security=security, audit=audit,
            compression=compression, bulk_concurrency=bulk_concurrency,
        )
        try:
            warn_if_open(security)
            try:
                await gateway.start()
            except OSError as exc:
                raise listen_error(host, port, exc) from None
            with stop_signals() as stop:
                announce(gateway.url, auth_note(security))
                await stop.wait()
            return 0
        finally:
            await gateway.close()
