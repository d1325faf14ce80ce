""".NET TimeSpan text to seconds, and seconds to the English uptime clients see; configured
durations ("6h", "90m") to seconds."""

from __future__ import annotations

import math

import pytest

from resofleet.agent.timespan import humanize_uptime, parse_duration, parse_timespan


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:00:00", 0.0),
        ("00:00:45", 45.0),
        ("02:30:00", 9000.0),
        ("23:59:59", 86399.0),
        ("1.02:03:04", 93784.0),
        ("1.02:03:04.5060708", 93784.5060708),
        ("00:00:00.5000000", 0.5),
        ("00:00:00.5", 0.5),
        ("12.00:00:00", 12 * 86400.0),
        ("-00:01:00", -60.0),
        ("-1.00:00:00.2500000", -86400.25),
    ],
)
def test_parse_timespan_reads_the_c_format(text, seconds):
    """The invariant "c" format, with and without days and fraction, and signed."""
    assert parse_timespan(text) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1:02:03:04", 93784.0),
        ("00:00:01,5", 1.5),
        ("  00:01:00\r\n", 60.0),
    ],
)
def test_parse_timespan_tolerates_the_g_format_and_whitespace(text, seconds):
    """A colon after the days, a decimal comma and surrounding whitespace still parse."""
    assert parse_timespan(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "01:02", "1.2.03:04:05", "01:02:03.", "01:02:03 x"])
def test_parse_timespan_refuses_what_is_no_timespan(text):
    """Text that is not a TimeSpan raises ValueError."""
    with pytest.raises(ValueError, match="TimeSpan"):
        parse_timespan(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (93784.5, "1 day 2 hours 3 minutes"),
        (9000, "2 hours 30 minutes"),
        (45, "45 seconds"),
    ],
)
def test_humanize_uptime_gives_the_design_examples(seconds, text):
    """The client protocol's three examples, exactly."""
    assert humanize_uptime(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "1 second"),
        (2, "2 seconds"),
        (60, "1 minute"),
        (120, "2 minutes"),
        (3600, "1 hour"),
        (7200, "2 hours"),
        (86400, "1 day"),
        (2 * 86400, "2 days"),
        (86400 + 3600 + 60, "1 day 1 hour 1 minute"),
    ],
)
def test_humanize_uptime_gets_singular_and_plural_right(seconds, text):
    """One of a unit is singular, anything else plural."""
    assert humanize_uptime(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (7200 + 59, "2 hours"),
        (86400 + 5 * 60, "1 day 5 minutes"),
        (3 * 86400 + 4 * 3600, "3 days 4 hours"),
        (400 * 86400, "400 days"),
    ],
)
def test_humanize_uptime_drops_zero_components(seconds, text):
    """Zero units are left out, wherever they fall."""
    assert humanize_uptime(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [(61, "1 minute"), (119.9, "1 minute"), (3599, "59 minutes")])
def test_humanize_uptime_shows_seconds_only_under_a_minute(seconds, text):
    """From one minute on, seconds are dropped (rounded down, never up)."""
    assert humanize_uptime(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 seconds"), (0.4, "0 seconds"), (59.9, "59 seconds")])
def test_humanize_uptime_rounds_down_under_a_minute(seconds, text):
    """Under a minute the whole seconds are shown, rounded down; zero is "0 seconds"."""
    assert humanize_uptime(seconds) == text


@pytest.mark.parametrize("seconds", [-5.0, -86400.0, math.nan, math.inf, -math.inf])
def test_humanize_uptime_treats_impossible_values_as_zero(seconds):
    """Negative, NaN and infinite uptimes read as zero instead of failing."""
    assert humanize_uptime(seconds) == "0 seconds"


def test_parse_and_humanize_compose():
    """The status example's uptime becomes the design's first example."""
    assert humanize_uptime(parse_timespan("1.02:03:04.5060708")) == "1 day 2 hours 3 minutes"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6h", 21600.0), ("90m", 5400.0), ("1h30m", 5400.0), ("45s", 45.0), ("2d", 172800.0),
     (" 2H ", 7200.0), ("02:00:00", 7200.0), ("1.00:00:00", 86400.0)],
)
def test_a_configured_duration_is_read_in_units_or_as_a_timespan(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "6 h", "6 hours", "1m2h", "-01:00:00", "soon"])
def test_anything_else_is_not_a_duration(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
