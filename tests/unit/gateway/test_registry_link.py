"""The registry while the gateway's own bus link is down: an outage of the link costs
no server its standing, and after it every server gets its announcements' time afresh.
No I/O."""

from __future__ import annotations

from .test_registry import announce, make


def test_servers_do_not_expire_while_the_link_is_down():
    """Announcements cannot arrive without a link: servers keep the state they had when
    it went down, and none is named offline (the bus answers bus_unavailable instead)."""
    registry, clock = make()
    registry.handle(announce("a1", "s1"))
    registry.handle(announce("a2", "s2"))
    clock.now += 3
    registry.link_changed(False)
    clock.now += 60
    assert registry.online() == ["s1", "s2"]
    assert registry.offline() == {}
    assert registry.is_online("s1")
    assert [i.online for i in registry.snapshot()] == [True, True]


def test_a_server_already_offline_when_the_link_went_down_stays_offline():
    """What was known before the outage stands: no resurrection by the link's return."""
    registry, clock = make()
    registry.handle(announce("a1", "s1"))
    clock.now += 10  # s1 expired (3 x 2 s)
    registry.handle(announce("a2", "s2"))
    registry.link_changed(False)
    clock.now += 30
    assert registry.online() == ["s2"]
    registry.link_changed(True)
    assert registry.online() == ["s2"]
    assert list(registry.offline()) == ["s1"]


def test_after_the_link_returns_servers_get_three_intervals_afresh():
    """A server online when the link dropped is online for three announcement intervals
    after the link is back, however long the outage, then offline if still silent."""
    registry, clock = make()
    registry.handle(announce("a1", "s1"))
    clock.now += 5.5  # 0.5 s before it would have expired
    registry.link_changed(False)
    clock.now += 20
    registry.link_changed(True)
    clock.now += 5.9
    assert registry.online() == ["s1"]
    assert registry.offline() == {}
    clock.now += 0.2
    assert registry.online() == []
    assert list(registry.offline()) == ["s1"]


def test_an_announcement_after_the_outage_counts_as_usual():
    registry, clock = make()
    registry.handle(announce("a1", "s1"))
    registry.link_changed(False)
    clock.now += 20
    registry.link_changed(True)
    clock.now += 1
    registry.handle(announce("a1", "s1"))
    clock.now += 6.0
    assert registry.online() == ["s1"]
    clock.now += 0.1
    assert registry.online() == []


def test_repeated_link_changes_count_from_the_first_drop():
    """Down twice in a row is one outage; up without an outage changes nothing."""
    registry, clock = make()
    registry.handle(announce("a1", "s1"))
    registry.link_changed(True)
    registry.link_changed(False)
    clock.now += 10
    registry.link_changed(False)
    assert registry.online() == ["s1"]
    registry.link_changed(True)
    assert registry.online() == ["s1"]
