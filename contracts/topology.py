"""Names on the bus, in one place.

Every exchange, routing key and queue name that the gateway and the agent share is built
here, from a :class:`Topology` whose ``prefix`` lets several deployments (or tests) share
one broker without seeing each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "EVENT_KINDS",
    "EventKind",
    "SERVER_ID_PATTERN",
    "Topology",
    "is_server_id",
]

#: A server id: lowercase letters, digits and dashes, 1-63 characters, not starting with
#: a dash. The same shape as a DNS label, so it is safe in routing keys, URLs and logs.
SERVER_ID_PATTERN: Final = r"[a-z0-9][a-z0-9-]{0,62}"
_SERVER_ID = re.compile(SERVER_ID_PATTERN)

EventKind = Literal["output", "status", "worlds", "bans", "state", "schedule"]
EVENT_KINDS: Final[tuple[EventKind, ...]] = (
    "output", "status", "worlds", "bans", "state", "schedule",
)


def is_server_id(value: object) -> bool:
    """Whether ``value`` is a well-formed server id."""
    return isinstance(value, str) and _SERVER_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Topology:
    """Exchange and routing-key names, optionally under a ``prefix``.

    - ``commands`` (``resofleet.requests``, topic): one exclusive queue per served server
      (``resofleet.commands.<server>``), bound with the server id as its key. A topic
      exchange, though ids are matched exactly, because RabbitMQ checks binding keys
      against a user's topic permissions only on topic exchanges: a broker user per agent
      can then be refused binding another server's id (and reading its requests).
    - ``events`` (topic): routing key ``<server>.<kind>``.
    - ``presence`` (fanout): agent announcements, gateway discover requests, revocations.
    - ``notify_events``, ``notify_queue(<webhook>)``, ``notify_dead``: the notifier's
      durable work queues (the events it acts on, each webhook's notices waiting for
      delivery, and the notices it gave up on).
    """

    prefix: str = ""

    @property
    def commands(self) -> str:
        return f"{self.prefix}resofleet.requests"

    @property
    def events(self) -> str:
        return f"{self.prefix}resofleet.events"

    @property
    def presence(self) -> str:
        return f"{self.prefix}resofleet.presence"

    def command_queue(self, server: str) -> str:
        """The exclusive queue an agent declares to serve ``server``."""
        return f"{self.prefix}resofleet.commands.{server}"

    @property
    def notify_events(self) -> str:
        """The notifier's durable queue of events, shared by every notifier."""
        return f"{self.prefix}resofleet.notify.events"

    def notify_queue(self, webhook: str) -> str:
        """The durable queue of notices waiting for delivery to one webhook."""
        return f"{self.prefix}resofleet.notify.webhook.{webhook}"

    @property
    def notify_dead(self) -> str:
        """The dead-letter queue: notices a webhook did not take within its attempts."""
        return f"{self.prefix}resofleet.notify.dead"

    @staticmethod
    def event_key(server: str, kind: EventKind) -> str:
        return f"{server}.{kind}"

    @staticmethod
    def server_pattern(server: str) -> str:
        """Topic pattern matching every event kind of one server (``*`` for all)."""
        return "#" if server == "*" else f"{server}.*"
