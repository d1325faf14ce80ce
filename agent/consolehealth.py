"""The console health check's verdict: a console that misses N polls in a row is unhealthy.

Sans-I/O. :class:`~resofleet.agent.server.ManagedServer` reports here the outcome of each of
its console polls: the worlds and bans polls, and a health probe (one cheap command,
``version``) every ``[agent] health_interval`` seconds, so a hang is noticed however long
the other intervals are. :meth:`ConsoleHealth.answered` when a poll got its answer,
:meth:`ConsoleHealth.missed` when it got no complete answer within its deadline (the
probe's is ``health_timeout``). A poll that could not even reach the console, because
other commands held it (a client's ``save`` or ``startWorldURL``) for its whole wait,
counts as neither: a busy console is not a hung one.

States (``Status.health``): ``""`` until the first probe answers, then ``healthy``;
``unhealthy`` after ``health_misses`` misses in a row; ``healthy`` again at the next
answer. The state outlives a restart of the headless (a console is unhealthy until it
answers again), but the count of misses starts over with each run, so each run that hangs
earns one :attr:`Change.act` (the server restarts the headless on it when
``health_restart`` is on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["Change", "ConsoleHealth", "HEALTHY", "UNHEALTHY"]

HEALTHY: Final = "healthy"
UNHEALTHY: Final = "unhealthy"


@dataclass(frozen=True, slots=True)
class Change:
    """What a probe's outcome changed: the new ``state`` (``None``: none worth an event),
    and ``act``: this run just became unhealthy (restart it if configured)."""

    state: str | None = None
    act: bool = False


_NOTHING: Final = Change()


class ConsoleHealth:
    """One server's health check (see the module docstring)."""

    def __init__(self, *, misses: int) -> None:
        if misses < 1:
            raise ValueError("misses must be at least 1")
        self.misses = misses
        #: ``""``, ``healthy`` or ``unhealthy``.
        self.state = ""
        #: Misses in a row in this run.
        self.missed_in_a_row = 0

    @property
    def unhealthy(self) -> bool:
        return self.state == UNHEALTHY

    def new_run(self) -> None:
        """The headless (re)started: count misses afresh; the state stays until a probe."""
        self.missed_in_a_row = 0

    def answered(self) -> Change:
        """A probe got its answer. An event only when it ends an unhealthy spell (the first
        ``healthy`` of a fresh console is in its status, not worth an event)."""
        self.missed_in_a_row = 0
        was = self.state
        self.state = HEALTHY
        return Change(HEALTHY) if was == UNHEALTHY else _NOTHING

    def missed(self) -> Change:
        """A probe got no complete answer in time."""
        self.missed_in_a_row += 1
        if self.missed_in_a_row != self.misses:
            return _NOTHING
        was = self.state
        self.state = UNHEALTHY
        return Change(UNHEALTHY if was != UNHEALTHY else None, act=True)
