"""Events as agents publish them, for the notifier's tests: worlds snapshots with users,
server states, status samples and schedule runs."""

from __future__ import annotations

from collections.abc import Iterable

from resofleet.contracts import (
    BusEvent, ScheduleRun, ServerState, Status, StatusUpdate, User, World, WorldsUpdate,
)

#: The headless's own account, listed first in every world (never counted as a user).
HOST = User(username="Headless", userId="U-host", present=False, ping=0, fps=60.0, silenced=False)


def user(name: str) -> User:
    return User(username=name, userId=f"U-{name}", present=True, ping=20, fps=60.0, silenced=False)


def world(name: str, users: Iterable[str], *, session: str | None = None) -> World:
    listed = [HOST, *(user(u) for u in users)]
    return World(
        name=name, sessionId=session or f"S-{name}", users=len(listed), present=len(listed) - 1,
        maxUsers=16, uptime="1 hour", accessLevel="Anyone", hidden=False, mobileFriendly=False,
        description="", tags="", users_list=listed,
    )


def worlds(server: str, *entries: World) -> BusEvent:
    return BusEvent(server=server, kind="worlds", body=WorldsUpdate(output=list(entries), server=server))


def state(server: str, value: str, detail: str = "") -> BusEvent:
    return BusEvent(server=server, kind="state", body=ServerState(server=server, state=value, detail=detail))


def status(server: str, *, health: str = "healthy", value: str = "running") -> BusEvent:
    body = Status(
        status=value, name=server, id="c1", cpu_usage=1.0, memory_percent=2.0,
        memory_used="1GB", memory_total="8GB", health=health,
    )
    return BusEvent(server=server, kind="status", body=StatusUpdate(status=body, server=server))


def schedule(server: str, outcome: str, *, name: str = "nightly", detail: str = "") -> BusEvent:
    body = ScheduleRun(server=server, schedule=name, action="restart", slot=1.0e9, outcome=outcome, detail=detail)
    return BusEvent(server=server, kind="schedule", body=body)
