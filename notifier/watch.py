"""Events in, notices out: the notifier's sans-I/O core.

:class:`Watcher` keeps, per server, what the events so far said (up or down, crash loop,
health, the users of each world, above or below the user threshold) and turns each new
event into the notices it implies. It does no I/O and takes the time and the id maker as
arguments, so it is tested without a bus. :meth:`Watcher.feed` returns a :class:`Step`
whose state is kept only on :meth:`Step.commit`: the notifier commits once the notices are
safely queued, so an event it must take again (the link dropped) is judged again from the
same state.

The rules:

- ``server_state`` events are edges and always count. ``exited``, ``crashed``,
  ``stopped`` and ``lost`` (the notifier's own: the agent's announcements lapsed) are
  *down*; ``crashloop`` is down and a ``crash_loop`` notice; ``ready`` is *up*, and so is
  ``announced`` (the notifier's own: a lapsed agent announces again) for a server known to
  be down. ``server_down`` / ``server_up`` are sent on a change only, so the agent's
  ``exited`` and the lapse of its announcements make one notice between them.
  ``unhealthy`` is sent once until ``healthy``.
- ``status_update`` is a snapshot: its ``health`` and ``status`` (``crashloop``) give the
  same notices as the state events, once per change, and the first one seen for a server
  is a *baseline* (it sets the state, sends nothing).
- ``worlds_update`` is a snapshot too. Users are compared per world (by session id) with
  the previous snapshot: ``user_joined`` / ``user_left`` per user; a world that opens
  sends joins for its users (usually none but the host), a world that closes sends no
  leaves (one "world closed" is not twenty "left"). The headless's own account (listed
  first) is never counted. The total count against ``users_threshold`` sends
  ``users_above`` when it reaches the threshold and ``users_below`` when it falls under
  threshold minus hysteresis.
- ``schedule_run`` with outcome ``failed`` sends ``schedule_failed`` (once per schedule
  and slot).

**Ids.** A notice's id is derived from the watcher's epoch (random per process), the
server, how many of its events were committed before, and the notice's place in its
step: an event judged again because its notices could not all be queued (the link
dropped) makes notices with the same ids, which the senders recognise
(:mod:`resofleet.notifier.delivery`), so the retry sends nothing twice.

**The baseline across a restart.** A notifier keeps this state in memory only. After it
starts (or another notifier takes over the queue), the first ``worlds_update`` and
``status_update`` of each server are baselines: nobody is announced as joining for being
there already, and a threshold already crossed is not announced again. The price: a user
who joined or left between the last snapshot the previous notifier handled and the first
one this one sees is not announced. Snapshots published while no notifier ran are kept in
the queue, so only that one step is lost, never a whole outage; edges (down, up, crash
loop, unhealthy, schedule failures) are never lost this way. The alternative, announcing
the first snapshot's users as having joined, would flood every channel at each restart.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from resofleet.contracts import BusEvent, ScheduleRun, ServerState, StatusUpdate, World, WorldsUpdate

from .formats import plain
from .notices import Notice, Value
from .settings import USERS_HYSTERESIS, EventType

__all__ = ["DOWN_STATES", "Step", "Watcher"]

#: Server states that mean the headless is not running.
DOWN_STATES: Final = frozenset({"exited", "crashed", "stopped", "lost", "crashloop"})
#: Failed schedule runs remembered per server, to announce each once (a run is told
#: once; this only catches one told again, as after a redelivery).
FAILED_RUNS_KEPT: Final = 32
#: The notifier's own states (published by it into its queue, never by agents).
LOST, ANNOUNCED = "lost", "announced"


@dataclass
class _World:
    name: str
    users: dict[str, str]  # userId -> username


@dataclass
class _View:
    """What the notifier knows of one server."""

    up: bool | None = None
    crashloop: bool = False
    unhealthy: bool = False
    status_seen: bool = False
    worlds: dict[str, _World] | None = None  # None: no baseline yet
    above: bool | None = None
    #: Events of this server committed so far: with the watcher's epoch, it makes the
    #: notices' ids (an event judged again after a failure gets the same ids).
    seq: int = 0
    #: (schedule, slot) of the failed runs announced lately: a run told twice is one.
    failed_runs: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Step:
    """The notices one event implies; :meth:`commit` keeps the state that goes with them."""

    notices: list[Notice]
    _watcher: Watcher
    _server: str
    _view: _View | None

    def commit(self) -> None:
        if self._view is not None:
            self._watcher._views[self._server] = self._view


@dataclass
class Watcher:
    """Per-server state and the rules of the module docstring."""

    users_threshold: int | None = None
    users_hysteresis: int = USERS_HYSTERESIS
    #: Different for every watcher (every notifier process), so that ids never repeat
    #: across processes; within one, the same event judged twice makes the same ids.
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex)
    _views: dict[str, _View] = field(default_factory=dict)

    def feed(self, event: BusEvent, *, now: float) -> Step:
        server = event.server
        body = event.body
        old = self._views.get(server)
        view = copy.deepcopy(old) if old is not None else _View()
        view.seq += 1
        out: list[Notice] = []

        def notice(kind: EventType, text: str, **data: Value) -> None:
            key = f"{self.epoch}/{server}/{view.seq}/{len(out)}"
            notice_id = uuid.uuid5(uuid.NAMESPACE_URL, key).hex
            out.append(Notice(id=notice_id, event=kind, server=server, time=now, text=text, data=data))

        if isinstance(body, ServerState):
            self._state(view, body.state, body.detail, server, notice)
        elif isinstance(body, StatusUpdate):
            self._status(view, body, server, notice)
        elif isinstance(body, WorldsUpdate):
            self._worlds(view, body.output, server, notice)
        elif isinstance(body, ScheduleRun):
            run = (body.schedule, body.slot)
            if body.outcome == "failed" and run not in view.failed_runs:
                view.failed_runs = [*view.failed_runs[-FAILED_RUNS_KEPT + 1:], run]
                detail = f": {body.detail}" if body.detail else ""
                notice(
                    "schedule_failed",
                    f"Schedule {plain(body.schedule)} ({body.action}) failed on {server}{detail}",
                    schedule=body.schedule, action=body.action, slot=body.slot,
                    detail=body.detail,
                )
        else:
            return Step([], self, server, None)
        return Step(out, self, server, view)

    # -- rules -----------------------------------------------------------------------

    def _state(self, view: _View, state: str, detail: str, server: str, notice: _Notify) -> None:
        why = f" ({detail})" if detail else ""
        if state in DOWN_STATES:
            if state == "crashloop" and not view.crashloop:
                view.crashloop = True
                notice("crash_loop", f"Server {server} is in a crash loop and was left stopped{why}",
                       state=state, detail=detail)
            elif view.up is not False and state != "crashloop":
                notice("server_down", f"Server {server} is down: {state}{why}", state=state, detail=detail)
            view.up = False
        elif state == "ready" or (state == ANNOUNCED and view.up is False):
            if view.up is not True:
                notice("server_up", f"Server {server} is up", state=state, detail=detail)
            view.up = True
            view.crashloop = False
            view.unhealthy = False  # a new console: its health check starts afresh
        elif state == "unhealthy":
            self._health(view, "unhealthy", server, detail, notice)
        elif state == "healthy":
            view.unhealthy = False

    def _health(self, view: _View, health: str, server: str, detail: str, notice: _Notify) -> None:
        if health == "unhealthy" and not view.unhealthy:
            view.unhealthy = True
            why = f" ({detail})" if detail else ""
            notice("unhealthy", f"Server {server} is unhealthy: its console stopped answering{why}",
                   state="unhealthy", detail=detail)
        elif health == "healthy":
            view.unhealthy = False

    def _status(self, view: _View, update: StatusUpdate, server: str, notice: _Notify) -> None:
        status = update.status
        if not view.status_seen:  # a baseline: the state, no notices
            view.status_seen = True
            view.unhealthy = view.unhealthy or status.health == "unhealthy"
            view.crashloop = view.crashloop or status.status == "crashloop"
            return
        self._health(view, status.health, server, "", notice)
        if status.status == "crashloop" and not view.crashloop:
            self._state(view, "crashloop", "", server, notice)

    def _worlds(self, view: _View, worlds: list[World], server: str, notice: _Notify) -> None:
        now_worlds = {
            (w.sessionId or w.name): _World(w.name, {u.userId: u.username for u in w.users_list[1:]})
            for w in worlds
        }
        before = view.worlds
        view.worlds = now_worlds
        count = sum(len(w.users) for w in now_worlds.values())
        if before is not None:
            for key, world in now_worlds.items():
                old = before.get(key)
                had = old.users if old is not None else {}
                for user_id, name in world.users.items():
                    if user_id not in had:
                        notice("user_joined", f"{plain(name)} joined {plain(world.name)} on {server}",
                               world=world.name, session=key, user=name, user_id=user_id, users=count)
                if old is None:
                    continue
                for user_id, name in had.items():
                    if user_id not in world.users:
                        notice("user_left", f"{plain(name)} left {plain(world.name)} on {server}",
                               world=world.name, session=key, user=name, user_id=user_id, users=count)
        threshold = self.users_threshold
        if threshold is None:
            return
        if view.above is None:  # a baseline
            view.above = count >= threshold
        elif not view.above and count >= threshold:
            view.above = True
            notice("users_above", f"{server} has {count} users (threshold {threshold})",
                   users=count, threshold=threshold)
        elif view.above and count < threshold - self.users_hysteresis:
            view.above = False
            notice("users_below", f"{server} is down to {count} users (threshold {threshold})",
                   users=count, threshold=threshold)


_Notify = Callable[..., None]
