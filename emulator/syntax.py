"""What a console command is, and what running one produces.

A :class:`Command` is one line of the console's ``help``: its name, its usage text and the
handler that runs it. A handler returns the lines to print, or a :class:`Reply` when the
console loop must do more than print (wait, exit, crash, wedge, switch to log mode).
:func:`split_args` splits an input line the way the headless does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .interpreter import Interpreter

__all__ = [
    "Command",
    "Handler",
    "MAX_USERS_RANGE",
    "NO_FOCUSED_WORLD",
    "RECORD_URL",
    "RESONITE_LINK_PORTS",
    "Reply",
    "TEMPLATES",
    "UNKNOWN_COMMAND",
    "USER_NOT_FOUND",
    "WORLD_DESTROYED",
    "split_args",
]

UNKNOWN_COMMAND = "Unknown command"
USER_NOT_FOUND = "User not found"
NO_FOCUSED_WORLD = "No world is currently focused"
WORLD_DESTROYED = "The world has been destroyed in the meanwhile"
MAX_USERS_RANGE = (1, 256)
TEMPLATES: tuple[str, ...] = ("Grid", "Platform", "Blank", "SpaceWorld")
"""Presets startWorldTemplate knows (Config.json's ``loadWorldPresetName``)."""
RECORD_URL = re.compile(r"^(resrec:///?[^/\s]+/[^/\s]+|https?://\S+)$")
RESONITE_LINK_PORTS = (49152, 65535)
"""Ephemeral range a random ResoniteLink port (``enableResoniteLink 0``) is drawn from."""


@dataclass
class Reply:
    """What one input line produced."""

    lines: list[str] = field(default_factory=list)
    delay: float = 0.0
    """Seconds the command takes before its output appears (scenario latency)."""
    exit_code: int | None = None
    """Print ``lines`` then exit with this code, with no prompt (``shutdown``)."""
    crash: bool = False
    """Exit at once, printing nothing (``crash``)."""
    wedge: bool = False
    """Never answer again (startWorldURL with a bad link, when that quirk is on)."""
    log_mode: bool = False
    """Switch to log mode: no prompt until the next input line."""
    late: list[str] = field(default_factory=list)
    """Lines that arrive after the next prompt, glued to it."""


Handler = Callable[["Interpreter", list[str]], "list[str] | Reply"]


@dataclass(frozen=True)
class Command:
    name: str
    args: str
    """The usage text after the lowercase name, as ``help`` prints it."""
    description: str
    handler: Handler
    needs_world: bool = False

    @property
    def min_args(self) -> int:
        return self.args.count("<")

    @property
    def usage(self) -> str:
        return f"Usage: {self.name.lower()} {self.args}"


def split_args(line: str) -> list[str]:
    """Split on spaces; a double-quoted part (spaces included) is one argument."""
    args: list[str] = []
    current: list[str] = []
    quoted = False
    started = False
    for char in line:
        if char == '"':
            quoted = not quoted
            started = True
        elif char == " " and not quoted:
            if started:
                args.append("".join(current))
            current, started = [], False
        else:
            current.append(char)
            started = True
    if started:
        args.append("".join(current))
    return args
