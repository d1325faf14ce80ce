"""Schedules (agent.schedules): slots, decisions and one server's timetable, with a clock
the test holds (plain Unix seconds): no I/O, no sleeping."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from resofleet.agent.schedules import (
    DEFAULT_MAX_WAIT,
    MISSED_AFTER,
    RunState,
    ScheduleConfig,
    ScheduleError,
    Timetable,
    compile_schedule,
    decide,
    people_in,
)
from resofleet.contracts import User, World

CHECK = 5.0


def at(text: str) -> float:
    """Unix seconds of an ISO time in UTC (``2026-11-30T04:00``)."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def schedule(**fields):
    fields.setdefault("servers", ("eu-*",))
    fields.setdefault("action", "restart")
    if "cron" not in fields and "every" not in fields:
        fields["cron"] = "0 4 * * *"
    return compile_schedule(ScheduleConfig(**fields), servers=("eu-1", "eu-2", "lab"))


def refused(**fields) -> ScheduleError:
    with pytest.raises(ScheduleError) as caught:
        schedule(**fields)
    return caught.value


# -- slots ------------------------------------------------------------------------------


def test_cron_slots_follow_the_expression_in_utc():
    """``0 4 * * *`` is due at 04:00 UTC: the next slot after 03:00, after 03:59:59.5, and
    (strictly after) 04:00 itself is the next day's."""
    nightly = schedule(cron="0 4 * * *")
    assert nightly.next_slot(at("2026-11-30T03:00")) == at("2026-11-30T04:00")
    assert nightly.next_slot(at("2026-11-30T03:59:59") + 0.5) == at("2026-11-30T04:00")
    assert nightly.next_slot(at("2026-11-30T04:00")) == at("2026-12-01T04:00")


def test_cron_slots_are_read_in_the_schedules_timezone():
    """04:00 in Berlin is 03:00 UTC in winter and 02:00 UTC in summer."""
    berlin = schedule(cron="0 4 * * *", timezone="Europe/Berlin")
    assert berlin.next_slot(at("2026-11-30T00:00")) == at("2026-11-30T03:00")
    assert berlin.next_slot(at("2026-07-01T00:00")) == at("2026-07-01T02:00")


def test_a_cron_slot_in_the_hour_daylight_saving_skips_runs_once_after_the_change():
    """02:30 does not exist in Berlin on 2026-03-29: the job runs at 03:00 local (01:00
    UTC), as Debian's cron runs it, and on the next day at 02:30 again."""
    job = schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    assert job.next_slot(at("2026-03-28T23:00")) == at("2026-03-29T01:00")
    assert job.next_slot(at("2026-03-29T01:00")) == at("2026-03-30T00:30")


def test_a_cron_slot_in_the_hour_daylight_saving_repeats_runs_once():
    """02:30 comes twice in Berlin on 2026-10-25: the job runs at the first (00:30 UTC),
    not again an hour later, and on the next day at 02:30 winter time (01:30 UTC)."""
    job = schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    assert job.next_slot(at("2026-10-24T23:00")) == at("2026-10-25T00:30")
    assert job.next_slot(at("2026-10-25T00:30")) == at("2026-10-26T01:30")


def test_interval_slots_are_multiples_of_the_interval_since_the_epoch():
    """``every = "6h"`` is due at 00, 06, 12, 18 UTC whenever the agent started;
    ``90m`` at multiples of 90 minutes since 1970-01-01 00:00 UTC."""
    six = schedule(every="6h")
    assert six.next_slot(at("2026-11-30T05:59:59")) == at("2026-11-30T06:00")
    assert six.next_slot(at("2026-11-30T06:00")) == at("2026-11-30T12:00")
    ninety = schedule(every="90m")
    slot = ninety.next_slot(at("2026-11-30T10:00"))
    assert slot % 5400 == 0 and 0 < slot - at("2026-11-30T10:00") <= 5400


def test_a_schedule_serves_the_servers_its_patterns_match():
    """Glob patterns over server ids."""
    eu = schedule(servers=("eu-*",))
    assert eu.serves("eu-1") and eu.serves("eu-2") and not eu.serves("lab")


