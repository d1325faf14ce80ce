"""Lines that arrive over time (a console's stream, a process's log), waited for by content."""

from __future__ import annotations

import asyncio
import contextlib
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


class LoggedProcess:
    """A child process whose stderr is collected line by line in :attr:`log` as it comes;
    ``keep_newlines``: store each line as read, line end included."""

    def __init__(self, process: asyncio.subprocess.Process, *, keep_newlines: bool = False) -> None:
        self.process = process
        self.log = Lines()
        self._keep_newlines = keep_newlines
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while raw := await self.process.stderr.readline():
            line = raw.decode()
            self.log.add(line if self._keep_newlines else line.rstrip("\n"))
        self.log.end()

    async def stop(self, *, timeout: float) -> int:
        """SIGTERM; its exit status once it exited (and everything it logged is read)."""
        self.process.terminate()
        async with asyncio.timeout(timeout):
            await self._reader
            return await self.process.wait()

    async def kill(self) -> None:
        """Make sure it is gone (a failed test may leave it running)."""
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
