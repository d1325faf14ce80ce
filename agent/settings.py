"""What an agent is told: how it names itself, how often it polls, and its servers.

:class:`AgentSettings` is the ``[agent]`` table of the configuration and
:class:`ServerConfig` one ``[[servers]]`` entry, field for field: frozen msgspec structs
whose fields carry their constraints (``Annotated[..., msgspec.Meta(...)]``), so a
configuration decodes straight into them with ``msgspec.convert`` and a bad value is refused
with its key path. Unknown keys are refused too (``forbid_unknown_fields``): a misspelt key
is an error, never a silently ignored setting. A constraint's ``description`` is how an
error message names what the value must be.

msgspec checks constraints when it decodes, not when code calls the constructor: tests and
embedders that build these structs directly are trusted. What one field cannot say alone
(``container`` is required for the docker runtime, ``command`` for the process runtime,
ids are unique within a file) is checked where the configuration is read.
"""

from __future__ import annotations

import socket
from typing import Annotated, Final, Literal

import msgspec

from resofleet.contracts import SERVER_ID_PATTERN

from .runtime.policy import (
    BACKOFF_MAX,
    BACKOFF_START,
    CRASH_LOOP_LIMIT,
    CRASH_LOOP_WINDOW,
    STABLE_RUN,
    RestartMode,
    RestartPolicy,
    default_mode,
)

__all__ = [
    "DEFAULT_BANS_INTERVAL",
    "DEFAULT_HEALTH_INTERVAL",
    "DEFAULT_HEALTH_MISSES",
    "DEFAULT_HEALTH_TIMEOUT",
    "DEFAULT_STATUS_INTERVAL",
    "DEFAULT_WORLDS_INTERVAL",
    "AgentSettings",
    "Runtime",
    "ServerConfig",
]

#: Seconds between status polls: CPU and memory move quickly, a sample is cheap.
DEFAULT_STATUS_INTERVAL: Final = 5.0
#: Seconds between worlds+users polls: each costs a few console commands.
DEFAULT_WORLDS_INTERVAL: Final = 15.0
#: Seconds between listbans polls: bans change rarely.
DEFAULT_BANS_INTERVAL: Final = 60.0

#: Seconds between console health probes: a dead console is noticed within about
#: ``health_misses`` times this, and a probe (one cheap command) every 10 s costs nothing.
DEFAULT_HEALTH_INTERVAL: Final = 10.0
#: Seconds a health probe waits for its answer (and for the console to be free): the
#: deadline of an ordinary console command.
DEFAULT_HEALTH_TIMEOUT: Final = 10.0
#: Missed probes in a row that make a console ``unhealthy``: one can be a hiccup (a long
#: garbage collection, a save), three in a row (about a minute) is a console that hangs.
DEFAULT_HEALTH_MISSES: Final = 3

#: What runs a headless: a Docker container, a child process, or the emulator as a child.
Runtime = Literal["docker", "process", "emulator"]

_Seconds = Annotated[float, msgspec.Meta(gt=0)]
_Count = Annotated[int, msgspec.Meta(ge=1)]
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_ServerId = Annotated[
    str,
    msgspec.Meta(pattern=f"^{SERVER_ID_PATTERN}$", description=f"an id matching {SERVER_ID_PATTERN}"),
]
_HealthAddress = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):[0-9]{1,5}$",
        description="HOST:PORT, such as 127.0.0.1:8001",
    ),
]
_AuditPath = Annotated[
    str, msgspec.Meta(min_length=1, description="a path, or false for no audit log")
]

_StateDir = Annotated[
    str, msgspec.Meta(min_length=1, description="a directory, or false to keep no state")
]


class AgentSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[agent]``: how one agent names itself, how often it polls, where it audits."""

    #: How this agent names itself in presence (its id adds a random suffix).
    name: _NonEmpty = msgspec.field(default_factory=socket.gethostname)
    status_interval: _Seconds = DEFAULT_STATUS_INTERVAL
    worlds_interval: _Seconds = DEFAULT_WORLDS_INTERVAL
    bans_interval: _Seconds = DEFAULT_BANS_INTERVAL
    #: Path of the agent's audit log; ``None``: none is written (the library default, so
    #: tests and embedders choose; the command line writes one unless told not to).
    audit_log: _AuditPath | None = None
    #: Where the health endpoint (``/healthz``, ``/readyz``; :mod:`resofleet.agent.health`)
    #: listens, ``HOST:PORT``; ``None``: it is off (nothing listens unless asked).
    health: _HealthAddress | None = None
    #: Where ``/metrics`` (:mod:`resofleet.agent.metrics`) is served, ``HOST:PORT`` (the
    #: health endpoint's address serves both); ``None``: off (``resofleet up`` serves the
    #: agent's metrics on the gateway's port anyway).
    metrics: _HealthAddress | None = None
    #: The console health check (:mod:`resofleet.agent.consolehealth`): seconds between
    #: probes, seconds each may take, and missed probes in a row that make ``unhealthy``.
    health_interval: _Seconds = DEFAULT_HEALTH_INTERVAL
    health_timeout: _Seconds = DEFAULT_HEALTH_TIMEOUT
    health_misses: _Count = DEFAULT_HEALTH_MISSES
    #: Directory where the agent keeps what must outlive it: the last slot each schedule
    #: ran per server (:mod:`resofleet.agent.scheduler`). ``None``: nothing is kept (the
    #: library default; the command line uses ``$XDG_STATE_HOME/resofleet/agent`` unless
    #: told ``state_dir = false``).
    state_dir: _StateDir | None = None


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``[[servers]]`` entry: a headless server this agent drives."""

    id: _ServerId
    runtime: Runtime = "docker"
    #: The container's name or id (docker runtime).
    container: str = ""
    #: The command line to run (process runtime).
    command: tuple[str, ...] = ()
    #: Working directory of the process (process runtime; ``None``: the agent's).
    workdir: str | None = None
    #: A scenario file, or a built-in scenario name (emulator runtime).
    scenario: str | None = None
    #: More command-line arguments for the emulator.
    emulator_args: tuple[str, ...] = ()
    #: Environment variables of the process (process and emulator runtimes).
    env: dict[str, str] = {}
    #: Crash recovery (:mod:`resofleet.agent.runtime.policy`): ``always``, ``on-failure``
    #: or ``never``; ``None``: ``always`` for process/emulator, ``on-failure`` for docker.
    restart: RestartMode | None = None
    #: First restart delay (s), doubling per quick death up to ``restart_backoff_max``.
    restart_backoff: _Seconds = BACKOFF_START
    restart_backoff_max: _Seconds = BACKOFF_MAX
    #: A run this long (s) starts the backoff over.
    restart_stable_run: _Seconds = STABLE_RUN
    #: This many deaths within ``crash_loop_window`` seconds: ``crashloop``, no more restarts.
    crash_loop_limit: _Count = CRASH_LOOP_LIMIT
    crash_loop_window: _Seconds = CRASH_LOOP_WINDOW
    #: Restart the headless when its console becomes ``unhealthy`` (off: only reported).
    health_restart: bool = False

    def restart_policy(self) -> RestartPolicy:
        """This server's :class:`~resofleet.agent.runtime.policy.RestartPolicy`."""
        return RestartPolicy(
            mode=self.restart or default_mode(self.runtime),
            backoff_start=self.restart_backoff,
            backoff_max=max(self.restart_backoff, self.restart_backoff_max),
            stable_run=self.restart_stable_run,
            loop_limit=self.crash_loop_limit,
            loop_window=self.crash_loop_window,
        )
