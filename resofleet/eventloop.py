"""The event loop every service runs on: uvloop where it is installed, else asyncio's own.

uvloop (libuv under asyncio's interface) wakes up, reads sockets and runs callbacks for
a fraction of what the pure-Python loop costs, and a request through this control plane
is mostly wake-ups: a WebSocket frame in, a bus message out and back, a pipe write and
read, a frame out, each one a pass through the loop in the gateway and in the agent.
bench/README.md has the measurements (issue 18).

It is a dependency on Linux only (``pyproject.toml``); elsewhere, or when it cannot be
imported, or when ``RESOFLEET_EVENT_LOOP=asyncio`` says so, the services run on asyncio's
own loop and behave the same: nothing in the project uses an interface only one of the
two has. ``RESOFLEET_EVENT_LOOP`` takes ``auto`` (the default), ``uvloop`` (fail when it
is missing) or ``asyncio``.

Only the standard library is imported at module level: the command line imports this
whenever it starts.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

__all__ = ["EVENT_LOOPS", "EventLoopError", "loop_factory", "loop_name", "run"]

T = TypeVar("T")

#: What ``RESOFLEET_EVENT_LOOP`` accepts.
EVENT_LOOPS: Final = ("auto", "uvloop", "asyncio")
#: Without ``RESOFLEET_EVENT_LOOP``: uvloop when it can be imported (it is installed on
#: Linux with the project), else asyncio's own loop.
DEFAULT_EVENT_LOOP: Final = "auto"
#: The environment variable naming the loop.
ENV: Final = "RESOFLEET_EVENT_LOOP"


class EventLoopError(Exception):
    """``RESOFLEET_EVENT_LOOP`` names no loop, or names uvloop and it is not installed."""


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop ``choice`` (default: ``$RESOFLEET_EVENT_LOOP``, else
    ``auto``) names; ``None`` for asyncio's own."""
    given = choice if choice is not None else os.environ.get(ENV, "")
    name = given.strip().lower() or DEFAULT_EVENT_LOOP
    if name not in EVENT_LOOPS:
        raise EventLoopError(f"{ENV} must be one of {', '.join(EVENT_LOOPS)}, not {given!r}")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise EventLoopError(
                f"{ENV}=uvloop, but uvloop is not installed (pip install uvloop)"
            ) from None
        return None
    return uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: what a running service says it runs on."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], *, choice: str | None = None) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` picks."""
    try:
        factory = loop_factory(choice)
    except EventLoopError:
        main.close()  # never awaited: say nothing more about it
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
