"""The notifier's rules, events in and notices out, without a bus (resofleet.notifier.watch)."""

from __future__ import annotations

from resofleet.contracts import BusEvent
from resofleet.notifier import Notice, Watcher
from tests.support.notices import schedule, state, status, world, worlds

NOW = 1_700_000_000.0


def feed(watcher: Watcher, *events: BusEvent) -> list[Notice]:
    out: list[Notice] = []
    for event in events:
        step = watcher.feed(event, now=NOW)
        step.commit()
        out.extend(step.notices)
    return out


def kinds(notices: list[Notice]) -> list[tuple[str, str]]:
    return [(n.event, n.server) for n in notices]


def test_exit_then_ready_is_down_then_up_once_each():
    """A server that exits is down once however it is told (exited, then its agent's
    lapse), and up again when ready."""
    w = Watcher()
    out = feed(w, state("a", "ready"), state("a", "exited", "code 137"), state("a", "lost"),
               state("a", "starting"), state("a", "ready"))
    assert kinds(out) == [("server_up", "a"), ("server_down", "a"), ("server_up", "a")]
    assert "code 137" in out[1].text and out[1].data["state"] == "exited"


def test_announced_again_is_up_only_after_down():
    """The notifier's own ``announced`` brings a lost server up, and says nothing for a
    server that was never down."""
    w = Watcher()
    assert feed(w, state("a", "announced")) == []
    assert kinds(feed(w, state("a", "lost"), state("a", "announced"), state("a", "ready"))) == [
        ("server_down", "a"), ("server_up", "a"),
    ]


def test_crash_loop_and_unhealthy_are_sent_once_per_episode():
    """A crash loop and an unhealthy console make one notice each until they end,
    whether told by state events or by status samples."""
    w = Watcher()
    out = feed(
        w,
        status("a"),  # baseline
        state("a", "crashloop", "died 5 times in 60 s"),
        status("a", value="crashloop"),
        state("a", "ready"),
        state("a", "unhealthy"),
        status("a", health="unhealthy"),
        state("a", "healthy"),
        status("a", health="unhealthy"),
    )
    assert [n.event for n in out] == ["crash_loop", "server_up", "unhealthy", "unhealthy"]


def test_first_status_is_a_baseline():
    """A notifier that starts while a console is already unhealthy does not announce it
    again; a later change is announced."""
    w = Watcher()
    assert feed(w, status("a", health="unhealthy")) == []
    assert feed(w, status("a", health="healthy")) == []
    assert [n.event for n in feed(w, status("a", health="unhealthy"))] == ["unhealthy"]


def test_users_joined_and_left_per_world_after_a_baseline():
    """The first snapshot is a baseline; later ones announce who joined and left which
    world; the headless's own account never counts."""
    w = Watcher()
    assert feed(w, worlds("a", world("Hub", ["ann", "bob"]), world("Lab", []))) == []
    out = feed(w, worlds("a", world("Hub", ["bob", "cid"]), world("Lab", ["ann"])))
    assert sorted((n.event, n.data["user"], n.data["world"]) for n in out) == [
        ("user_joined", "ann", "Lab"), ("user_joined", "cid", "Hub"), ("user_left", "ann", "Hub"),
    ]
    assert all(n.data["users"] == 3 for n in out)


def test_a_new_world_sends_joins_a_closed_one_sends_no_leaves():
    w = Watcher()
    feed(w, worlds("a", world("Hub", ["ann"])))
    out = feed(w, worlds("a", world("Party", ["bob"])))
    assert [(n.event, n.data["user"]) for n in out] == [("user_joined", "bob")]


def test_names_are_plain_in_text_and_raw_in_data():
    """Rich-text tags are stripped from the line for people, kept in the data."""
    w = Watcher()
    feed(w, worlds("a", world("<b>Hub</b>", [])))
    out = feed(w, worlds("a", world("<b>Hub</b>", ["<color=red>Eve</color>"])))
    assert out[0].text == "Eve joined Hub on a"
    assert out[0].data["user"] == "<color=red>Eve</color>"


def test_threshold_once_per_crossing_with_hysteresis():
    """``users_above`` when the count reaches the threshold, ``users_below`` only once it
    falls under threshold minus hysteresis; hovering sends nothing."""
    w = Watcher(users_threshold=3, users_hysteresis=1)
    names = ["u1", "u2", "u3", "u4"]
    counts = [1, 3, 2, 3, 4, 2, 1, 3]
    out = feed(w, *(worlds("a", world("Hub", names[:c])) for c in counts))
    assert [(n.event, n.data["users"]) for n in out if n.event.startswith("users_")] == [
        ("users_above", 3), ("users_below", 1), ("users_above", 3),
    ]


def test_threshold_already_crossed_at_start_is_a_baseline():
    w = Watcher(users_threshold=2, users_hysteresis=0)
    out = feed(w, worlds("a", world("Hub", ["a", "b", "c"])), worlds("a", world("Hub", ["a"])))
    assert [n.event for n in out if n.event.startswith("users_")] == ["users_below"]


def test_failed_schedule_runs_only():
    w = Watcher()
    out = feed(w, schedule("a", "ok"), schedule("a", "skipped"), schedule("a", "failed", detail="timeout"))
    assert [n.event for n in out] == ["schedule_failed"]
    assert "nightly" in out[0].text and "timeout" in out[0].text


def test_state_is_kept_only_on_commit():
    """An event judged but not committed (its notices could not be queued) is judged the
    same way when it comes again."""
    w = Watcher()
    feed(w, state("a", "ready"))
    step = w.feed(state("a", "exited"), now=NOW)
    assert [n.event for n in step.notices] == ["server_down"]
    again = w.feed(state("a", "exited"), now=NOW)
    assert [n.event for n in again.notices] == ["server_down"]
    assert again.notices[0].id == step.notices[0].id  # judged again: the same notice


def test_ids_are_unique_per_notice_and_per_process():
    """Two identical events in a row (down, up, down) make different notices; two
    watchers (two processes) never make the same id."""
    w, other = Watcher(), Watcher()
    events = [state("a", "ready"), state("a", "exited"), state("a", "ready"), state("a", "exited")]
    ids = [n.id for n in feed(w, *events)]
    assert len(set(ids)) == 4
    assert not set(ids) & {n.id for n in feed(other, *events)}


def test_a_failed_run_told_twice_is_one_notice():
    w = Watcher()
    out = feed(w, schedule("a", "failed"), schedule("a", "failed"), schedule("a", "failed", name="other"))
    assert [n.data["schedule"] for n in out] == ["nightly", "other"]


def test_servers_are_independent():
    w = Watcher()
    out = feed(w, state("a", "ready"), state("b", "ready"), state("a", "exited"))
    assert kinds(out) == [("server_up", "a"), ("server_up", "b"), ("server_down", "a")]
