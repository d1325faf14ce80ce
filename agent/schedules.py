"""Schedules: when a configured action is due on a server, and what to do about it. Pure.

A ``[[schedules]]`` entry of the configuration (:class:`ScheduleConfig`) is checked and
compiled once, at start, into a :class:`Schedule`; bad entries are refused with the key
and the reason (:class:`ScheduleError`). At run time :class:`Timetable` (one per server)
says which schedules are due, and :func:`decide` what a due slot gets: run, wait, skip.
Nothing here reads the clock, sleeps or touches a console: the time and the number of
people in the server's worlds are passed in, so every rule below is unit-tested with a
clock the test holds. The I/O (the sleeping, the console, the state file, the events) is
:mod:`resofleet.agent.scheduler`.

Slots
    A schedule's *slots* are the moments it is due. ``cron`` (five fields, Debian cron's
    meaning) reads them in ``timezone`` (IANA name, default UTC); daylight saving time
    follows Debian cron (a 02:30 job on a spring-forward night runs at 03:00, on a
    fall-back night once). ``every`` (``"6h"``, ``"90m"``...) has a slot at every
    multiple of the interval since 1970-01-01 00:00 UTC, so ``"6h"`` is due at 00:00,
    06:00, 12:00 and 18:00 UTC whenever the agent started, and a slot is the same moment
    for every agent and across restarts; ``timezone`` does not apply to it.

``when = "empty"``
    The slot waits until nobody but the headless's own account is in any world of the
    server (a user counts whether or not the console marks them present: a user with the
    world in the background still loses it in a restart), for at most ``max_wait``
    (default :data:`DEFAULT_MAX_WAIT`). Then ``on_timeout = "run"`` (the default: the
    action is why the schedule exists) runs it anyway, ``"skip"`` lets the slot go.
    While the number of people is unknown (the console is not answering) the slot waits.

One slot, at most one run
    A slot runs (or is skipped) at most once per server: the last slot handled and a slot
    still waiting are kept per (schedule, server) in :class:`RunState`, which the runner
    persists before the action starts. A clock put back by less than
    :data:`CLOCK_BACK_LIMIT` (three hours) runs no slot again; put back by more, the
    slots run as usual (as Debian cron: the slots recorded were a wrong clock's). A slot that comes while the previous one still
    waits or runs is not run separately. Slots that passed while the agent was down (or
    more than :data:`MISSED_AFTER` ago when first seen, after a suspend) are not replayed;
    a slot that was already waiting when the agent stopped is waited for again after it
    comes back, within what is left of its ``max_wait``.

Actions (:data:`ACTIONS`)
    ``restart`` restarts the headless (its container or process; a server that is not
    running is skipped, so an operator's stop is respected). ``save`` saves every running
    world. ``command`` sends one console line, ``command = "..."``, which must be a known
    console command an operator may run (checked with the gateway's own rules:
    :func:`~resofleet.contracts.check_command_text`,
    :func:`~resofleet.contracts.required_role`): a schedule acts as an operator.

Errors::

    ValueError
     └── ScheduleError    ``field`` (the key in the entry) and ``problem`` (a phrase)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone as dt_timezone
from fnmatch import fnmatchcase
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from cronsim import CronSim, CronSimError

from resofleet.contracts import (
    COMMAND_ROLES,
    ContractError,
    Role,
    World,
    check_command_text,
    command_name,
    required_role,
)

from .timespan import parse_duration

__all__ = [
    "ACTIONS",
    "CLOCK_BACK_LIMIT",
    "DEFAULT_MAX_WAIT",
    "MISSED_AFTER",
    "RunState",
    "Schedule",
    "ScheduleConfig",
    "ScheduleError",
    "Step",
    "Timetable",
    "Verdict",
    "compile_schedule",
    "decide",
    "people_in",
    "slot_text",
]

#: What a schedule can do (see the module docstring).
ACTIONS: Final = ("restart", "save", "command")
Action = Literal["restart", "save", "command"]

#: Seconds a ``when = "empty"`` slot waits for the server to empty when ``max_wait`` is
#: not given: an hour lets most sessions end and still runs a night's job at night.
DEFAULT_MAX_WAIT: Final = 3600.0
#: Seconds after its time within which a slot seen for the first time still runs: more
#: than any scheduling delay of a busy host, far less than any interval worth scheduling.
#: Later than that, the agent was down or suspended at the slot: it is not replayed.
MISSED_AFTER: Final = 60.0
#: Seconds a recorded slot may lie ahead of the clock and still count as run: the clock
#: was put back by less (an NTP step, a short correction), so that slot is not run again.
#: Farther ahead, it was recorded by a clock that was wrong, and the slots of the right
#: time run as usual: Debian cron's rule, and its three hours.
CLOCK_BACK_LIMIT: Final = 3 * 3600.0
#: Shortest ``every``, in seconds: a schedule is maintenance, not a poll.
MIN_EVERY: Final = 1.0
#: The least role a scheduled console command may need: a schedule acts as an operator.
SCHEDULE_ROLE: Final = Role.OPERATOR
#: How many characters of a config digest name a schedule that has no ``name``.
_DIGEST_CHARS: Final = 8

_Name = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="a name of lowercase letters, digits and dashes (at most 63)",
    ),
]
_Pattern = Annotated[str, msgspec.Meta(min_length=1, description="a server id or glob pattern")]


class ScheduleError(ValueError):
    """A ``[[schedules]]`` entry that cannot run: ``field`` is its key, ``problem`` a phrase
    that completes "<key> ..."."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


class ScheduleConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``[[schedules]]`` entry, as written (see the module docstring)."""

    #: How events, the audit log and the metrics name it; default: the action and a digest
    #: of the entry (``restart-1a2b3c4d``), the same at every start while the entry is.
    name: _Name | None = None
    #: Glob patterns over the ids of this agent's servers (``eu-*``, ``lab``).
    servers: tuple[_Pattern, ...]
    cron: str | None = None
    every: str | None = None
    timezone: str = "UTC"
    action: Action
    command: str | None = None
    when: Literal["always", "empty"] = "always"
    max_wait: str | None = None
    on_timeout: Literal["run", "skip"] | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """A checked ``[[schedules]]`` entry (:func:`compile_schedule`)."""

    name: str
    servers: tuple[str, ...]
    action: Action
    #: The console line of ``command`` (``"save"`` for ``save``, ``""`` for ``restart``).
    command: str
    cron: str | None = None
    every: float | None = None
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    when: Literal["always", "empty"] = "always"
    max_wait: float = 0.0
    on_timeout: Literal["run", "skip"] = "run"

    def serves(self, server: str) -> bool:
        """Whether one of the patterns matches the server id ``server``."""
        return any(fnmatchcase(server, pattern) for pattern in self.servers)

    def next_slot(self, after: float) -> float:
        """The first slot strictly after ``after`` (Unix seconds), in Unix seconds."""
        if self.every is not None:
            return (math.floor(after / self.every) + 1) * self.every
        assert self.cron is not None
        # CronSim drops the fraction of a second, steps one second, then searches: the
        # first match strictly after ``after`` (cron slots are whole minutes)
        start = datetime.fromtimestamp(after, tz=self.zone)
        return next(iter(CronSim(self.cron, start))).timestamp()

    def is_slot(self, at: float) -> bool:
        """Whether ``at`` is one of this schedule's slots (a persisted one still is)."""
        return self.next_slot(at - 1.0) == at


