"""The registry: servers from announcements, offline after three missed ones, no I/O."""

from __future__ import annotations

import pytest

from resofleet.bus import LocalBus
from resofleet.contracts import Announce, Revoke, ServerPresence, ServerState
from resofleet.gateway.registry import OFFLINE_RETENTION, Registry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def announce(agent: str, *servers: str, interval: float = 2.0) -> Announce:
    return Announce(
        agent=agent,
        host=f"{agent}-host",
        servers=[ServerPresence(server=s, status="running", worlds=2, users=3, runtime="emulator") for s in servers],
        interval=interval,
    )


def make() -> tuple[Registry, Clock]:
    clock = Clock()
    return Registry(LocalBus(), gateway="gw-test", clock=clock, wall=lambda: 1.7e9), clock


def test_announced_servers_are_online_and_listed():
    """An announcement makes its servers online, with host, counts and agent."""
    registry, _ = make()
    registry.handle(announce("a1", "s2", "s1"))
    assert registry.online() == ["s1", "s2"]
    info = registry.snapshot()[0]
    assert (info.server, info.host, info.status, info.worlds, info.users, info.agent, info.online) == (
        "s1", "a1-host", "running", 2, 3, "a1", True,
    )
    assert info.last_seen == 1.7e9


def test_server_goes_offline_after_three_missed_announcements():
    """Three intervals without an announcement: reported offline, not online."""
    registry, clock = make()
    registry.handle(announce("a1", "s1"))
    clock.now += 5.9
    assert registry.online() == ["s1"]
    clock.now += 0.2
    assert registry.online() == []
    [info] = registry.snapshot()
    assert (info.online, info.status, info.worlds) == (False, "offline", 0)
    assert registry.offline() == {"s1": pytest.approx(6.1)}


def test_server_dropped_by_its_agent_is_offline_at_once():
    """An agent that stops announcing one of its servers no longer serves it."""
    registry, _ = make()
    registry.handle(announce("a1", "s1", "s2"))
    registry.handle(announce("a1", "s1"))
    assert registry.online() == ["s1"]


def test_offline_servers_are_forgotten_after_the_retention():
    """An offline entry stays listed for a while, then disappears."""
    registry, clock = make()
    registry.handle(announce("a1", "s1"))
    clock.now += 6.1 + OFFLINE_RETENTION - 1
    assert [i.server for i in registry.snapshot()] == ["s1"]
    clock.now += 2
    assert registry.snapshot() == []


def test_server_comes_back_when_announced_again():
    """A server that was offline is online again at its next announcement."""
    registry, clock = make()
    registry.handle(announce("a1", "s1"))
    clock.now += 60
    registry.handle(announce("a2", "s1"))
    assert registry.online() == ["s1"]
    assert registry.snapshot()[0].agent == "a2"


def test_state_events_update_the_status_and_revocations_reach_the_hook():
    """A lifecycle event shows in get_servers; a revocation is handed to the hook."""
    registry, _ = make()
    registry.handle(announce("a1", "s1"))
    registry.note_state(ServerState(server="s1", state="restarting"))
    assert registry.snapshot()[0].status == "restarting"
    for verdict in ("unhealthy", "healthy"):  # the console health check: not a lifecycle state
        registry.note_state(ServerState(server="s1", state=verdict))
        assert registry.snapshot()[0].status == "restarting"
    seen = []
    registry.on_revoke = seen.append
    registry.handle(Revoke(jti="t1", until=0))
    assert [r.jti for r in seen] == ["t1"]


def test_lost_server_is_offline_at_once_until_announced_again():
    """mark_lost: offline now (news once), online again at its agent's next announcement."""
    registry, _ = make()
    registry.handle(announce("a1", "s1"))
    assert registry.mark_lost("s1") is True
    assert registry.online() == [] and registry.snapshot()[0].status == "offline"
    assert registry.mark_lost("s1") is False and registry.mark_lost("never-seen") is False
    registry.handle(announce("a1", "s1"))
    assert registry.online() == ["s1"]


def test_hooks_hear_servers_come_and_go():
    """on_online gets the servers an announcement brought (new or back); on_offline a
    server its agent stopped serving, with how."""
    registry, _ = make()
    came, went = [], []
    registry.on_online = came.append
    registry.on_offline = lambda server, how: went.append((server, how))
    registry.handle(announce("a1", "s1", "s2"))
    registry.handle(announce("a1", "s1", "s2"))  # nothing new
    registry.handle(announce("a1", "s1"))
    registry.mark_lost("s1")
    registry.handle(announce("a1", "s1"))
    assert came == [["s1", "s2"], ["s1"]]
    assert went == [("s2", "agent a1 stopped serving it")]



def test_for_route_agrees_with_online_and_offline():
    """Routing sees the same offline servers whether it names one or not."""
    registry, clock = make()
    registry.handle(announce("a1", "s1"))
    registry.handle(announce("a2", "s2"))
    clock.now += 4.0
    registry.handle(announce("a2", "s2"))
    clock.now += 2.1  # s1 missed three announcements, s2 did not
    assert registry.for_route(None) == (["s2"], {"s1": pytest.approx(6.1)})
    assert registry.for_route("s1") == ([], {"s1": pytest.approx(6.1)})
    assert registry.for_route("s2") == ([], {})
    assert registry.for_route("never-seen") == ([], {})
