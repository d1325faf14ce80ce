"""The agent's Prometheus metrics: per server, from its last poll; never from a scrape.

One :class:`AgentMetrics` per agent, with its own
:class:`~prometheus_client.CollectorRegistry` (never the process-wide default: several
agents and gateways share a test process). The agent creates it and gives each
:class:`~resofleet.agent.server.ManagedServer` its :class:`ServerMetrics`, whose labelled
children are resolved once, when the server is made: counting is an increment, with no
string formatting and no lock but prometheus-client's own.

A scrape never touches a console: the gauges (up, CPU, memory, worlds, users, restarts) and
the output counters are read from what the server holds already, its last status sample
and worlds poll and its output log, when the registry is collected. ``/metrics`` is served
by the agent's small HTTP endpoint (:mod:`resofleet.agent.health`) on ``[agent] metrics``
(off by default), and in ``resofleet up`` by the gateway's port.

Labels are bounded: ``server`` (the configured ids), ``class`` (the role a command needs,
:class:`~resofleet.contracts.Role`: viewer, moderator, operator, admin), ``poll``
(status, worlds, bans), ``schedule`` (the configured schedules' names) and ``outcome``
(ok, failed, skipped). Never a user name, a world name or a command's text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from resofleet.contracts import Role, required_role

if TYPE_CHECKING:
    from .server import ManagedServer

__all__ = [
    "AgentMetrics",
    "COMMAND_BUCKETS",
    "POLLS",
    "POLL_BUCKETS",
    "ServerMetrics",
    "command_class",
    "exposition",
]

#: The ``poll`` label: the agent's three pollers.
POLLS: Final = ("status", "worlds", "bans")
#: Console command latency buckets, in seconds: the emulator answers in a tenth of a
#: millisecond, a real headless in milliseconds, ``save``/``restart`` in seconds, up to
#: ``startWorldURL``'s 120 s deadline.
COMMAND_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0,
)
#: Poll duration buckets, in seconds: a status sample is a millisecond, a worlds poll is
#: three console commands per world (50 worlds: tens of milliseconds to seconds).
POLL_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CLASSES: Final = tuple(role.label for role in Role)


def command_class(command: str) -> str:
    """The ``class`` label of a console command: the role it needs (bounded: four values)."""
    return required_role(command).label


class ServerMetrics:
    """One server's counters, children resolved once (see the module docstring)."""

    def __init__(self, metrics: AgentMetrics, server: str) -> None:
        self._commands = {c: metrics.command_seconds.labels(server, c) for c in _CLASSES}
        self.timeouts = metrics.timeouts.labels(server)
        self.resyncs = metrics.resyncs.labels(server)
        self.health_misses = metrics.health_misses.labels(server)
        self.polls = {poll: metrics.poll_seconds.labels(server, poll) for poll in POLLS}

    def command(self, command: str, seconds: float) -> None:
        """A client's console command answered after ``seconds``."""
        self._commands[command_class(command)].observe(seconds)


class _Servers(Collector):
    """The per-server gauges and output counters, read from the servers when scraped."""

    def __init__(self, servers: Callable[[], Mapping[str, ManagedServer]]) -> None:
        self._servers = servers

    def collect(self) -> Iterable[Metric]:
        labels = ["server"]
        up = GaugeMetricFamily("resofleet_server_up", "1 when the server's headless runs and its "
                               "console has answered since it started, else 0.", labels=labels)
        cpu = GaugeMetricFamily("resofleet_server_cpu_usage", "CPU of the headless at the last "
                                "status sample, percent (100 = one core).", labels=labels)
        memory = GaugeMetricFamily("resofleet_server_memory_bytes", "Memory used by the "
                                   "headless at the last status sample, bytes.", labels=labels)
        worlds = GaugeMetricFamily("resofleet_server_worlds", "Worlds running at the last worlds "
                                   "poll.", labels=labels)
        users = GaugeMetricFamily("resofleet_server_users", "Users in all worlds at the last "
                                  "worlds poll (the console's count).", labels=labels)
        present = GaugeMetricFamily("resofleet_server_present_users", "Users present in all "
                                    "worlds at the last worlds poll.", labels=labels)
        restarts = CounterMetricFamily("resofleet_server_restarts", "Times the headless was "
                                       "restarted (by the agent or its container engine).",
                                       labels=labels)
        lines = CounterMetricFamily("resofleet_output_lines", "Console output lines read since "
                                    "the agent started.", labels=labels)
        unhealthy = GaugeMetricFamily("resofleet_server_console_unhealthy", "1 while the console "
                                      "health check says unhealthy (it missed several probes "
                                      "in a row), else 0.", labels=labels)
        dropped = CounterMetricFamily("resofleet_output_dropped", "Output lines not published "
                                      "because the bus fell behind (still in get_output).",
                                      labels=labels)
        for server in self._servers().values():
            key = [server.id]
            status = server.last_status
            up.add_metric(key, 1.0 if server.presence().status == "running" else 0.0)
            cpu.add_metric(key, status.cpu_usage if status is not None else 0.0)
            memory.add_metric(key, status.memory_used_bytes if status is not None else 0)
            known = server.worlds
            worlds.add_metric(key, len(known))
            users.add_metric(key, sum(w.users for w in known))
            present.add_metric(key, sum(w.present for w in known))
            restarts.add_metric(
                key, max(server.runtime.restarts, status.restarts if status is not None else 0)
            )
            unhealthy.add_metric(key, 1.0 if server.health.unhealthy else 0.0)
            lines.add_metric(key, server.output_log.seq)
            dropped.add_metric(key, server.output_log.dropped)
        yield from (up, cpu, memory, worlds, users, present, restarts, unhealthy, lines, dropped)


class AgentMetrics:
    """Every metric of one agent, in its own registry (see the module docstring)."""

    def __init__(self, servers: Callable[[], Mapping[str, ManagedServer]]) -> None:
        # no auto_describe: describing would collect, and the servers are made after this
        self.registry = CollectorRegistry()
        registry = self.registry
        registry.register(_Servers(servers))
        self.command_seconds = Histogram(
            "resofleet_console_command_seconds", "Seconds a client's console command took, "
            "from the console's turn to its answer, by server and the role the command needs.",
            ["server", "class"], buckets=COMMAND_BUCKETS, registry=registry,
        )
        self.timeouts = Counter(
            "resofleet_console_timeouts", "Console commands that got no complete answer "
            "within their deadline.", ["server"], registry=registry,
        )
        self.resyncs = Counter(
            "resofleet_console_resyncs", "Times the console was synchronised again after a "
            "timeout or an unpredictable prompt.", ["server"], registry=registry,
        )
        self.health_misses = Counter(
            "resofleet_console_health_misses", "Console health probes that got no complete "
            "answer in time.", ["server"], registry=registry,
        )
        self.poll_seconds = Histogram(
            "resofleet_poll_seconds", "Seconds a poll took, by server and poll.",
            ["server", "poll"], buckets=POLL_BUCKETS, registry=registry,
        )

        self.schedule_runs = Counter(
            "resofleet_schedule_runs", "Slots of configured schedules handled, by server, "
            "schedule and outcome (ok, failed, skipped).",
            ["server", "schedule", "outcome"], registry=registry,
        )

    def server(self, server: str) -> ServerMetrics:
        return ServerMetrics(self, server)


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The body and ``Content-Type`` of a scrape: OpenMetrics when ``accept`` asks for it."""
    if accept and "application/openmetrics-text" in accept:
        return generate_openmetrics(registry), OPENMETRICS_TYPE
    return generate_latest(registry), CONTENT_TYPE_LATEST
