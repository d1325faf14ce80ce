"""The process runtime's pipes under a misbehaving headless: an endless stderr line does not
wedge its console, and a headless that stops reading stdin fails a write instead of holding
it for ever."""

from __future__ import annotations

import asyncio
import sys

import pytest

from resofleet.agent.runtime import ProcessRuntime
from resofleet.agent.runtime import process as process_module

#: A child that writes a 70 000-byte stderr line with no newline (over asyncio's 64 KiB
#: line limit), 3 MB more of stderr, then one stdout line, then waits.
STDERR_FLOOD = (
    "import sys, time\n"
    "sys.stderr.write('x' * 70000); sys.stderr.flush()\n"
    "for _ in range(48): sys.stderr.write('y' * 65536 + '\\n')\n"
    "sys.stderr.flush()\n"
    "print('after the flood', flush=True)\n"
    "time.sleep(60)\n"
)


class Collected:
    def __init__(self) -> None:
        self.stdout = bytearray()
        self.more = asyncio.Event()

    def output(self, data: bytes) -> None:
        self.stdout += data
        self.more.set()

    def started(self) -> None: ...
    def exited(self, reason: str) -> None: ...
    def state(self, state: str) -> None: ...

    async def until(self, text: bytes, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while text not in self.stdout:
                self.more.clear()
                await self.more.wait()


async def test_a_huge_stderr_line_does_not_stop_the_console():
    """After a stderr line longer than any line buffer, and megabytes more, the headless's
    stdout still arrives: stderr is drained to the end, so the child never blocks on it."""
    seen = Collected()
    runtime = ProcessRuntime("noisy", seen, command=[sys.executable, "-c", STDERR_FLOOD], kind="process")
    await runtime.start()
    try:
        await seen.until(b"after the flood", timeout=20)
    finally:
        await runtime.close()


async def test_a_write_to_a_headless_that_stopped_reading_fails_in_time(monkeypatch):
    """A headless that no longer reads stdin (frozen): once its pipe is full, a write fails
    with ConnectionError after the write timeout instead of waiting for ever."""
    monkeypatch.setattr(process_module, "WRITE_TIMEOUT", 0.5)
    seen = Collected()
    frozen = "import time; print('up', flush=True); time.sleep(60)"
    runtime = ProcessRuntime("frozen", seen, command=[sys.executable, "-c", frozen], kind="process")
    await runtime.start()
    try:
        await seen.until(b"up", timeout=20)
        chunk = b"z" * 65536 + b"\n"
        with pytest.raises(ConnectionError, match="blocked"):
            async with asyncio.timeout(20):  # a few writes fill the pipe; then one blocks
                while True:
                    await runtime.write(chunk)
    finally:
        await runtime.close()
