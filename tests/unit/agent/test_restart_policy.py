"""The restart policy, on an injected clock: modes, backoff, its reset, the crash-loop guard,
operator stops."""

from __future__ import annotations

import pytest

from resofleet.agent.runtime.policy import (
    CLEAN_EXIT_CODES,
    RestartPolicy,
    RestartTracker,
    default_mode,
    exit_code_of,
)
from resofleet.agent.settings import ServerConfig

CRASH = 134  #: the emulator's ``crash`` (SIGABRT)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self, advance: float = 0.0) -> float:
        self.now += advance
        return self.now


def tracker(**options: object) -> tuple[RestartTracker, Clock]:
    clock = Clock()
    t = RestartTracker(RestartPolicy(**options))  # type: ignore[arg-type]
    t.started(clock())
    return t, clock


def die(t: RestartTracker, clock: Clock, *, after: float = 1.0, code: int | None = CRASH,
        operator: bool = False):  # type: ignore[no-untyped-def]
    verdict = t.died(clock(after), exit_code=code, operator=operator)
    if verdict.restart:
        t.started(clock(verdict.delay))
    return verdict


def test_always_restarts_a_crash_and_a_clean_exit() -> None:
    """``always``: a crash and an exit with code 0 are both restarted."""
    t, clock = tracker(mode="always")
    assert die(t, clock, code=CRASH).restart
    assert die(t, clock, code=0).restart


def test_on_failure_restarts_only_failures() -> None:
    """``on-failure``: a crash (or an unknown code) is restarted, a clean exit or SIGTERM is not."""
    t, clock = tracker(mode="on-failure")
    assert die(t, clock, code=CRASH).restart
    assert die(t, clock, code=None).restart
    for code in sorted(CLEAN_EXIT_CODES):
        verdict = die(t, clock, code=code)
        assert not verdict.restart and verdict.state == "exited", code


def test_never_restarts_nothing() -> None:
    """``never``: a crash leaves the server exited."""
    t, clock = tracker(mode="never")
    verdict = die(t, clock)
    assert (verdict.restart, verdict.state) == (False, "exited")


def test_backoff_doubles_up_to_its_maximum() -> None:
    """Quick deaths: 1, 2, 4, 8 s ... capped at backoff_max."""
    t, clock = tracker(backoff_start=1.0, backoff_max=5.0, loop_limit=100)
    delays = [die(t, clock).delay for _ in range(5)]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_stable_run_starts_the_backoff_over() -> None:
    """A death after a run of stable_run seconds is restarted after the first delay again."""
    t, clock = tracker(backoff_start=1.0, stable_run=60.0, loop_limit=100)
    assert [die(t, clock).delay for _ in range(3)] == [1.0, 2.0, 4.0]
    assert die(t, clock, after=60.0).delay == 1.0
    assert die(t, clock).delay == 2.0


def test_crash_loop_stops_the_restarts_until_reset() -> None:
    """The loop_limit-th death within loop_window is ``crashloop``; a start clears it."""
    t, clock = tracker(loop_limit=3, loop_window=100.0, backoff_start=1.0)
    assert die(t, clock).restart and die(t, clock).restart
    verdict = die(t, clock)
    assert (verdict.restart, verdict.state) == (False, "crashloop")
    assert t.last == verdict
    t.reset()
    t.started(clock(1.0))
    verdict = die(t, clock)
    assert verdict.restart and verdict.delay == 1.0


def test_deaths_outside_the_window_do_not_count() -> None:
    """Deaths spread wider than loop_window never make a crash loop."""
    t, clock = tracker(loop_limit=3, loop_window=10.0, backoff_start=0.1, backoff_max=0.1)
    for _ in range(10):
        assert die(t, clock, after=6.0).restart


def test_operator_stop_is_never_restarted_and_not_counted() -> None:
    """A stop on purpose stays down under ``always`` and does not count towards a loop."""
    t, clock = tracker(mode="always", loop_limit=2)
    verdict = die(t, clock, operator=True)
    assert (verdict.restart, verdict.state) == (False, "exited")
    assert "operator" in verdict.why
    t.started(clock(1.0))
    assert die(t, clock).restart  # one death only: no crash loop yet


def test_bad_policies_are_refused() -> None:
    """A mode outside the three, a backoff above its maximum, a zero limit: ValueError."""
    with pytest.raises(ValueError, match="restart must be one of"):
        RestartPolicy(mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RestartPolicy(backoff_start=10.0, backoff_max=1.0)
    with pytest.raises(ValueError):
        RestartPolicy(loop_limit=0)


def test_exit_codes_and_defaults() -> None:
    """A death by signal reads as 128 + N; docker defaults to on-failure, processes to always."""
    assert exit_code_of(-9) == 137 and exit_code_of(134) == 134 and exit_code_of(0) == 0
    assert default_mode("docker") == "on-failure"
    assert default_mode("process") == default_mode("emulator") == "always"
    config = ServerConfig(id="x", runtime="docker", container="c", restart_backoff=0.5,
                          restart_backoff_max=0.1, crash_loop_limit=2)
    policy = config.restart_policy()
    assert (policy.mode, policy.backoff_start, policy.backoff_max, policy.loop_limit) == (
        "on-failure", 0.5, 0.5, 2)
    assert ServerConfig(id="y", runtime="emulator", restart="never").restart_policy().mode == "never"


def test_a_hung_console_counts_for_the_crash_loop_guard_whatever_the_mode() -> None:
    """health_restart restarts count as deaths: a headless that hangs at every start ends
    in ``crashloop`` instead of being restarted for ever, even with restart = "never"."""
    for mode in ("always", "on-failure", "never"):
        t, clock = tracker(mode=mode, loop_limit=3, loop_window=100.0)
        first, second = t.hung(clock(5.0)), t.hung(clock(5.0))
        assert (first.restart, first.state, first.delay) == (True, "restarting", 0.0)
        assert second.restart
        third = t.hung(clock(5.0))
        assert (third.restart, third.state) == (False, "crashloop") and t.last == third
        t.reset()  # someone starts it
        assert t.hung(clock(5.0)).restart


def test_hangs_and_crashes_share_one_window() -> None:
    """A crash and a hang within the window count together."""
    t, clock = tracker(loop_limit=2, loop_window=100.0)
    assert die(t, clock).restart
    assert t.hung(clock(1.0)).state == "crashloop"
