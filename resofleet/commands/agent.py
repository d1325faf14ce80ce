"""``resofleet agent [--config FILE] [--amqp URL]``: serve this host's headless servers.

It prints ``resofleet: agent <id> serving <ids>`` on stdout once every server is claimed
on the bus, and serves until SIGTERM/SIGINT; then the agent stops (and its headless
servers with it), the bus closes, then the audit log, so its last commands are on disk,
and the health endpoint last. Its error lines start with ``resofleet agent:``.

With ``[agent] health = "HOST:PORT"`` it also serves ``/healthz`` and ``/readyz``
(:mod:`resofleet.agent.health`) from before it connects to the broker, so a probe tells
"starting" from "dead"; a port it cannot listen on stops it at once (exit status 1). With
``[agent] metrics = "HOST:PORT"`` it serves ``/metrics`` there (the health address may be
the same: one endpoint serves both).
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
    load_config,
    opened_audit,
    serve,
    started_bus,
    stop_signals,
)

if TYPE_CHECKING:
    from resofleet.agent import Agent
    from resofleet.config import Config

log = logging.getLogger("resofleet.agent.command")

#: How this command names itself in its error lines.
COMMAND = "agent"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "agent",
        help="serve this host's headless servers on the bus",
        description="Drive every [[servers]] entry of the config and serve it over RabbitMQ.",
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
    if not config.servers:
        raise CommandError(f"{config.source}: no [[servers]] to serve", command=COMMAND)
    return serve(_serve(config, url), command=COMMAND)


async def _serve(config: Config, url: str) -> int:
    from resofleet.agent import Agent
    from resofleet.bus import AlreadyServed, NotPermitted

    started: list[Agent] = []  # the agent, once made: the endpoint answers for it
    async with (
        health_endpoint(
            config.agent.health, lambda: started[0] if started else None,
            metrics=config.agent.metrics,
        ),
        opened_audit(config.agent.audit_log, source="agent", command=COMMAND) as audit,
        started_bus(
            url, prefix=config.bus_prefix, name=f"resofleet-agent {config.agent.name}", command=COMMAND,
            requesters=config.bus_requesters,
        ) as bus,
    ):
        agent = Agent(
            bus, servers=config.servers, settings=config.agent, audit=audit, schedules=config.schedules
        )
        started.append(agent)
        try:
            await agent.start()  # on failure it has stopped what it started
        except (AlreadyServed, NotPermitted) as exc:
            raise CommandError(str(exc), status=FAILURE, command=COMMAND) from None
        try:
            with stop_signals() as stop:
                ids = ", ".join(s.id for s in config.servers)
                print(f"resofleet: agent {agent.id} serving {ids}", flush=True)
                await stop.wait()
        finally:
            await agent.close()
    return 0


@contextlib.asynccontextmanager
async def health_endpoint(
    address: str | None, agent: Callable[[], Agent | None], *, metrics: str | None = None
) -> AsyncIterator[None]:
    """``/healthz`` and ``/readyz`` on ``address``, ``/metrics`` on ``metrics`` (``None``:
    nothing; the same address: one endpoint serves both), answering for ``agent()``
    (``None`` until the agent is made: "starting", no metrics); closed on the way out."""
    from resofleet.agent.health import HealthServer, problems, split_address
    from resofleet.agent.metrics import exposition

    def unready() -> list[str]:
        current = agent()
        return ["starting"] if current is None else problems(current)

    def scrape(accept: str | None) -> tuple[bytes, str]:
        current = agent()
        if current is None:
            return b"", "text/plain; version=0.0.4; charset=utf-8"
        return exposition(current.metrics.registry, accept)

    servers: list[HealthServer] = []
    try:
        for where, what in ((address, "health checks"), (metrics, "metrics")):
            if where is None or (what == "metrics" and where == address):
                continue
            host, port = split_address(where)  # checked when the config was read
            server = HealthServer(
                unready, host=host, port=port, metrics=scrape if where == metrics else None
            )
            try:
                await server.start()
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                message = f"cannot listen on {where} for {what}: {reason}"
                raise CommandError(message, status=FAILURE, command=COMMAND) from None
            servers.append(server)
            shown = where.rpartition(":")[0]
            paths = "/metrics" if where != address else "/readyz and /healthz"
            if where == metrics == address:
                paths += ", /metrics"
            log.info("%s on http://%s:%d%s", what, shown, server.port, paths)
        yield
    finally:
        for server in servers:
            await server.close()
