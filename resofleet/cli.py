"""The ``resofleet`` command line.

Each subcommand is a module in :mod:`resofleet.commands` exposing
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed arguments and returning an exit code. Modules are listed in
:data:`SUBCOMMANDS` in the order ``--help`` shows them.

:func:`main` sets up logging the same way for every command
(:func:`~resofleet.commands.common.setup_logging`: ``RESOFLEET_LOG_LEVEL``, the
``--log-format`` that :func:`build_parser` gives every command, tokens redacted), and turns
a :class:`~resofleet.commands.common.CommandError` into its one line on stderr and its exit status: the commands raise it, none prints its own errors.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from resofleet.commands.common import CommandError, add_log_argument, setup_logging

#: The subcommands, in the order ``--help`` lists them.
SUBCOMMANDS: tuple[str, ...] = (
    "up",
    "gateway",
    "agent",
    "notifier",
    "emulator",
    "console",
    "token",
    "audit",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resofleet",
        description="A control plane for Resonite headless servers.",
    )
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"resofleet.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"resofleet.commands.{name}":
                raise
            continue  # not built yet
        module.register(sub)
    for command in _commands(parser):
        add_log_argument(command)
    return parser


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers that run something: those without subcommands of their own."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                found.extend(_commands(child) or [child])
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        setup_logging(log_format=getattr(args, "log_format", None))
        return int(func(args) or 0)
    except CommandError as exc:
        print(exc.line(), file=sys.stderr, flush=True)
        return exc.status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