# -- checks at start --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "key", "words"),
    [
        ({"cron": "0 4 * * *", "every": "6h"}, "cron", "exactly one"),
        ({"cron": "0 4 * *"}, "cron", "five fields"),
        ({"cron": "0 0 4 * * *"}, "cron", "five fields"),
        ({"cron": "0 25 * * *"}, "cron", "not a cron expression"),
        ({"cron": "0 0 31 2 *"}, "cron", "not a cron expression"),
        ({"timezone": "Mars/Olympus"}, "timezone", "IANA"),
        ({"every": "6 hours"}, "every", "duration"),
        ({"every": "0s"}, "every", "at least"),
        ({"every": "6h", "timezone": "Europe/Berlin"}, "timezone", "cron only"),
        ({"max_wait": "1h"}, "max_wait", 'when = "empty"'),
        ({"on_timeout": "skip"}, "on_timeout", 'when = "empty"'),
        ({"when": "empty", "max_wait": "soon"}, "max_wait", "duration"),
        ({"action": "command"}, "command", "required"),
        ({"action": "restart", "command": "save"}, "command", 'action = "command"'),
        ({"action": "command", "command": "sav"}, "command", "not a console command"),
        ({"action": "command", "command": "shutdown"}, "command", "admin"),
        ({"action": "command", "command": "save\nshutdown"}, "command", "one console line"),
        ({"servers": ("us-*",)}, "servers", "matches none"),
    ],
)
def test_a_schedule_that_cannot_run_is_refused_naming_its_key(fields, key, words):
    """Each mistake is refused at start with the key and a reason a person can act on."""
    error = refused(**fields)
    assert error.field == key
    assert words in error.problem


def test_an_operator_command_is_accepted_as_written():
    """A known command an operator may run is kept, trimmed."""
    assert schedule(action="command", command=" save ").command == "save"
    assert schedule(action="command", command="kick Mira").command == "kick Mira"


def test_a_derived_name_is_stable_and_differs_between_entries():
    """Without ``name``: the action and a digest of the entry, the same at every start."""
    first = schedule(cron="0 4 * * *").name
    assert first == schedule(cron="0 4 * * *").name
    assert first.startswith("restart-") and first != schedule(cron="0 5 * * *").name
    assert schedule(name="nightly").name == "nightly"


def test_max_wait_defaults_for_empty_and_reads_durations():
    assert schedule(when="empty").max_wait == DEFAULT_MAX_WAIT
    assert schedule(when="empty", max_wait="2h").max_wait == 7200
    assert schedule(when="empty", max_wait="01:30:00").max_wait == 5400


# -- decisions --------------------------------------------------------------------------


def world(*others: str) -> World:
    users = [User(username=n, userId=f"U-{n}", present=True, ping=0, fps=60.0, silenced=False)
             for n in ("Host", *others)]
    return World(name="w", sessionId="S-1", users=len(users), present=len(others), maxUsers=16,
                 uptime="", accessLevel="Anyone", hidden=False, mobileFriendly=False,
                 description="", tags="", users_list=users)


def test_people_are_the_users_besides_the_headless_in_every_world():
    """The console counts the headless's own account in each world: it is not a person."""
    assert people_in([world("Mira", "Tobias"), world()]) == 2
    assert people_in([world(), world()]) == 0
    assert people_in([]) == 0


def test_when_empty_waits_while_people_are_in_and_runs_when_none_is():
    slot = at("2026-11-30T04:00")
    job = schedule(when="empty", max_wait="2h")
    assert decide(job, slot, slot, 2).kind == "wait"
    assert decide(job, slot, slot + 3600, None).kind == "wait"
    assert decide(job, slot, slot + 3600, 0).kind == "run"
    assert decide(schedule(), slot, slot, 5).kind == "run"  # when = "always"


@pytest.mark.parametrize(("on_timeout", "kind"), [("run", "run"), ("skip", "skip")])
def test_max_wait_ends_the_wait_with_on_timeout(on_timeout, kind):
    """At max_wait the slot runs anyway, or is skipped, saying how many were still in."""
    slot = at("2026-11-30T04:00")
    job = schedule(when="empty", max_wait="2h", on_timeout=on_timeout)
    assert decide(job, slot, slot + 7199, 1).kind == "wait"
    verdict = decide(job, slot, slot + 7200, 1)
    assert verdict.kind == kind and "1 user still in" in verdict.reason


# -- one server's timetable -------------------------------------------------------------


def test_restart_when_empty_waits_while_users_are_present_and_runs_when_the_last_leaves():
    """The slot opens at 04:00 with users in, waits (checking every few seconds), runs the
    moment nobody is left, and the next slot is the next night's."""
    slot = at("2026-11-30T04:00")
    job = schedule(when="empty", max_wait="2h")
    table = Timetable([job], RunState(), slot - 30, check_interval=CHECK)
    assert table.due(slot - 1) == [] and table.wake_at(slot - 30) == slot
    assert table.due(slot) == [job]
    first = table.decide(job, slot, 2)
    assert first.verdict.kind == "wait" and first.changed and table.state.waiting(job.name) == slot
    assert table.wake_at(slot) == slot + CHECK
    again = table.decide(job, slot + CHECK, 1)
    assert again.verdict.kind == "wait" and not again.changed  # nothing new to persist
    last = table.decide(job, slot + 2 * CHECK, 0)
    assert last.verdict.kind == "run" and last.slot == slot and last.changed
    assert table.state.done(job.name) == slot and table.state.waiting(job.name) is None
    assert table.due(slot + 2 * CHECK) == [] and table.next[job.name] == at("2026-12-01T04:00")


