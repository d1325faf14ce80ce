"""OutputLog.history: which lines a get_output gets, and when it is a reset. No I/O."""

from __future__ import annotations

import pytest

from resofleet.agent.output import HELD_CHARS, LINE_CHARS, OutputLog


async def _never(batch) -> None:  # type: ignore[no-untyped-def]
    raise AssertionError("nothing is published in these tests")


def log_of(lines: int, *, ring: int = 100) -> OutputLog:
    output = OutputLog("s", _never, ring=ring)
    for n in range(1, lines + 1):
        output.add(f"line {n}")
    return output


@pytest.mark.parametrize(
    ("since", "epoch", "first", "reset"),
    [
        (None, None, 1, False),     # everything
        (7, "SAME", 8, False),      # after since, in this epoch
        (7, "other", 1, True),      # another epoch: all, reset
        (7, None, 1, True),         # no epoch: which one since counts in is unknown
        (50, None, 1, True),        # past this epoch's last line: still a reset, not nothing
        (0, None, 1, False),        # everything comes after 0, in any epoch
        (None, "other", 1, True),
        (None, "SAME", 1, False),
    ],
)
def test_since_is_read_in_an_epoch_only_when_one_is_known(since, epoch, first, reset):
    """`since` continues only in the current epoch; another epoch or none is a reset."""
    output = log_of(10)
    history = output.history(since, output.epoch if epoch == "SAME" else epoch, None)
    assert (history.lines[0].seq, history.reset, history.epoch) == (first, reset, output.epoch)
    assert history.lines[-1].seq == 10 and history.complete


def test_a_reset_with_a_limit_starts_at_the_oldest_line_and_is_incomplete():
    """`limit` cuts a reset from its oldest line, and says the answer is not complete."""
    history = log_of(150).history(7, None, 5)
    assert [line.seq for line in history.lines] == [51, 52, 53, 54, 55]
    assert history.reset and not history.complete


def test_since_older_than_the_ring_is_incomplete():
    """Lines after `since` that fell out of the ring make the answer incomplete."""
    output = log_of(150)
    history = output.history(10, output.epoch, None)
    assert history.lines[0].seq == 51 and not history.complete and not history.reset


def test_a_huge_line_is_cut_and_says_how_much():
    """A console line of megabytes is kept and streamed as its first LINE_CHARS characters
    and a note of what was cut; an ordinary line is untouched."""
    output = OutputLog("s", _never, ring=10)
    output.add("x" * (LINE_CHARS + 5000))
    output.add("worlds")
    first, second = output.history(None, None, None).lines
    assert first.output == "x" * LINE_CHARS + " [5000 characters cut]"
    assert second.output == "worlds"


def test_history_and_backlog_are_bounded_in_characters_too():
    """Long lines push the oldest out of the ring and the publish backlog before the line
    count does: neither holds more than HELD_CHARS characters (plus one line), and the
    lines not published are counted."""
    output = OutputLog("s", _never, ring=100_000)
    for n in range(3 * HELD_CHARS // LINE_CHARS):
        output.add(f"{n:08d}" + "y" * (LINE_CHARS - 8))
    held = output.history(0, output.epoch, None)
    kept = sum(len(line.output) for line in output._ring)
    assert HELD_CHARS - LINE_CHARS < kept <= HELD_CHARS
    assert not held.complete and held.lines[0].seq > 1  # the oldest fell out ...
    assert output._ring[-1].seq == output.seq  # ... the newest is kept
    assert output._unsent_chars <= HELD_CHARS and output.dropped > 0
    assert len(output._unsent) + output.dropped == output.seq
