"""What the commands share: their one error, logging, the configuration, listening, the
bus, the audit logs and the signals that stop a service.

A command that cannot go on raises :class:`CommandError`; :func:`resofleet.cli.main`
prints it as one line on stderr and exits with its status. Nothing else prints errors, so
every command fails the same way::

    Exception
     └── CommandError     "resofleet: <message>" (or "resofleet <command>: <message>"),
                          exit status USAGE (2: how it was called or configured) or
                          FAILURE (1: the broker, the port, the audit log at run time)

Logging is set up once, for every command, by :func:`setup_logging` (``main`` calls it):
the level comes from ``RESOFLEET_LOG_LEVEL``, the format from ``--log-format`` (which every
command takes, :func:`add_log_argument`), else the configuration's ``[log] format`` (applied
by :func:`load_config` once the file is read), else text; and every line goes through the
gateway's token redaction, so no command can write a token to a log.

Only the standard library is imported at module level: the command line imports every
command module whenever it starts, and this one with them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import ssl

    from resofleet.audit import AuditLog
    from resofleet.bus import AmqpBus
    from resofleet.config import Config
    from resofleet.gateway import Security

__all__ = [
    "DASHBOARD",
    "FAILURE",
    "LISTENING",
    "LOG_FORMAT",
    "USAGE",
    "CommandError",
    "add_config_argument",
    "add_listen_arguments",
    "add_log_argument",
    "announce",
    "auth_note",
    "connection_name",
    "dashboard_url",
    "listen_error",
    "listen_options",
    "load_config",
    "opened_audit",
    "security_for",
    "serve",
    "setup_logging",
    "use_log_format",
    "started_bus",
    "stop_signals",
    "warn_if_open",
]

#: Exit status for a command called or configured wrongly (argparse uses it too).
USAGE: Final = 2
#: Exit status for a command that failed at run time: a broker, a port, an audit log.
FAILURE: Final = 1
#: The line saying where a gateway listens: scripts and tests wait for it on stdout.
LISTENING: Final = "resofleet: gateway listening on"
#: The line after it: where a browser opens the dashboard.
DASHBOARD: Final = "resofleet: dashboard at"
#: Every log line: when, how bad, which logger (module), what.
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The log formats: ``text`` (:data:`LOG_FORMAT`, for people) and ``json`` (one object
#: per line, :class:`resofleet.logs.JsonFormatter`, for log collectors).
LOG_FORMATS: Final = ("text", "json")
#: Format when neither ``--log-format`` nor ``[log] format`` says: people read it first.
DEFAULT_LOG_FORMAT: Final = "text"
#: The name of the handler :func:`setup_logging` puts on the root logger, to find it again.
LOG_HANDLER: Final = "resofleet"
#: Level when ``RESOFLEET_LOG_LEVEL`` is unset: what the services do, not how.
DEFAULT_LOG_LEVEL: Final = "INFO"
#: The names ``RESOFLEET_LOG_LEVEL`` accepts, in any case.
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class CommandError(Exception):
    """A command cannot go on: one line for stderr, and the exit status.

    ``command`` names the subcommand in the line (``resofleet agent: ...``) for the
    commands whose lines always did; the others say ``resofleet: ...``.
    """

    def __init__(self, message: str, *, status: int = USAGE, command: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.command = command

    def line(self) -> str:
        """The line printed on stderr."""
        who = f"resofleet {self.command}" if self.command else "resofleet"
        return f"{who}: {self.message}"


def serve(main: Coroutine[Any, Any, int], *, command: str | None = None) -> int:
    """Run a service's main coroutine to its end on the event loop
    :mod:`resofleet.eventloop` picks (uvloop where installed); a bad
    ``RESOFLEET_EVENT_LOOP`` is a :class:`CommandError`."""
    from resofleet.eventloop import EventLoopError, run

    try:
        return run(main)
    except EventLoopError as exc:
        raise CommandError(str(exc), command=command) from None


# -- logging ---------------------------------------------------------------------------------


def setup_logging(*, log_format: str | None = None) -> None:
    """Log to stderr at ``RESOFLEET_LOG_LEVEL`` (default INFO), in ``log_format`` (``None``:
    text until :func:`load_config` reads ``[log] format``), with tokens redacted.

    websockets logs every handshake at INFO; the gateway logs its own sessions, so it is
    kept at WARNING unless the level is DEBUG. The redaction filter goes on the root
    logger's handler: every record of every logger passes it on the way out, before the
    formatter (text or JSON) sees it. A root logger that has handlers already (an embedding
    program, a test runner) keeps them: only its level is left as it was, as before.
    """
    given = os.environ.get("RESOFLEET_LOG_LEVEL", "").strip()
    name = given.upper() or DEFAULT_LOG_LEVEL
    if name not in LOG_LEVELS:
        raise CommandError(f"RESOFLEET_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {given!r}")
    level = logging.getLevelNamesMapping()[name]
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(LOG_HANDLER)
        root.addHandler(handler)
        root.setLevel(level)
        use_log_format(log_format or DEFAULT_LOG_FORMAT)
    quiet = level if level == logging.DEBUG else max(level, logging.WARNING)
    logging.getLogger("websockets").setLevel(quiet)
    # A browser's ?token= (or a Bearer header in a traceback) must never reach a log file.
    from resofleet.gateway.redact import install

    install()


def use_log_format(log_format: str) -> None:
    """Format the lines of the handler :func:`setup_logging` made as ``log_format``
    (one of :data:`LOG_FORMATS`); nothing when it made none. JSON also puts a
    :class:`~resofleet.logs.ContextFilter` first on it, before the redaction."""
    from resofleet.logs import ContextFilter, JsonFormatter

    for handler in logging.getLogger().handlers:
        if handler.get_name() != LOG_HANDLER:
            continue
        for old in [f for f in handler.filters if isinstance(f, ContextFilter)]:
            handler.removeFilter(old)
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
            handler.filters.insert(0, ContextFilter())
        else:
            handler.setFormatter(logging.Formatter(LOG_FORMAT))


def add_log_argument(parser: argparse.ArgumentParser) -> None:
    """``--log-format``, once per parser (the command line adds it to every command)."""
    if any("--log-format" in action.option_strings for action in parser._actions):
        return
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default=None,
        help="log lines on stderr as text or JSON objects (default: [log] format, else text)",
    )


# -- the configuration -----------------------------------------------------------------------


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="TOML configuration (default: $RESOFLEET_CONFIG)"
    )
    add_log_argument(parser)


def add_amqp_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--amqp", metavar="URL", help=(
            "RabbitMQ URL, or a cluster's URLs separated by commas "
            "(default: $RESOFLEET_AMQP_URL or [bus] url)"
        )
    )


def broker_url(
    args: argparse.Namespace, config: Config, *, missing: str, command: str | None = None
) -> str:
    """``--amqp``, else the config's ``[bus] url`` (or ``$RESOFLEET_AMQP_URL``); without
    either, a :class:`CommandError` saying ``missing``."""
    url: str | None = args.amqp or config.bus_url
    if not url:
        raise CommandError(missing, command=command)
    return url


def load_config(args: argparse.Namespace, *, command: str | None = None) -> Config:
    """The configuration ``--config`` (or ``$RESOFLEET_CONFIG``) names, or the defaults;
    its ``[log] format`` applies from here on unless ``--log-format`` said otherwise."""
    from resofleet.config import ConfigError
    from resofleet.config import load_config as load

    try:
        config = load(args.config)
    except ConfigError as exc:
        raise CommandError(str(exc), command=command) from None
    if getattr(args, "log_format", None) is None:
        use_log_format(config.log.format)
    return config


# -- listening -------------------------------------------------------------------------------


def add_listen_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="port to listen on (default 8000; 0 picks a free one)"
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="serve wss:// with this certificate")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")


def listen_options(args: argparse.Namespace, config: Config) -> tuple[str, int, ssl.SSLContext | None]:
    """Host, port and TLS context: the flags, else the configuration."""
    host = args.host or config.gateway.host
    port = args.port if args.port is not None else config.gateway.port
    if not 0 <= port <= 65535:
        raise CommandError(f"--port must be 0-65535, not {port}")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CommandError("--tls-cert and --tls-key go together")
    context = None
    if args.tls_cert:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise CommandError(f"cannot load --tls-cert/--tls-key: {exc}") from None
    return host, port, context


def security_for(host: str, config: Config) -> Security:
    """The gateway's security settings.

    Without a secret a gateway runs open (every client is an admin): allowed on loopback
    only, and said once at start.
    """
    from resofleet.gateway import Security
    from resofleet.gateway.security import is_loopback

    security = Security.from_settings(config.gateway)
    if security.open and not is_loopback(host):
        raise CommandError(
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


def listen_error(host: str, port: int, exc: OSError) -> CommandError:
    """The error to raise when the gateway cannot listen."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return CommandError(f"cannot listen on {host}:{port}: {reason}", status=FAILURE)