@pytest.mark.parametrize(("on_timeout", "kind"), [("run", "run"), ("skip", "skip")])
def test_a_wait_wakes_at_max_wait_and_settles_the_slot_either_way(on_timeout, kind):
    slot = at("2026-11-30T04:00")
    job = schedule(when="empty", max_wait="1m", on_timeout=on_timeout)
    table = Timetable([job], RunState(), slot - 1, check_interval=3600.0)
    table.decide(job, slot, 3)
    assert table.wake_at(slot) == slot + 60  # not a check an hour later
    step = table.decide(job, slot + 60, 3)
    assert step.verdict.kind == kind and table.state.done(job.name) == slot


def test_a_slot_never_runs_twice_even_when_it_comes_round_again():
    """After a slot ran, a timetable that meets it again (a clock put back, a new agent on
    the same state) does nothing with it and moves to the next."""
    slot = at("2026-11-30T04:00")
    job = schedule()
    state = RunState()
    table = Timetable([job], state, slot - 5, check_interval=CHECK)
    assert table.decide(job, slot, None).verdict.kind == "run"
    again = Timetable([job], state, slot - 5, check_interval=CHECK)
    assert again.due(slot) == [job]
    step = again.decide(job, slot, None)
    assert step.verdict is None and step.note == "ran already"
    assert again.next[job.name] == at("2026-12-01T04:00")



def test_a_clock_put_back_by_more_than_three_hours_runs_the_slots_again():
    """As Debian cron: a slot recorded by a clock that was far ahead (set a year wrong,
    then corrected) does not hold back the slots of the right time: they run as usual,
    and the last one run is what the state keeps from then on."""
    job = schedule()
    state = RunState()
    wrong = at("2027-11-30T04:00")
    Timetable([job], state, wrong - 5, check_interval=CHECK).decide(job, wrong, None)
    slot = at("2026-11-30T04:00")
    table = Timetable([job], RunState.load(state.dump()), slot - 5, check_interval=CHECK)
    assert table.due(slot) == [job]
    assert table.decide(job, slot, None).verdict.kind == "run"
    assert table.state.done(job.name) == slot
    assert table.next[job.name] == at("2026-12-01T04:00")

def test_the_state_survives_a_reload_and_a_waiting_slot_is_resumed():
    """A slot that was waiting when the agent stopped is waited for again after a restart
    within its max_wait (from the persisted bytes); once it ran, it is not resumed."""
    slot = at("2026-11-30T04:00")
    job = schedule(when="empty", max_wait="2h")
    table = Timetable([job], RunState(), slot - 1, check_interval=CHECK)
    table.decide(job, slot, 4)
    saved = table.state.dump()

    resumed = Timetable([job], RunState.load(saved), slot + 600, check_interval=CHECK)
    assert resumed.due(slot + 600) == [job] and resumed.waiting(job)
    assert resumed.decide(job, slot + 600, 0).verdict.kind == "run"

    after = Timetable([job], RunState.load(resumed.state.dump()), slot + 700, check_interval=CHECK)
    assert after.due(slot + 700) == [] and after.next[job.name] == at("2026-12-01T04:00")


def test_a_waiting_slot_whose_max_wait_ended_while_the_agent_was_down_is_not_run():
    slot = at("2026-11-30T04:00")
    job = schedule(when="empty", max_wait="1h")
    table = Timetable([job], RunState(), slot - 1, check_interval=CHECK)
    table.decide(job, slot, 4)
    later = Timetable([job], RunState.load(table.state.dump()), slot + 7200, check_interval=CHECK)
    assert later.expired == [(job, slot)] and later.due(slot + 7200) == []


def test_missed_slots_are_not_replayed():
    """A slot seen first well after its time (the host was suspended) is let go; so are
    the slots that passed while an action ran; an agent starts with the next slot."""
    slot = at("2026-11-30T04:00")
    job = schedule(every="1h")
    table = Timetable([job], RunState(), slot - 10, check_interval=CHECK)
    late = slot + MISSED_AFTER + 1
    step = table.decide(job, late, None)
    assert step.verdict is None and "missed" in step.note and table.state.done(job.name) is None
    assert table.next[job.name] == slot + 3600

    table.decide(job, slot + 3600, None)  # runs; say it took three hours
    table.finished(job, slot + 3 * 3600 + 60)
    assert table.next[job.name] == slot + 4 * 3600
    assert Timetable([job], RunState(), slot + 1, check_interval=CHECK).next[job.name] == slot + 3600


def test_schedules_due_together_are_handled_in_the_order_of_the_configuration():
    slot = at("2026-11-30T04:00")
    first, second = schedule(name="first"), schedule(name="second")
    table = Timetable([first, second], RunState(), slot - 1, check_interval=CHECK)
    assert table.due(slot) == [first, second]


def test_a_damaged_state_file_is_refused():
    with pytest.raises(ValueError, match="not a schedule state file"):
        RunState.load(b'{"schedules": {"x": {"done": "yesterday"}}}')
