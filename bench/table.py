"""The one output format of every benchmark: rows of figure, baseline and ratio.

A :class:`Row` is one measured figure, optionally next to the baseline measured in the same
run, and optionally a target (``ratio <= 1.5``, ``value >= 0.7 x baseline``, ``value < 2
ms``...) judged on the row itself. :class:`Table` prints them aligned, and serialises them
for ``--json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Row", "Table", "fmt"]


def fmt(value: float | None, unit: str = "") -> str:
    """A number with three significant digits and its unit (``"-"`` when missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        text = "0"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip() if unit else text


@dataclass
class Row:
    """One figure. ``baseline`` is what the figure is compared with (same run, same unit);
    ``ratio`` is value / baseline. ``target`` says what was asked (e.g. ``"ratio <= 1.5"``)
    and ``met`` whether this run met it (``None``: no target on this row)."""

    figure: str
    value: float | None
    unit: str = ""
    baseline_name: str = ""
    baseline: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    def judge(self, check: Callable[[Row], bool], target: str) -> Row:
        """Set ``target`` and whether this row meets it (nothing measured: not met)."""
        self.target = target
        try:
            self.met = self.value is not None and bool(check(self))
        except (TypeError, ZeroDivisionError):
            self.met = False
        return self

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


@dataclass
class Table:
    """The rows of one benchmark, with a title and notes printed under it."""

    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def extend(self, rows: Iterable[Row]) -> None:
        self.rows.extend(rows)

    def render(self) -> str:
        header = ("figure", "value", "baseline", "baseline value", "ratio", "target")
        body = []
        for r in self.rows:
            ratio = r.ratio
            verdict = "" if r.met is None else (" ok" if r.met else " MISS")
            body.append((
                r.figure,
                fmt(r.value, r.unit),
                r.baseline_name or "-",
                fmt(r.baseline, r.unit) if r.baseline_name else "-",
                f"{ratio:.2f}x" if ratio is not None else "-",
                f"{r.target}{verdict}" if r.target else "",
            ))
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
                  for i, h in enumerate(header)]
        lines = [f"== {self.title} =="]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        for b in body:
            lines.append("  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip())
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def markdown(self) -> str:
        out = [f"**{self.title}**", "",
               "| figure | value | baseline | baseline value | ratio | target |",
               "|---|---|---|---|---|---|"]
        for r in self.rows:
            ratio = r.ratio
            verdict = "" if r.met is None else (" ok" if r.met else " **MISS**")
            out.append(
                f"| {r.figure} | {fmt(r.value, r.unit)} | {r.baseline_name or '-'} | "
                f"{fmt(r.baseline, r.unit) if r.baseline_name else '-'} | "
                f"{f'{ratio:.2f}x' if ratio is not None else '-'} | "
                f"{r.target}{verdict} |"
            )
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "rows": [r.as_dict() for r in self.rows], "notes": self.notes}
