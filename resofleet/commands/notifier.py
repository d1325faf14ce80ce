"""``resofleet notifier [--config FILE] [--amqp URL]``: events from the bus to webhooks.

It prints ``resofleet: notifier delivering to <names>`` on stdout once its queues are
declared and it consumes them, and runs until SIGTERM/SIGINT; then it stops taking
events (those not acknowledged stay queued), lets POSTs in progress end, and closes the
bus. Several may run at once: they share the queues (:mod:`resofleet.notifier.service`).
Its error lines start with ``resofleet notifier:``.

With ``[notifier] health = "HOST:PORT"`` it serves ``/healthz``, ``/readyz`` (the bus
connected, the queues consumed) and ``/metrics`` there.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from .common import (
    FAILURE,
    CommandError,
    add_amqp_argument,
    add_config_argument,
    broker_url,
    connection_name,
    load_config,
    serve,
    started_bus,
    stop_signals,
)

if TYPE_CHECKING:
    from resofleet.bus import Bus
    from resofleet.config import Config
    from resofleet.notifier import Notifier

log = logging.getLogger("resofleet.notifier.command")

#: How this command names itself in its error lines.
COMMAND = "notifier"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "notifier",
        help="send fleet events to the configured webhooks",
        description=(
            "Consume the fleet's events from a durable queue on RabbitMQ and POST notices "
            "to every [[webhooks]] entry of the config (signed JSON or Discord)."
        ),
    )
    add_config_argument(parser)
    add_amqp_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args, command=COMMAND)
    url = broker_url(
        args, config, command=COMMAND,
        missing="no broker: pass --amqp URL, set [bus] url or RESOFLEET_AMQP_URL",
    )
    if not config.webhooks:
        raise CommandError(f"{config.source}: no [[webhooks]] to deliver to", command=COMMAND)
    return serve(_serve(config, url), command=COMMAND)


def make_notifier(bus: Bus, config: Config) -> Notifier:
    from resofleet.notifier import Notifier

    topology = getattr(bus, "topology", None)
    return Notifier(
        bus, webhooks=config.webhooks, secrets=config.webhook_secrets, settings=config.notifier,
        topology=topology, name=connection_name("notifier"),
    )


async def _serve(config: Config, url: str) -> int:
    started: list[Notifier] = []
    async with (
        health_endpoint(config.notifier.health, lambda: started[0] if started else None),
        started_bus(url, prefix=config.bus_prefix, name=connection_name("notifier"), command=COMMAND) as bus,
    ):
        notifier = make_notifier(bus, config)
        started.append(notifier)
        try:
            try:
                await notifier.start()
            except ValueError as exc:  # a queue declared before with other arguments
                raise CommandError(str(exc), status=FAILURE, command=COMMAND) from None
            with stop_signals() as stop:
                names = ", ".join(w.name for w in config.webhooks)
                print(f"resofleet: notifier delivering to {names}", flush=True)
                await stop.wait()
        finally:
            await notifier.close()
    return 0


@contextlib.asynccontextmanager
async def health_endpoint(address: str | None, notifier: Callable[[], Notifier | None]) -> AsyncIterator[None]:
    """``/healthz``, ``/readyz`` and ``/metrics`` on ``address`` (``None``: nothing)."""
    if address is None:
        yield
        return
    from resofleet.agent.health import HealthServer, split_address
    from resofleet.agent.metrics import exposition

    def unready() -> list[str]:
        current = notifier()
        return ["starting"] if current is None else current.problems

    def scrape(accept: str | None) -> tuple[bytes, str]:
        current = notifier()
        if current is None:
            return b"", "text/plain; version=0.0.4; charset=utf-8"
        return exposition(current.metrics.registry, accept)

    host, port = split_address(address)  # checked when the config was read
    server = HealthServer(unready, host=host, port=port, metrics=scrape)
    try:
        await server.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CommandError(f"cannot listen on {address}: {reason}", status=FAILURE, command=COMMAND) from None
    log.info("health checks and metrics on http://%s:%d/healthz, /readyz, /metrics", host, server.port)
    try:
        yield
    finally:
        await server.close()