def announce(url: str, extra: str = "") -> None:
    """The line saying where the gateway listens (with the real port), then the line
    naming its dashboard (``http(s)://host:port/``, the same socket)."""
    print(f"{LISTENING} {url}{extra}", flush=True)
    print(f"{DASHBOARD} {dashboard_url(url)}", flush=True)


def dashboard_url(ws_url: str) -> str:
    """The dashboard's address for a gateway listening on ``ws_url`` (``ws://h:p/ws``)."""
    scheme, _, rest = ws_url.partition("://")
    return f"{'https' if scheme == 'wss' else 'http'}://{rest.partition('/')[0]}/"


# -- what a service runs with ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def opened_audit(
    path: str | None, *, source: str, command: str | None = None
) -> AsyncIterator[AuditLog | None]:
    """A started audit log (``None``: none configured), closed on the way out: after
    whatever was recorded in it has stopped."""
    from resofleet.audit import AuditLogUnavailable, start_audit_log

    try:
        audit = await start_audit_log(path, source=source)
    except AuditLogUnavailable as exc:
        raise CommandError(str(exc), status=FAILURE, command=command) from None
    try:
        yield audit
    finally:
        if audit is not None:
            await audit.close()


@contextlib.asynccontextmanager
async def started_bus(
    url: str, *, prefix: str, name: str, command: str | None = None,
    requesters: tuple[str, ...] | None = None,
) -> AsyncIterator[AmqpBus]:
    """A connected :class:`~resofleet.bus.AmqpBus`, closed on the way out; ``name`` names
    the connection on the broker (see :func:`connection_name`); ``requesters``: the broker
    users whose requests the servers it serves accept."""
    from resofleet.bus import AmqpBus, BusUnavailable
    from resofleet.contracts import Topology

    bus = AmqpBus(url, topology=Topology(prefix=prefix), name=name, requesters=requesters)
    try:
        try:
            await bus.start()
        except BusUnavailable as exc:
            raise CommandError(str(exc), status=FAILURE, command=command) from None
        yield bus
    finally:
        await bus.close()


def connection_name(role: str) -> str:
    """``resofleet-<role>@<host>``: who holds a connection, in the broker's list of them."""
    return f"resofleet-{role}@{socket.gethostname()}"


@contextlib.contextmanager
def stop_signals() -> Iterator[asyncio.Event]:
    """An event set at the first SIGTERM or SIGINT received inside the block.

    Say "ready" (the listening or serving line) inside it: whoever waits for that line
    may signal at once, and the signal must find the handler in place.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
