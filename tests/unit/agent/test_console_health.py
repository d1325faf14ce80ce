"""The console health check's verdicts, without a console."""

from __future__ import annotations

import pytest

from resofleet.agent.consolehealth import HEALTHY, UNHEALTHY, Change, ConsoleHealth


def test_unhealthy_after_n_misses_in_a_row() -> None:
    """Two misses of three change nothing; the third says unhealthy and asks to act."""
    health = ConsoleHealth(misses=3)
    assert health.answered() == Change()  # the first healthy is no event
    assert health.state == HEALTHY
    assert health.missed() == Change() and health.missed() == Change()
    assert health.state == HEALTHY
    assert health.missed() == Change(UNHEALTHY, act=True)
    assert health.unhealthy
    assert health.missed() == Change()  # no repeat while it stays unhealthy


def test_an_answer_breaks_the_row_and_ends_unhealthy() -> None:
    """A miss, an answer, two misses: still healthy; then healthy again after unhealthy."""
    health = ConsoleHealth(misses=2)
    health.missed()
    health.answered()
    assert health.missed() == Change()
    assert health.missed() == Change(UNHEALTHY, act=True)
    assert health.answered() == Change(HEALTHY)
    assert not health.unhealthy


def test_a_new_run_counts_afresh_and_may_act_again() -> None:
    """After a restart the state stays unhealthy until an answer; a hang of the new run
    asks to act once more, with no second unhealthy event."""
    health = ConsoleHealth(misses=2)
    health.missed()
    health.missed()
    health.new_run()
    assert health.state == UNHEALTHY and health.missed_in_a_row == 0
    assert health.missed() == Change()
    assert health.missed() == Change(None, act=True)


def test_misses_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ConsoleHealth(misses=0)
