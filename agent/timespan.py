""".NET TimeSpan text in, seconds out; seconds in, English uptime text out.

The headless prints a world's uptime as a .NET TimeSpan in the invariant "c" format,
``[-][d.]hh:mm:ss[.fffffff]``: the day part only from 24 hours on, the fraction only when
it is not zero. Clients get it as English text, largest units first (the client protocol's
protocol v1, ``worlds_update``): ``"1 day 2 hours 3 minutes"``, ``"2 hours 30 minutes"``,
``"45 seconds"``.

Tolerance: :func:`parse_timespan` also reads the culture-dependent "g" shapes
(``d:hh:mm:ss`` with a colon after the days, ``,`` before the fraction), surrounding
whitespace, and any number of hours/minutes/seconds digits (the values are added up, not
range-checked): a reading that is slightly off is more useful than none. Anything else
raises :class:`ValueError`.

Decisions for :func:`humanize_uptime`:

- Whole units only, rounded down: 59.9 s is ``"59 seconds"``, 119 s is ``"1 minute"``.
- Seconds are shown only under a minute; from one minute on, the text is days, hours and
  minutes with the zero ones left out (``"2 hours"``, ``"1 day 5 minutes"``).
- Exactly one minute is ``"1 minute"``; zero is ``"0 seconds"`` (a world that has just
  started still has an uptime, and "0 seconds" reads as one).
- Negative, NaN and infinite inputs count as zero: an uptime is never negative, and a
  broken reading must not break the event it rides in.

Durations in configuration (schedules' ``every`` and ``max_wait``) are read by
:func:`parse_duration`: a number and a unit, several of them largest first (``"6h"``,
``"90m"``, ``"1h30m"``, ``"45s"``, ``"2d"``), or a TimeSpan as above (``"02:00:00"``).
"""

from __future__ import annotations

import math
import re
from typing import Final

__all__ = ["humanize_uptime", "parse_duration", "parse_timespan"]

SECONDS_PER_MINUTE: Final = 60
SECONDS_PER_HOUR: Final = 60 * SECONDS_PER_MINUTE
SECONDS_PER_DAY: Final = 24 * SECONDS_PER_HOUR

#: ``[-][d.|d:]hh:mm:ss[.fffffff|,fffffff]``. The optional day group is tried first and
#: given back by backtracking when only three fields follow, so ``02:03:04`` has no days.
_TIMESPAN: Final = re.compile(
    r"\s*(-)?(?:(\d+)[.:])?(\d+):(\d+):(\d+)(?:[.,](\d+))?\s*"
)

#: One or more ``<number><unit>`` parts, largest unit first, as operators write durations.
_DURATION: Final = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")

#: (unit name, seconds per unit), largest first: the order the text lists them in.
_UNITS: Final = (
    ("day", SECONDS_PER_DAY),
    ("hour", SECONDS_PER_HOUR),
    ("minute", SECONDS_PER_MINUTE),
)


def parse_timespan(text: str) -> float:
    """Seconds in a .NET TimeSpan such as ``1.02:03:04.5060708`` (negative if signed).

    Raises :class:`ValueError` when ``text`` is not a TimeSpan.
    """
    match = _TIMESPAN.fullmatch(text)
    if match is None:
        raise ValueError(f"not a .NET TimeSpan: {text!r}")
    sign, days, hours, minutes, seconds, fraction = match.groups()
    total = (
        int(days or 0) * SECONDS_PER_DAY
        + int(hours) * SECONDS_PER_HOUR
        + int(minutes) * SECONDS_PER_MINUTE
        + int(seconds)
    )
    result = total + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
    return -result if sign else float(result)


def parse_duration(text: str) -> float:
    """Seconds in ``"6h"``, ``"90m"``, ``"1h30m"``, ``"45s"``, ``"2d"`` or a TimeSpan
    (``"02:00:00"``). Raises :class:`ValueError` for anything else, and for a negative
    TimeSpan (a duration is never negative)."""
    stripped = text.strip().lower()
    match = _DURATION.fullmatch(stripped)
    if match is not None and stripped:
        days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
        return float(
            days * SECONDS_PER_DAY + hours * SECONDS_PER_HOUR + minutes * SECONDS_PER_MINUTE + seconds
        )
    try:
        value = parse_timespan(text)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (write e.g. 6h, 90m, 1h30m, 45s or 02:00:00)") from None
    if value < 0:
        raise ValueError(f"a duration is never negative, not {text!r}")
    return value


def _count(value: int, unit: str) -> str:
    return f"{value} {unit}" if value == 1 else f"{value} {unit}s"


def humanize_uptime(seconds: float) -> str:
    """English uptime, largest units first: ``"1 day 2 hours 3 minutes"``, ``"45 seconds"``."""
    whole = int(seconds) if math.isfinite(seconds) and seconds > 0 else 0
    if whole < SECONDS_PER_MINUTE:
        return _count(whole, "second")
    parts = []
    for unit, size in _UNITS:
        value, whole = divmod(whole, size)
        if value:
            parts.append(_count(value, unit))
    return " ".join(parts)
