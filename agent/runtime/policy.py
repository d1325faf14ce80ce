"""The restart policy: whether, and how soon, a headless that died is started again.

Sans-I/O and shared by both runtimes: a runtime tells a :class:`RestartTracker` when a
run starts and when it died (with the time, read from whatever clock the runtime uses,
the exit code, and whether an operator stopped it), and gets a :class:`Verdict` back;
sleeping and starting are the runtime's business. The rules, in the order they apply:

1. A run an operator ended on purpose is never restarted (``resofleet`` ``container
   stop``; for Docker also ``docker stop`` / ``docker kill`` from outside, which the
   engine's events show as ``kill`` before ``die``). It is not counted as a death.
2. ``restart = "never"``: no death is restarted. ``"on-failure"``: only a failure is,
   an exit code outside :data:`CLEAN_EXIT_CODES` (or an unknown one).
   ``"always"``: every death is, a clean exit too (a headless that exits cleanly at once,
   again and again, is as broken as one that crashes).
3. A run that lasted :attr:`RestartPolicy.stable_run` seconds or more ends a streak: the
   backoff starts over.
4. The :attr:`RestartPolicy.loop_limit`-th death within :attr:`RestartPolicy.loop_window`
   seconds is a crash loop: the state becomes ``crashloop`` and nothing restarts it
   until someone starts it (:meth:`RestartTracker.reset`).
5. Otherwise it is restarted after :attr:`RestartPolicy.backoff_start` seconds, doubling
   per death of the streak up to :attr:`RestartPolicy.backoff_max`.
"""

from __future__ import annotations

import collections
import signal
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_START",
    "CLEAN_EXIT_CODES",
    "CRASH_LOOP_LIMIT",
    "CRASH_LOOP_WINDOW",
    "RESTART_MODES",
    "RestartMode",
    "RestartPolicy",
    "RestartTracker",
    "STABLE_RUN",
    "Verdict",
    "default_mode",
    "exit_code_of",
]

#: ``always``: every death; ``on-failure``: deaths with a failing exit code; ``never``.
RestartMode = Literal["always", "on-failure", "never"]
RESTART_MODES: Final[tuple[RestartMode, ...]] = ("always", "on-failure", "never")

#: First restart delay (s) after a death; doubles per death up to :data:`BACKOFF_MAX`.
#: A second is enough for a crashed headless's ports and files to be released.
BACKOFF_START: Final = 1.0
#: Longest restart delay (s): a headless that keeps dying is retried twice a minute, so
#: it comes back soon after whatever killed it is fixed.
BACKOFF_MAX: Final = 30.0
#: Seconds a run must last for its death to start the backoff over: longer than a
#: headless takes to boot and load its worlds (tens of seconds on a slow host), so a run
#: that got this far died of something new, not of what killed the quick runs before it.
STABLE_RUN: Final = 60.0
#: Deaths within :data:`CRASH_LOOP_WINDOW` that make a crash loop: with the backoff above,
#: five quick deaths take about 15 s of delays, clearly no passing hiccup.
CRASH_LOOP_LIMIT: Final = 5
#: Seconds over which deaths are counted for the crash-loop guard (two minutes).
CRASH_LOOP_WINDOW: Final = 120.0
#: Exit codes that are not a failure for ``on-failure``: a clean exit (the console's
#: ``shutdown``), and SIGINT / SIGTERM, as shells and Docker report them (128 + signal);
#: the same set systemd's ``Restart=on-failure`` treats as clean.
CLEAN_EXIT_CODES: Final = frozenset({0, 128 + signal.SIGINT, 128 + signal.SIGTERM})


def exit_code_of(returncode: int) -> int:
    """A child's return code as a shell and Docker report it: a death by signal N (Python's
    ``-N``) is ``128 + N``, so both runtimes speak of 137 for SIGKILL."""
    return 128 - returncode if returncode < 0 else returncode


def default_mode(runtime: str) -> RestartMode:
    """The mode when a server's config names none: ``always`` for a child process (what
    the process runtime always did: the agent is its only supervisor), ``on-failure`` for
    a Docker container (as Docker's own policy of that name: a headless shut down from its
    console on purpose, exit code 0, stays down)."""
    return "on-failure" if runtime == "docker" else "always"


