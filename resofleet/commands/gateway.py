"""``resofleet gateway``: the WebSocket gateway of a fleet, over RabbitMQ.

Also home of what ``resofleet up`` shares with it: the listen options, the security
settings (and the refusal to listen beyond loopback without a secret), the one line that
says where the gateway listens (scripts and tests wait for it), logging (with tokens
redacted from every line) and the wait for SIGTERM/SIGINT. Only argparse and the standard
library are imported at module level: the command line imports every command module
whenever it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

    from resofleet.gateway import Security
    from resofleet.audit import AuditLog
    from resofleet.config import Config

LISTENING = "resofleet: gateway listening on"


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
    parser.add_argument(
        "--amqp", metavar="URL", help="RabbitMQ URL (default: $RESOFLEET_AMQP_URL or [bus] url)"
    )
    add_listen_arguments(parser)
    parser.set_defaults(func=_run)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="TOML configuration (default: $RESOFLEET_CONFIG)"
    )


def add_listen_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="port to listen on (default 8000; 0 picks a free one)"
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="serve wss:// with this certificate")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")


def fail(message: str) -> int:
    """Print one line naming the problem and return the exit code for it."""
    print(f"resofleet: {message}", file=sys.stderr, flush=True)
    return 2


def load(args: argparse.Namespace) -> Config | int:
    """The configuration, or an exit code after printing the problem in one line."""
    from resofleet.config import ConfigError, load_config

    try:
        return load_config(args.config)
    except ConfigError as exc:
        return fail(str(exc))


def setup_logging() -> None:
    level = os.environ.get("RESOFLEET_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # websockets logs every handshake at INFO; the gateway logs its own sessions.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    # A browser's ?token= (or a Bearer header in a traceback) must never reach a log file.
    from resofleet.gateway.redact import install

    install()


def listen_options(args: argparse.Namespace, config: Config) -> tuple[str, int, ssl.SSLContext | None] | int:
    host = args.host or config.gateway.host
    port = args.port if args.port is not None else config.gateway.port
    if not 0 <= port <= 65535:
        return fail(f"--port must be 0-65535, not {port}")
    if bool(args.tls_cert) != bool(args.tls_key):
        return fail("--tls-cert and --tls-key go together")
    context = None
    if args.tls_cert:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            return fail(f"cannot load --tls-cert/--tls-key: {exc}")
    return host, port, context


def security_for(host: str, config: Config) -> Security | int:
    """The gateway's security settings, or an exit code after one line saying why not.

    Without a secret a gateway runs open (every client is an admin): allowed on loopback
    only, and said once at start.
    """
    from resofleet.gateway import Security
    from resofleet.gateway.security import is_loopback

    security = Security.from_settings(config.gateway)
    if security.open and not is_loopback(host):
        return fail(
            f"refusing to listen on {host} without a secret: anyone who reaches the port could "
            "run any command. Set RESOFLEET_SECRET=$(resofleet token secret) (or [gateway] "
            "secret), or listen on 127.0.0.1"
        )
    return security


def warn_if_open(security: Security) -> None:
    if security.open:
        logging.getLogger("resofleet").warning(
            "no secret configured: the gateway runs open on loopback, every local client is "
            "an admin (set RESOFLEET_SECRET=$(resofleet token secret) to require tokens)"
        )


def auth_note(security: Security) -> str:
    """What to append to the listening line."""
    return " (open: no secret)" if security.open else " (auth: tokens)"


async def open_audit(path: str | None, *, source: str) -> AuditLog | None | int:
    """A started audit log (None: none configured), or an exit code after one line."""
    from resofleet.audit import AuditLogUnavailable, start_audit_log

    try:
        return await start_audit_log(path, source=source)
    except AuditLogUnavailable as exc:
        print(f"resofleet: {exc}", file=sys.stderr, flush=True)
        return 1


def cannot_listen(host: str, port: int, exc: OSError) -> int:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    print(f"resofleet: cannot listen on {host}:{port}: {reason}", file=sys.stderr, flush=True)
    return 1


def announce(url: str, extra: str = "") -> None:
    """The one line saying where the gateway listens (with the real port)."""
    print(f"{LISTENING} {url}{extra}", flush=True)


async def wait_for_signal() -> None:
    """Return at the first SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _run(args: argparse.Namespace) -> int:
    config = load(args)
    if isinstance(config, int):
        return config
    url = args.amqp or config.bus_url
    if not url:
        return fail(
            "the gateway needs a message bus: pass --amqp URL, set RESOFLEET_AMQP_URL or "
            f"[bus] url in {config.source} (or run `resofleet up` for one host without a broker)"
        )
    if not url.startswith(("amqp://", "amqps://")):
        return fail(f"--amqp must be an amqp:// or amqps:// URL, not {url!r}")
    options = listen_options(args, config)
    if isinstance(options, int):
        return options
    security = security_for(options[0], config)
    if isinstance(security, int):
        return security
    setup_logging()
    return asyncio.run(
        _serve(
            url, *options, security=security, audit_log=config.gateway.audit_log,
            prefix=config.bus_prefix, compression=config.gateway.compression,
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
) -> int:
    from resofleet.bus import AmqpBus, BusUnavailable
    from resofleet.contracts import Topology
    from resofleet.gateway import Gateway

    audit = await open_audit(audit_log, source="gateway")
    if isinstance(audit, int):
        return audit
    try:
        bus = AmqpBus(
            url, topology=Topology(prefix=prefix), name=f"resofleet-gateway@{socket.gethostname()}"
        )
        try:
            await bus.start()
        except BusUnavailable as exc:
            print(f"resofleet: {exc}", file=sys.stderr, flush=True)
            return 1
        gateway = Gateway(
            bus, host=host, port=port, ssl_context=context, security=security, audit=audit,
            compression=compression,
        )
        try:
            warn_if_open(security)
            try:
                await gateway.start()
            except OSError as exc:
                return cannot_listen(host, port, exc)
            announce(gateway.url, auth_note(security))
            await wait_for_signal()
            return 0
        finally:
            await gateway.close()
            await bus.close()
    finally:
        if audit is not None:
            await audit.close()
