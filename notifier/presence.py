"""Which servers' agents went silent: the notifier's view of presence announcements.

An agent killed outright publishes no ``exited``: the only sign is that its announcements
stop. :class:`PresenceWatch` follows the rule the gateway's registry follows
(:data:`MISSED_ANNOUNCEMENTS` intervals without an announcement: its agent is gone; an
agent that announces without a server it announced before has stopped serving it), as a
pure object with the clock passed in. The notifier turns what it reports into ``lost`` and
``announced`` states in its own event queue, where :class:`~resofleet.notifier.watch.Watcher`
makes at most one ``server_down`` of an ``exited`` and a lapse together.

While the notifier's own link to the bus is down, silence is its own: :meth:`link_down`
stops the clocks, and :meth:`link_up` gives every server its intervals afresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from resofleet.contracts import MISSED_ANNOUNCEMENTS, Announce

__all__ = ["PresenceWatch"]



@dataclass
class _Seen:
    agent: str
    at: float
    interval: float
    lapsed: bool = False


@dataclass
class PresenceWatch:
    """Servers by agent, when each was last announced, and which lapsed."""

    _servers: dict[str, _Seen] = field(default_factory=dict)
    _down: bool = False

    def announce(self, message: Announce, *, now: float) -> tuple[list[str], list[str]]:
        """Note ``message``; returns (servers announced again after a lapse, servers its
        agent announced before and no longer does)."""
        back: list[str] = []
        interval = max(message.interval, 0.1)
        named = {s.server for s in message.servers}
        for server in sorted(named):
            seen = self._servers.get(server)
            if seen is not None and seen.lapsed:
                back.append(server)
            self._servers[server] = _Seen(message.agent, now, interval)
        dropped = [
            server for server, seen in self._servers.items()
            if seen.agent == message.agent and server not in named and not seen.lapsed
        ]
        for server in dropped:
            self._servers[server].lapsed = True
        return back, sorted(dropped)

    def lapsed(self, *, now: float) -> list[str]:
        """Servers whose announcements lapsed since the last call."""
        if self._down:
            return []
        found = []
        for server, seen in self._servers.items():
            if not seen.lapsed and now - seen.at > MISSED_ANNOUNCEMENTS * seen.interval:
                seen.lapsed = True
                found.append(server)
        return sorted(found)

    def next_due(self) -> float | None:
        """When the next lapse can happen (``None``: nothing to watch)."""
        due = [
            s.at + MISSED_ANNOUNCEMENTS * s.interval for s in self._servers.values() if not s.lapsed
        ]
        return min(due) if due and not self._down else None

    def link_down(self) -> None:
        self._down = True

    def link_up(self, *, now: float) -> None:
        self._down = False
        for seen in self._servers.values():
            seen.at = max(seen.at, now)
