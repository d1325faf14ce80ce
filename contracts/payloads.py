"""The payload structs inside server messages: a ban, a user, a world, a status, an output
line, a server in the fleet list. Untagged; every field is written even at its default, as
the seed wrote them, so a client can rely on the keys being there."""

from __future__ import annotations

from msgspec import Struct, field

__all__ = ["Ban", "OutputLine", "ServerInfo", "Status", "User", "World"]


class _Plain(Struct, omit_defaults=False, forbid_unknown_fields=False):
    pass


class Ban(_Plain):
    username: str
    userId: str
    machineIds: list[str] = field(default_factory=list)


class User(_Plain, gc=False):
    """One user of a world, as the console's ``users`` prints it.

    ``gc=False``: only scalars, so it can never be part of a reference cycle, and a poll
    builds thousands of them; keeping them out of the cycle collector's tracking makes
    building them cheaper and the collector's passes shorter.
    """

    username: str
    userId: str
    present: bool
    ping: int
    fps: float
    silenced: bool
    role: str = ""


class World(_Plain):
    """One running world. ``users`` and ``present`` are the console's own counts (they
    include the headless's own account); ``users_list`` lists that account first."""

    name: str
    sessionId: str
    users: int
    present: int
    maxUsers: int
    uptime: str
    accessLevel: str
    hidden: bool
    mobileFriendly: bool
    description: str
    tags: str
    users_list: list[User]
    index: int = 0
    uptime_raw: str = ""


class Status(_Plain):
    """A container's or process's own resource usage and state.

    ``cpu_usage`` and ``memory_percent`` are numbers (percent, one decimal);
    ``memory_used`` / ``memory_total`` are human strings like ``"4.2GB"``;
    ``*_bytes`` are the same as integers."""

    status: str
    name: str
    id: str
    cpu_usage: float
    memory_percent: float
    memory_used: str
    memory_total: str
    uptime: str = ""
    restarts: int = 0
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0
    #: The last exit code of the headless (``None`` while it never exited or it is unknown).
    exit_code: int | None = None
    #: The console health check: ``"healthy"``, ``"unhealthy"`` (it missed several polls
    #: in a row), or ``""`` where no check ran yet.
    health: str = ""


class OutputLine(_Plain):
    seq: int
    output: str


class ServerInfo(_Plain):
    server: str
    host: str
    status: str
    worlds: int = 0
    users: int = 0
    last_seen: float = 0.0
    runtime: str = ""
    agent: str = ""
    online: bool = True
