"""The schedule runner: sleeps until a slot, asks the console, acts, reports, remembers.

The agent owns one :class:`Scheduler` for the servers it serves. Per server with at least
one schedule it runs one task around a :class:`~resofleet.agent.schedules.Timetable` (the
rules are there, pure): one server's scheduled actions therefore run one at a time, in the
order of the configuration when several share a slot, and never interleave with each
other (a client's commands still may: the console serialises them).

Each slot handled (``ok``, ``failed`` or ``skipped``) is

- a :class:`~resofleet.contracts.ScheduleRun` event (kind ``schedule``) on the events
  exchange, which the gateway forwards to every client watching the server;
- an audit record (``who`` = ``schedule:<name>``, ``command`` = ``schedule <action>``,
  ``outcome`` as the event's, extras ``schedule``, ``slot``, ``detail``);
- one count of ``resofleet_schedule_runs{server,schedule,outcome}``.

How an action runs: through the server's own request handler
(:meth:`~resofleet.agent.server.ManagedServer.handle`), as a client's request would, so
it gets the same checks, the same wait for a starting console, the same deadlines:
``restart`` is a container ``restart`` action (skipped when the headless is not running:
an operator's stop stands), ``save`` is ``save`` in every world the console lists, and
``command`` is the configured line.

"Is the server empty" is read from the last worlds poll while users are known to be in;
when that poll says empty, a fresh worlds query confirms it before anything runs, so an
action never rests on a stale poll. While waiting, the runner looks again every
``check_interval`` seconds (:data:`CHECK_INTERVAL`); a user who leaves is thus noticed
within that plus the worlds poll interval.

State: with a ``state_dir``, each server's :class:`~resofleet.agent.schedules.RunState`
is ``<state_dir>/schedules/<server>.json``, written atomically (a temporary file, fsync,
rename) in a thread, before the action starts: a slot whose action was interrupted by the
agent stopping is not run again (at most once, never twice). Without a ``state_dir`` the
state lives in memory: the agent still never runs a slot twice while it runs, but after a
restart it forgets a slot that was waiting for the server to empty (it is not resumed)
and, should the clock have gone back meanwhile, a slot could run a second time. A state
file that cannot be read is moved aside (``.bad``) with an error in the log, and the
server's schedules start afresh; one that cannot be written is logged and the run goes on
(the state is still kept in memory).

The clock is injected (:class:`Clock`): :class:`SystemClock` in production, a clock the
test holds in tests. :class:`SystemClock` never sleeps longer than :data:`MAX_SLEEP`, so a
wall clock that jumps (NTP, a suspended host) is noticed within that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol

from resofleet.bus import Bus, BusError
from resofleet.contracts import (
    BusEvent,
    BusRequest,
    CommandResponse,
    ContainerRequest,
    ContainerResponse,
    Error,
    RunCommand,
    ScheduleRun,
    WorldsRequest,
    WorldsUpdate,
    deadline_for,
)

from .schedules import RunState, Schedule, Timetable, people_in, slot_text

if TYPE_CHECKING:
    from resofleet.contracts import AuditSink, BusReply, ReplyBody, RequestBody

    from .metrics import AgentMetrics
    from .server import ManagedServer

__all__ = ["CHECK_INTERVAL", "Clock", "MAX_SLEEP", "Scheduler", "SystemClock", "state_path"]

log = logging.getLogger(__name__)

Outcome = Literal["ok", "failed", "skipped"]

#: Seconds between looks at a slot waiting for its server to empty: reading the last poll
#: is free; users leave over minutes, so a few seconds late is on time.
CHECK_INTERVAL: Final = 5.0
#: Longest single sleep of :class:`SystemClock`, in seconds: a wall clock that jumps is
#: noticed within this.
MAX_SLEEP: Final = 30.0
#: Seconds a fresh worlds query may take when confirming that a server is empty: the
#: gateway's own bound for ``get_worlds``.
QUERY_TIMEOUT: Final = 15.0
#: Seconds a console command may wait for the console to be free before its own deadline
#: starts: a client's long ``save`` may be running.
CONSOLE_WAIT: Final = 30.0
#: Seconds a ``restart`` action may take: the gateway's bound for a container action.
RESTART_TIMEOUT: Final = 120.0
#: Characters of a command's answer kept in the event's ``detail``.
DETAIL_LIMIT: Final = 200
#: Runtime states in which a ``restart`` action runs; in any other the headless is stopped
#: (by an operator, or given up after crashing) and the slot is skipped.
RESTARTABLE: Final = frozenset({"running", "restarting"})


class Clock(Protocol):
    """Wall time for the scheduler: ``now()`` in Unix seconds; ``sleep`` may return early
    (the scheduler looks at the time again after every sleep)."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The host's wall clock (see :data:`MAX_SLEEP`)."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(min(max(seconds, 0.0), MAX_SLEEP))


