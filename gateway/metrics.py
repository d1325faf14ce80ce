"""The gateway's Prometheus metrics, and ``GET /metrics``.

One :class:`GatewayMetrics` per gateway, each with its own
:class:`~prometheus_client.CollectorRegistry` (never the process-wide default: several
gateways and agents share a test process, and ``resofleet up`` serves an agent's registry
beside the gateway's). The gateway creates it and hands it to what counts: the
:class:`~resofleet.gateway.guard.Guard` (refusals, revocations; sessions reach it there), the
:class:`~resofleet.gateway.fanout.Fanout` (events, cut-offs, bytes) and the gateway itself
(connections, readiness, bus reconnects).

Hot paths stay cheap: every labelled child is resolved once (at start, or at its first
use, from a fixed set), so counting is a dict lookup of a tuple and an increment, with no
string formatting and no lock but prometheus-client's own. Gauges that describe a state
(connections by authentication state, readiness) are read when scraped, from what the
gateway holds anyway.

Labels are bounded: request types are the client protocol's ``type`` values (anything
else is ``invalid``), outcomes are ``ok`` or an :class:`~resofleet.contracts.ErrorCode`,
reasons come from fixed sets (:data:`CUT_OFF_REASONS`, the guard's
:class:`~resofleet.gateway.guard.Outcome`). Never a user name, a world name, a server id
or any text a client chose.

Access. ``/metrics`` is served on the gateway's own port, by its HTTP routes. In open mode
(no secret, loopback only) anyone who can reach the port reads it. With a secret it needs
``Authorization: Bearer <admin token>``: Prometheus sends one from a file
(``authorization: {credentials_file: ...}``), so the gateway keeps one listening socket,
one TLS setup and one way of checking who asks, instead of a second address that would be
open to whoever reaches it (and on a host network, that is everyone). A scrape with no or a
refused token is 401, with a token below admin 403.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from resofleet.contracts import ClientMessage, Error, ErrorCode, ServerMessage

__all__ = [
    "Asked",
    "CUT_OFF_REASONS",
    "GatewayMetrics",
    "INVALID_TYPE",
    "LATENCY_BUCKETS",
    "OK",
    "REQUEST_TYPES",
    "exposition",
]

#: Request ``type`` values, as labels: the client protocol's, and :data:`INVALID_TYPE`.
REQUEST_TYPES: Final = frozenset(
    str(member.__struct_config__.tag) for member in typing.get_args(ClientMessage)
)
#: The ``type`` label of a frame whose type could not be read or is not the protocol's.
INVALID_TYPE: Final = "invalid"
#: The ``outcome`` label of a request answered without an error.
OK: Final = "ok"
_OUTCOMES: Final = frozenset({OK, *(code.value for code in ErrorCode)})
#: Why the gateway closed a client: fell behind (1013), past the fan-out's shared budget
#: (1013), token revoked (4403), no ``auth`` in time or token expired (4401).
CUT_OFF_REASONS: Final = ("slow", "budget", "revoked", "auth_timeout", "token_expired")
#: Request latency buckets, in seconds: a ``ping`` answers in well under a millisecond, a
#: console command in milliseconds, ``save``/``restart`` in seconds, ``startWorldURL`` up
#: to its 120 s deadline.
LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0,
)
#: What a request is for its metrics: its type label and when its frame was read
#: (:func:`time.perf_counter`); the answer sent with it counts the request.
Asked = tuple[str, float]
#: Refusal reasons, as the guard names them (its ``Outcome`` values).
_REFUSALS: Final = (
    "handshake_refused", "unauthenticated", "forbidden", "out_of_scope", "rate_limited",
    "rejected_input",
)


class _State(Collector):
    """Gauges read at scrape time from the gateway (see :meth:`GatewayMetrics.watch`)."""

    def __init__(self) -> None:
        self.connections: Callable[[], tuple[int, int]] = lambda: (0, 0)
        self.ready: Callable[[], bool] = lambda: False

    def collect(self) -> Iterable[Metric]:
        unauthenticated, authenticated = self.connections()
        connections = GaugeMetricFamily(
            "resofleet_gateway_connections",
            "WebSocket sessions open, by authentication state.",
            labels=["state"],
        )
        connections.add_metric(["unauthenticated"], unauthenticated)
        connections.add_metric(["authenticated"], authenticated)
        yield connections
        yield GaugeMetricFamily(
            "resofleet_gateway_ready",
            "1 when the gateway can answer requests (its /readyz is 200), else 0.",
            value=1.0 if self.ready() else 0.0,
        )


class GatewayMetrics:
    """Every metric of one gateway, in its own registry (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._state = _State()
        registry.register(self._state)
        self._requests = Counter(
            "resofleet_gateway_requests", "Client requests answered, by type and outcome "
            "(ok or the error code).", ["type", "outcome"], registry=registry,
        )
        self._latency = Histogram(
            "resofleet_gateway_request_seconds", "Seconds from a request's frame read to its "
            "answer written, by type.", ["type"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.events = Counter(
            "resofleet_gateway_events", "Bus events fanned out to clients (console lines "
            "batches, status, worlds, bans, states).", registry=registry,
        )
        cut_off = Counter(
            "resofleet_gateway_cut_off", "Clients the gateway closed, by reason.", ["reason"],
            registry=registry,
        )
        self.cut_off = {reason: cut_off.labels(reason) for reason in CUT_OFF_REASONS}
        self.sent_bytes = Counter(
            "resofleet_gateway_sent_bytes", "Bytes written to clients' sockets (WebSocket "
            "frames: events and replies).", registry=registry,
        )
        self.bus_reconnects = Counter(
            "resofleet_gateway_bus_reconnects", "Times the bus link came back after it "
            "dropped or froze.", registry=registry,
        )
        refused = Counter(
            "resofleet_gateway_refused", "Refused attempts (handshakes, unauthenticated, "
            "forbidden, out of scope, rate-limited, rejected input), by reason.", ["reason"],
            registry=registry,
        )
        self._refused = {reason: refused.labels(reason) for reason in _REFUSALS}
        self._refused_family = refused
        self.revocations = Counter(
            "resofleet_gateway_revocations", "Token revocations learnt (config, bus, gossip).",
            registry=registry,
        )
        # children resolved once: (type, outcome) -> (counter, histogram)
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        for kind in (*REQUEST_TYPES, INVALID_TYPE):
            self._child(kind, OK)

    def _child(self, kind: str, outcome: str) -> tuple[Counter, Histogram]:
        if kind not in REQUEST_TYPES:
            kind = INVALID_TYPE
        if outcome not in _OUTCOMES:
            outcome = ErrorCode.INTERNAL.value
        child = self._children.get((kind, outcome))
        if child is None:
            child = self._children[(kind, outcome)] = (
                self._requests.labels(kind, outcome), self._latency.labels(kind),
            )
        return child

    # -- counting (hot paths) ------------------------------------------------------

    def request(self, kind: str, outcome: str, started: float) -> None:
        """One request of type ``kind`` answered with ``outcome`` (``ok`` or an error
        code); ``started``: its :func:`time.perf_counter` when its frame was read."""
        child = self._children.get((kind, outcome)) or self._child(kind, outcome)
        child[0].inc()
        child[1].observe(time.perf_counter() - started)

    def answered(self, asked: Asked, message: ServerMessage) -> None:
        """The request ``asked`` was answered with ``message`` (an error: its code)."""
        self.request(asked[0], message.code if type(message) is Error else OK, asked[1])

    def refused(self, reason: str) -> None:
        child = self._refused.get(reason)
        if child is None:  # a reason added to the guard later: still bounded by its code
            child = self._refused[reason] = self._refused_family.labels(reason)
        child.inc()

    # -- state read when scraped ---------------------------------------------------

    def watch(self, *, connections: Callable[[], tuple[int, int]], ready: Callable[[], bool]) -> None:
        """Read the sessions (unauthenticated, authenticated) and readiness from these."""
        self._state.connections = connections
        self._state.ready = ready


def exposition(registries: Sequence[CollectorRegistry], accept: str | None) -> tuple[bytes, str]:
    """The body and ``Content-Type`` of a scrape of ``registries``: OpenMetrics when the
    ``Accept`` header asks for it, else the text format 0.0.4."""
    if accept and "application/openmetrics-text" in accept:
        parts = [generate_openmetrics(r) for r in registries]
        # each ends with "# EOF": keep only the last
        body = b"".join(p.removesuffix(b"# EOF\n") for p in parts) + b"# EOF\n"
        return body, OPENMETRICS_TYPE
    return b"".join(generate_latest(r) for r in registries), CONTENT_TYPE_LATEST
