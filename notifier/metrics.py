"""The notifier's Prometheus metrics, in a registry of its own (never the process-wide
default: a test process runs several notifiers, and ``resofleet up`` runs one beside a
gateway and an agent).

Labels are bounded: ``kind`` (the bus's event kinds), ``event`` (the notice types),
``webhook`` (the configured names) and ``outcome`` (``ok``, ``retry``, ``dead``). Never a
URL: a Discord webhook URL is its own credential.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["DELIVERY_BUCKETS", "NotifierMetrics"]

#: POST latency buckets, in seconds: a local receiver answers in a millisecond, Discord
#: in a hundred, a struggling one up to the request timeout (10 s by default).
DELIVERY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class NotifierMetrics:
    """Counters and a histogram; :attr:`registry` is what ``/metrics`` serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "resofleet_notifier_events", "Events the notifier took from its queue, by kind.",
            ["kind"], registry=self.registry,
        )
        self.notices = Counter(
            "resofleet_notifier_notices", "Notices made from events, by event type.",
            ["event"], registry=self.registry,
        )
        self.deliveries = Counter(
            "resofleet_notifier_deliveries",
            "Delivery attempts by webhook and outcome: ok, retry (a failed attempt that "
            "will be retried), dead (a notice given up on: dead-lettered).",
            ["webhook", "outcome"], registry=self.registry,
        )
        self.latency = Histogram(
            "resofleet_notifier_post_seconds", "Duration of one POST to a webhook.",
            ["webhook"], buckets=DELIVERY_BUCKETS, registry=self.registry,
        )