def state_path(state_dir: str | os.PathLike[str], server: str) -> Path:
    """Where ``server``'s schedule state is kept under ``state_dir``."""
    return Path(state_dir) / "schedules" / f"{server}.json"


class Scheduler:
    """See the module docstring. ``schedules`` are compiled already; each runs on the
    servers it matches among ``servers``."""

    def __init__(
        self,
        schedules: Sequence[Schedule],
        servers: Mapping[str, ManagedServer],
        *,
        bus: Bus,
        metrics: AgentMetrics,
        audit: AuditSink | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        check_interval: float = CHECK_INTERVAL,
    ) -> None:
        self.bus = bus
        self.metrics = metrics
        self.audit = audit
        self.state_dir = state_dir
        self.clock: Clock = clock or SystemClock()
        self.check_interval = check_interval
        #: server id -> the schedules that run on it, in the order of the configuration
        self.plan: dict[str, list[Schedule]] = {}
        for server in servers:
            matching = [s for s in schedules if s.serves(server)]
            if matching:
                self.plan[server] = matching
        self.servers = servers
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for server, schedules in self.plan.items():
            names = ", ".join(s.name for s in schedules)
            log.info("server=%s: schedules %s", server, names)
            self._tasks.append(
                asyncio.create_task(self._run(self.servers[server], schedules), name=f"schedules:{server}")
            )

    async def close(self) -> None:
        """Stop every server's task (an action under way is cancelled, its slot spent)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- one server ------------------------------------------------------------------

    async def _run(self, server: ManagedServer, schedules: list[Schedule]) -> None:
        state = await self._load(server.id)
        table = Timetable(schedules, state, self.clock.now(), check_interval=self.check_interval)
        for schedule, slot in table.expired:
            log.warning(
                "server=%s: schedule %s: the slot of %s waited for the server to empty, and its "
                "max_wait ended while the agent was not running; it is not run",
                server.id, schedule.name, slot_text(slot),
            )
        while True:
            try:
                await self._round(server, table)
            except Exception:  # one bad round must not end the server's schedules
                log.exception("server=%s: schedules: a round failed", server.id)
                await self.clock.sleep(self.check_interval)
                continue
            now = self.clock.now()
            await self.clock.sleep(table.wake_at(now) - now)

    async def _round(self, server: ManagedServer, table: Timetable) -> None:
        for schedule in table.due(self.clock.now()):
            people = await self._people(server) if table.needs_people(schedule) else None
            step = table.decide(schedule, self.clock.now(), people)
            if step.changed:
                await self._save(server.id, table.state)
            verdict = step.verdict
            if verdict is None:
                log.info("server=%s: schedule %s: slot %s %s", server.id, schedule.name,
                         slot_text(step.slot), step.note)
                continue
            if verdict.kind == "wait":
                if step.changed:
                    log.info("server=%s: schedule %s: slot %s waits for the server to empty "
                             "(%s in; at most until %s)", server.id, schedule.name,
                             slot_text(step.slot), "unknown" if people is None else people,
                             slot_text(step.slot + schedule.max_wait))
                continue
            started = asyncio.get_running_loop().time()
            outcome: Outcome
            if verdict.kind == "skip":
                outcome, detail = "skipped", verdict.reason
            else:
                try:
                    outcome, detail = await self._act(server, schedule)
                except Exception:  # the handler answers its own failures; this is a bug
                    log.exception("server=%s: schedule %s failed", server.id, schedule.name)
                    outcome, detail = "failed", "internal error (see the agent's log)"
                if verdict.reason:
                    detail = f"{verdict.reason}; {detail}" if detail else verdict.reason
            duration = asyncio.get_running_loop().time() - started
            table.finished(schedule, self.clock.now())
            await self._report(server.id, schedule, step.slot, outcome, detail, duration)

    async def _people(self, server: ManagedServer) -> int | None:
        """Users besides the host in ``server``'s worlds: the last poll while it counts some,
        else a fresh query (``None`` when the console does not answer)."""
        if server.runtime.status != "running":
            return None
        cached = people_in(server.worlds)
        if cached:
            return cached
        reply = await self._request(server, WorldsRequest(), QUERY_TIMEOUT)
        return people_in(reply.output) if isinstance(reply, WorldsUpdate) else None

    async def _act(self, server: ManagedServer, schedule: Schedule) -> tuple[Outcome, str]:
        if schedule.action == "restart":
            status = server.runtime.status
            if status not in RESTARTABLE:
                return "skipped", f"the headless is not running ({status})"
            reply = await self._request(server, ContainerRequest(action="restart"), RESTART_TIMEOUT)
            if isinstance(reply, ContainerResponse):
                return "ok", f"restarted ({reply.status})"
            return "failed", _failure(reply)
        if schedule.action == "save":
            listed = await self._request(server, WorldsRequest(), QUERY_TIMEOUT)
            if not isinstance(listed, WorldsUpdate):
                return "failed", _failure(listed)
            failures = []
            for world in listed.output:
                reply = await self._command(server, "save", world.index)
                if not isinstance(reply, CommandResponse):
                    failures.append(f"{world.name}: {_failure(reply)}")
            saved = len(listed.output) - len(failures)
            if failures:
                return "failed", f"saved {saved} of {len(listed.output)} worlds; " + "; ".join(failures)
            return "ok", f"saved {saved} world{'' if saved == 1 else 's'}"
        reply = await self._command(server, schedule.command, None)
        if isinstance(reply, CommandResponse):
            return "ok", _clip(reply.output)
        return "failed", _failure(reply)

    async def _command(self, server: ManagedServer, command: str, world: int | None) -> ReplyBody:
        timeout = deadline_for(command) + CONSOLE_WAIT
        return await self._request(server, RunCommand(command=command, world=world), timeout)

    async def _request(self, server: ManagedServer, body: RequestBody, timeout: float) -> ReplyBody:
        """``body`` answered by the server's own handler, as a client's request would be;
        the reply's body (an :class:`~resofleet.contracts.Error` on failure)."""
        request = BusRequest(server=server.id, body=body, timeout=timeout, sub="schedule", role="operator")
        reply: BusReply = await server.handle(request, asyncio.get_running_loop().time() + timeout)
        return reply.body

    # -- reporting -------------------------------------------------------------------

    async def _report(
        self, server: str, schedule: Schedule, slot: float, outcome: Outcome, detail: str, duration: float
    ) -> None:
        level = logging.WARNING if outcome == "failed" else logging.INFO
        log.log(level, "server=%s: schedule %s (%s) slot %s: %s%s", server, schedule.name,
                schedule.action, slot_text(slot), outcome, f" ({detail})" if detail else "")
        self.metrics.schedule_runs.labels(server, schedule.name, outcome).inc()
        if self.audit is not None:
            self.audit.record(
                who=f"schedule:{schedule.name}",
                role="schedule",
                client="agent",
                server=server,
                command=f"schedule {schedule.action}" + (f" {schedule.command}" if schedule.action == "command" else ""),
                outcome=outcome,
                duration=duration,
                schedule=schedule.name,
                slot=slot_text(slot),
                detail=detail,
            )
        event = ScheduleRun(
            server=server, schedule=schedule.name, action=schedule.action, slot=slot,
            outcome=outcome, detail=detail,
        )
        try:
            await self.bus.publish(BusEvent(server=server, kind="schedule", body=event))
        except BusError as exc:
            log.warning("server=%s: schedule_run event not published: %s", server, exc)

    # -- the state file --------------------------------------------------------------

    async def _load(self, server: str) -> RunState:
        if self.state_dir is None:
            return RunState()
        path = state_path(self.state_dir, server)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return RunState()
        except OSError as exc:
            log.error("server=%s: cannot read the schedule state %s (%s); starting afresh", server, path, exc)
            return RunState()
        try:
            return RunState.load(data)
        except ValueError as exc:
            bad = path.with_suffix(".json.bad")
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.replace, path, bad)
            log.error("server=%s: %s: %s; moved to %s, starting afresh", server, path, exc, bad)
            return RunState()

    async def _save(self, server: str, state: RunState) -> None:
        if self.state_dir is None:
            return
        path = state_path(self.state_dir, server)
        try:
            await asyncio.to_thread(_write_atomically, path, state.dump())
        except OSError as exc:
            log.error("server=%s: cannot write the schedule state %s (%s); it is kept in memory "
                      "only, so an agent restart forgets it", server, path, exc)


def _write_atomically(path: Path, data: bytes) -> None:
    """``data`` at ``path``, all or nothing: a temporary file beside it, fsynced, renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    with contextlib.suppress(OSError):  # make the rename itself durable where possible
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _failure(reply: ReplyBody) -> str:
    if isinstance(reply, Error):
        return f"{reply.code}: {reply.message}"
    return f"unexpected reply {type(reply).__name__}"


def _clip(text: str) -> str:
    text = " / ".join(line.strip() for line in text.splitlines() if line.strip())
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"
