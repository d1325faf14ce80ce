"""Lines that arrive over time (a console's stream, a process's log), waited for by content."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Lines:
    """Collects lines as they come (:meth:`add`); :meth:`first` waits for one that matches."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ended = False
        self._more = asyncio.Event()

    def add(self, line: str) -> None:
        self.lines.append(line)
        self._more.set()

    def end(self) -> None:
        """No more lines will come: a wait for one that never came fails at once."""
        self.ended = True
        self._more.set()

    async def first(self, predicate: Callable[[str], bool], *, timeout: float) -> str:
        """The first line (collected so far or still to come) that ``predicate`` accepts."""
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                if self.ended:
                    raise AssertionError(f"no such line came; these did: {self.lines}")
                self._more.clear()
                await self._more.wait()
