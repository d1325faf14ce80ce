"""Command-line options of the emulator, shared by ``python -m emulator`` and
``resofleet emulator``.

Only :mod:`argparse` is imported at module level: the resofleet CLI imports
this module whenever it starts, and the console itself loads on :func:`run`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

DEFAULT_SCENARIO = "default"
EXIT_SIGTERM = 143
"""128 + SIGTERM: what a process ended by ``docker stop`` reports."""


def _latency(text: str) -> tuple[str, float]:
    name, sep, seconds = text.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if not sep or not name or value < 0:
        raise argparse.ArgumentTypeError(f"expected COMMAND=SECONDS, got {text!r}")
    return name.casefold(), value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to ``parser``."""
    parser.add_argument(
        "--scenario", default=DEFAULT_SCENARIO, metavar="FILE",
        help="scenario TOML file, or a built-in: default, busy, demo (default: %(default)s)")
    parser.add_argument(
        "--tty", action="store_true",
        help="act as if run under `docker run -t`: echo each command, end lines with CRLF "
             "(skipped when stdin/stdout really are a TTY, which does that itself)")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="seed every random choice (noise, activity, new ids)")
    parser.add_argument("--frozen-clock", action="store_true", default=None,
                        help="stop the clock, so uptimes are exactly the scenario's")
    parser.add_argument("--first-command-quirk", action="store_true",
                        help="answer the first command after startup `Unknown command`")
    parser.add_argument("--noise-rate", type=_rate, metavar="R",
                        help="probability 0..1 that a command's output gets a log block inside")
    parser.add_argument("--chatter-rate", type=_rate, metavar="N",
                        help="engine log lines per second, printed also while idle")
    parser.add_argument("--activity-interval", type=_rate, metavar="S",
                        help="mean seconds between users joining or leaving (0: off)")
    parser.add_argument("--latency", type=_latency, action="append", default=[],
                        metavar="CMD=S", help="seconds a command takes, e.g. restart=1 (repeatable)")
    parser.add_argument("--no-latency", action="store_true",
                        help="drop the scenario's per-command latencies")
    parser.add_argument("--startup-delay", type=_rate, metavar="S",
                        help="seconds the startup log takes before the first prompt")


def run(args: argparse.Namespace) -> int:
    """Load the scenario, apply the overrides, run the console; returns the exit code."""
    from .console import Console, Writer
    from .scenario import ScenarioError, load

    try:
        server, clock, rng = load(args.scenario, seed=args.seed, frozen_clock=args.frozen_clock)
    except ScenarioError as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    options = server.options
    if args.first_command_quirk:
        options.first_command_quirk = 1.0
    if args.noise_rate is not None:
        if args.noise_rate > 1:
            print("emulator: --noise-rate: expected a probability 0..1", file=sys.stderr)
            return 2
        options.noise_rate = args.noise_rate
    if args.chatter_rate is not None:
        options.chatter_rate = args.chatter_rate
    if args.activity_interval is not None:
        options.activity_interval = args.activity_interval
    if args.no_latency:
        options.latency.clear()
    options.latency.update(dict(args.latency))
    if args.startup_delay is not None:
        options.startup_delay = args.startup_delay
    # As PID 1 in a container, SIGTERM would otherwise be ignored and `docker stop`
    # would wait for its SIGKILL; end like a .NET process does on SIGTERM.
    signal.signal(signal.SIGTERM, _terminate)
    # Under a real TTY (a container with tty: true) the kernel's line discipline
    # already echoes input and turns \n into \r\n; doing it again would double both.
    stdin_tty = sys.stdin.isatty()
    stdout_tty = sys.stdout.isatty()
    writer = Writer(sys.stdout.fileno(), crlf=args.tty and not stdout_tty)
    console = Console(server, clock, rng, stdin=sys.stdin.buffer, writer=writer,
                      echo=args.tty and not stdin_tty,
                      colours=options.ansi_colors and (args.tty or stdout_tty))
    return console.run()


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emulator", description="An emulated Resonite headless console.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