@dataclass(frozen=True, kw_only=True, slots=True)
class RestartPolicy:
    """One server's rules (see the module docstring); every field has a named default."""

    mode: RestartMode = "always"
    backoff_start: float = BACKOFF_START
    backoff_max: float = BACKOFF_MAX
    stable_run: float = STABLE_RUN
    loop_limit: int = CRASH_LOOP_LIMIT
    loop_window: float = CRASH_LOOP_WINDOW

    def __post_init__(self) -> None:
        if self.mode not in RESTART_MODES:
            raise ValueError(f"restart must be one of {', '.join(RESTART_MODES)}, not {self.mode!r}")
        if not 0 < self.backoff_start <= self.backoff_max:
            raise ValueError("backoff_start must be > 0 and <= backoff_max")
        if self.stable_run <= 0 or self.loop_window <= 0 or self.loop_limit < 1:
            raise ValueError("stable_run and loop_window must be > 0, loop_limit >= 1")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do about one death: ``restart`` after ``delay`` seconds, else stay down;
    ``state`` is the runtime's state meanwhile (``restarting``, ``exited``, ``crashloop``)
    and ``why`` a phrase for the log line."""

    restart: bool
    state: str
    delay: float
    why: str


class RestartTracker:
    """The deaths of one server and the streak they form (see the module docstring).

    ``now`` is always passed in, in seconds of one monotonic clock: the tracker reads no
    clock of its own.
    """

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._deaths: collections.deque[float] = collections.deque()
        self._streak = 0
        self._started: float | None = None
        #: The last verdict given (``None`` before the first death).
        self.last: Verdict | None = None

    def reset(self) -> None:
        """Someone started the server: forget past deaths (this ends a crash loop)."""
        self._deaths.clear()
        self._streak = 0

    def started(self, now: float) -> None:
        """A run began at ``now``."""
        self._started = now

    def died(self, now: float, *, exit_code: int | None, operator: bool = False) -> Verdict:
        """The run ended at ``now`` with ``exit_code`` (``None``: unknown); ``operator``:
        someone ended it on purpose."""
        self.last = verdict = self._judge(now, exit_code, operator)
        return verdict

    def hung(self, now: float) -> Verdict:
        """The console stopped answering and the headless is restarted for it
        (``health_restart``): a death for the crash-loop guard whatever the mode, so a
        headless that hangs at every start ends in ``crashloop`` instead of being
        restarted for ever. No backoff: the health check already waited its misses."""
        self._started = None
        self.last = verdict = self._looped(now) or Verdict(
            True, "restarting", 0.0, "restarting it (health_restart)"
        )
        return verdict

    def _looped(self, now: float) -> Verdict | None:
        """Count a death at ``now``; the crash-loop verdict when it makes one."""
        policy, deaths = self.policy, self._deaths
        deaths.append(now)
        while deaths and now - deaths[0] >= policy.loop_window:
            deaths.popleft()
        if len(deaths) < policy.loop_limit:
            return None
        return Verdict(
            False, "crashloop", 0.0,
            f"it died {len(deaths)} times in {policy.loop_window:g} s (crash loop); "
            "start it to try again",
        )

    def _judge(self, now: float, exit_code: int | None, operator: bool) -> Verdict:
        policy = self.policy
        if operator:
            return Verdict(False, "exited", 0.0, "stopped by an operator")
        ran = now - self._started if self._started is not None else 0.0
        self._started = None
        failed = exit_code is None or exit_code not in CLEAN_EXIT_CODES
        if policy.mode == "never":
            return Verdict(False, "exited", 0.0, 'restart = "never"')
        if policy.mode == "on-failure" and not failed:
            return Verdict(False, "exited", 0.0, f'a clean exit ({exit_code}) and restart = "on-failure"')
        if ran >= policy.stable_run:
            self._streak = 0  # a long run ends a streak of quick deaths
        looped = self._looped(now)
        if looped is not None:
            return looped
        delay = min(policy.backoff_start * 2.0**self._streak, policy.backoff_max)
        self._streak += 1
        return Verdict(True, "restarting", delay, f"restarting in {delay:g} s")
