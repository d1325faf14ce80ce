"""How long a console command may take: the one table both sides of the bus read.

The agent gives up on a command at its deadline (and resynchronises the console); the
gateway waits that long plus a margin for the trip over the bus, so that the agent's own
``timeout`` answer, which says more, arrives first. Both import these numbers from here,
so the two can never drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from .permissions import command_name

__all__ = ["COMMAND_DEADLINE", "LONG_COMMAND_DEADLINES", "deadline_for"]

#: Seconds an ordinary command may take. The console answers in milliseconds; ten
#: seconds means it is stuck, and the next command needs a resynchronised console.
COMMAND_DEADLINE: Final = 10.0
#: Seconds for the commands known to be slow, by lowercase name: loading a world from
#: the cloud (120 s), saving or restarting one (60 s), closing one (30 s).
LONG_COMMAND_DEADLINES: Final[Mapping[str, float]] = MappingProxyType(
    {
        "startworldurl": 120.0,
        "startworldtemplate": 120.0,
        "importminecraft": 120.0,
        "save": 60.0,
        "restart": 60.0,
        "shutdown": 60.0,
        "import": 60.0,
        "close": 30.0,
    }
)


def deadline_for(command: str) -> float:
    """Seconds ``command`` may take before the agent gives up on it."""
    return LONG_COMMAND_DEADLINES.get(command_name(command), COMMAND_DEADLINE)