def compile_schedule(config: ScheduleConfig, *, servers: Sequence[str] = ()) -> Schedule:
    """``config`` checked and compiled; raises :class:`ScheduleError` naming the key.

    ``servers``: the ids this agent serves; when given, every pattern must match one (a
    pattern matching nothing is a typo until proven otherwise)."""
    if not config.servers:
        raise ScheduleError("servers", 'must name at least one server id or pattern (["*"]: all of them)')
    if (config.cron is None) == (config.every is None):
        raise ScheduleError("cron", 'or every: give exactly one (cron = "0 4 * * *" or every = "6h")')
    try:
        zone = ZoneInfo(config.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError("timezone", f"must be an IANA time zone such as Europe/Berlin, not {config.timezone!r}") from None
    every: float | None = None
    if config.every is not None:
        every = _duration("every", config.every)
        if every < MIN_EVERY or not every.is_integer():
            raise ScheduleError("every", f"must be a whole number of seconds, at least {MIN_EVERY:.0f}s, not {config.every!r}")
        if config.timezone != "UTC":
            raise ScheduleError("timezone", 'applies to cron only (every counts from 1970-01-01 00:00 UTC)')
    if config.cron is not None:
        if len(config.cron.split()) != 5:
            raise ScheduleError("cron", f"must have five fields (minute hour day month weekday), not {config.cron!r}")
        try:
            next(iter(CronSim(config.cron, datetime(2000, 1, 1, tzinfo=zone))))
        except (CronSimError, StopIteration):
            raise ScheduleError("cron", f"is not a cron expression that ever runs: {config.cron!r}") from None
    command = _command(config)
    if config.when == "always":
        for key in ("max_wait", "on_timeout"):
            if getattr(config, key) is not None:
                raise ScheduleError(key, 'applies only with when = "empty"')
        max_wait = 0.0
    else:
        max_wait = DEFAULT_MAX_WAIT if config.max_wait is None else _duration("max_wait", config.max_wait)
    for pattern in config.servers:
        if servers and not any(fnmatchcase(server, pattern) for server in servers):
            raise ScheduleError("servers", f"pattern {pattern!r} matches none of this agent's servers ({', '.join(servers)})")
    return Schedule(
        name=config.name or _derived_name(config),
        servers=config.servers,
        action=config.action,
        command=command,
        cron=config.cron,
        every=every,
        zone=zone,
        when=config.when,
        max_wait=max_wait,
        on_timeout=config.on_timeout or "run",
    )


def _duration(key: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ScheduleError(key, f"must be a duration: {exc}") from None


def _command(config: ScheduleConfig) -> str:
    if config.action != "command":
        if config.command is not None:
            raise ScheduleError("command", 'applies only with action = "command"')
        return "save" if config.action == "save" else ""
    if not config.command or not config.command.strip():
        raise ScheduleError("command", 'is required with action = "command" (the console line to send)')
    try:
        check_command_text(config.command)
    except ContractError as exc:
        raise ScheduleError("command", f"cannot be sent as one console line: {exc}") from None
    name = command_name(config.command)
    if name not in COMMAND_ROLES:
        raise ScheduleError("command", f"{name!r} is not a console command the agent knows")
    if required_role(config.command) > SCHEDULE_ROLE:
        raise ScheduleError(
            "command",
            f"{name!r} needs the admin role; a schedule acts as an operator "
            '(to restart the headless, use action = "restart")',
        )
    return config.command.strip()


def _derived_name(config: ScheduleConfig) -> str:
    """``<action>-<8 hex digits>``: a digest of the entry, the same at every start."""
    digest = hashlib.sha256(msgspec.json.encode(config)).hexdigest()[:_DIGEST_CHARS]
    return f"{config.action}-{digest}"


# -- decisions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a due slot gets now: ``run``, ``wait`` (for the server to empty) or ``skip``;
    ``reason`` is a phrase for the event's ``detail`` and the audit log."""

    kind: Literal["run", "wait", "skip"]
    reason: str = ""


def people_in(worlds: Sequence[World]) -> int:
    """Users in ``worlds`` besides the headless's own account, which the console counts in
    every world."""
    return sum(max(w.users - 1, 0) for w in worlds)


def decide(schedule: Schedule, slot: float, now: float, people: int | None) -> Verdict:
    """The verdict for ``slot`` at ``now``, ``people`` being the number of users besides
    the host in the server's worlds (``None``: unknown). See the module docstring."""
    if schedule.when == "always":
        return Verdict("run")
    if people == 0:
        return Verdict("run", "the server is empty")
    if now < slot + schedule.max_wait:
        return Verdict("wait")
    who = "the number of users is unknown" if people is None else f"{people} user{'' if people == 1 else 's'} still in"
    if schedule.on_timeout == "run":
        return Verdict("run", f"max_wait passed, {who}")
    return Verdict("skip", f"max_wait passed, {who}")


# -- state ------------------------------------------------------------------------------


class _Entry(msgspec.Struct, omit_defaults=True):
    #: The last slot that ran or was skipped.
    done: float | None = None
    #: A slot waiting for the server to empty.
    waiting: float | None = None


class _StateFile(msgspec.Struct):
    version: int = 1
    #: schedule name -> its entry on this server
    schedules: dict[str, _Entry] = {}


class RunState:
    """One server's last slots per schedule, as persisted (JSON, :meth:`dump`/:meth:`load`)."""

    def __init__(self, entries: dict[str, _Entry] | None = None) -> None:
        self._entries: dict[str, _Entry] = entries or {}

    @classmethod
    def load(cls, data: bytes) -> RunState:
        """The state in ``data``; raises :class:`ValueError` when it is not a state file."""
        try:
            return cls(msgspec.json.decode(data, type=_StateFile).schedules)
        except msgspec.DecodeError as exc:
            raise ValueError(f"not a schedule state file ({exc})") from None

    def dump(self) -> bytes:
        return msgspec.json.encode(_StateFile(schedules=self._entries))

    def done(self, schedule: str) -> float | None:
        return self._entries.get(schedule, _Entry()).done

    def waiting(self, schedule: str) -> float | None:
        return self._entries.get(schedule, _Entry()).waiting

    def set(self, schedule: str, *, done: float | None, waiting: float | None) -> bool:
        """Record; whether anything changed (then the runner writes the file)."""
        entry = _Entry(done=done, waiting=waiting)
        if self._entries.get(schedule) == entry:
            return False
        self._entries[schedule] = entry
        return True


# -- one server's timetable -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """What :meth:`Timetable.decide` made of a due schedule: ``verdict`` (``None``: nothing
    to do, the slot ran already or was missed, see ``note``), the ``slot``, and whether
    the state changed (the runner persists it before acting)."""

    schedule: Schedule
    slot: float
    verdict: Verdict | None
    changed: bool
    note: str = ""


class Timetable:
    """The schedules of one server: which is due, what it gets, when to look again.

    ``check_interval``: seconds between looks at a slot waiting for the server to empty.
    """

    def __init__(
        self,
        schedules: Sequence[Schedule],
        state: RunState,
        now: float,
        *,
        check_interval: float,
    ) -> None:
        self.schedules = tuple(schedules)
        self.state = state
        self.check_interval = check_interval
        #: name -> the slot it waits for or will next handle
        self.next: dict[str, float] = {}
        #: Slots found waiting in the state but whose max_wait ended while the agent was down.
        self.expired: list[tuple[Schedule, float]] = []
        for schedule in self.schedules:
            waiting = state.waiting(schedule.name)
            done = state.done(schedule.name)
            if (waiting is not None and waiting <= now and (done is None or waiting > done)
                    and schedule.when == "empty" and schedule.is_slot(waiting)):
                if now < waiting + schedule.max_wait:
                    self.next[schedule.name] = waiting  # resume: it had opened before the stop
                    continue
                self.expired.append((schedule, waiting))
            self.next[schedule.name] = schedule.next_slot(now)

    def waiting(self, schedule: Schedule) -> bool:
        return self.state.waiting(schedule.name) == self.next[schedule.name]

    def due(self, now: float) -> list[Schedule]:
        """The schedules whose slot has come (in the order of the configuration)."""
        return [s for s in self.schedules if self.next[s.name] <= now]

    def needs_people(self, schedule: Schedule) -> bool:
        """Whether :meth:`decide` needs the number of people for ``schedule`` now."""
        return schedule.when == "empty"

    def decide(self, schedule: Schedule, now: float, people: int | None) -> Step:
        """Handle ``schedule``'s due slot at ``now``: the verdict and the state to keep."""
        name = schedule.name
        slot = self.next[name]
        done = self.state.done(name)
        if done is not None and done - now > CLOCK_BACK_LIMIT:
            done = None  # recorded by a clock far ahead (see CLOCK_BACK_LIMIT): not a run
        if done is not None and slot <= done:  # the clock went back, or a resumed slot ran
            self.next[name] = schedule.next_slot(max(now, done))
            return Step(schedule, slot, None, False, "ran already")
        waiting = self.state.waiting(name) == slot
        if not waiting and now - slot > MISSED_AFTER:
            self.next[name] = schedule.next_slot(now)
            return Step(schedule, slot, None, False, "missed (the agent was not running at its time)")
        verdict = decide(schedule, slot, now, people)
        if verdict.kind == "wait":
            return Step(schedule, slot, verdict, self.state.set(name, done=done, waiting=slot))
        changed = self.state.set(name, done=slot, waiting=None)
        self.next[name] = schedule.next_slot(max(now, slot))
        return Step(schedule, slot, verdict, changed)

    def finished(self, schedule: Schedule, now: float) -> None:
        """``schedule``'s action ended at ``now``: slots that passed meanwhile are not run."""
        self.next[schedule.name] = max(self.next[schedule.name], schedule.next_slot(now))

    def wake_at(self, now: float) -> float:
        """When to look again: the next slot, or the next check of a waiting one."""
        times = []
        for schedule in self.schedules:
            slot = self.next[schedule.name]
            if self.waiting(schedule):
                times.append(min(now + self.check_interval, slot + schedule.max_wait))
            else:
                times.append(slot)
        return min(times, default=math.inf)


def slot_text(slot: float) -> str:
    """A slot as ISO 8601 UTC text, for logs and the audit log."""
    return datetime.fromtimestamp(slot, tz=dt_timezone.utc).isoformat().replace("+00:00", "Z")
