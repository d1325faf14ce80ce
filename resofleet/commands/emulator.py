"""``resofleet emulator``: the emulated headless console on stdin/stdout."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    # emulator.cli imports nothing but argparse; the console loads only when run.
    from resofleet.emulator.cli import add_arguments

    parser = subparsers.add_parser(
        "emulator",
        help="run an emulated Resonite headless console on stdin/stdout",
        description="An emulated Resonite headless console on stdin/stdout (see README, The emulator).",
    )
    add_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from resofleet.emulator.cli import run

    return run(args)
