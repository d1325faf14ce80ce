"""A real emulator child process with pipes, read with deadlines (never sleep-and-hope)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
READ_TIMEOUT_S = 5.0
"""Generous for a loaded CI machine; a passing read takes milliseconds."""
EXIT_TIMEOUT_S = 5.0


class Console:
    """The emulator as a child process: send lines, expect exact bytes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.buffer = b""

    async def _fill(self, deadline: float) -> bool:
        assert self.process.stdout is not None
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        try:
            async with asyncio.timeout(remaining):
                chunk = await self.process.stdout.read(65536)
        except TimeoutError:
            return False
        if not chunk:
            return False
        self.buffer += chunk
        return True

    async def read_until(self, marker: bytes, timeout: float = READ_TIMEOUT_S) -> bytes:
        """Everything up to and including ``marker``; fails with what arrived on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout
        while marker not in self.buffer:
            if not await self._fill(deadline):
                raise AssertionError(f"{marker!r} never came; got {self.buffer[-2000:]!r}")
        end = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    async def expect(self, expected: bytes, timeout: float = READ_TIMEOUT_S) -> None:
        """The next bytes are exactly ``expected`` (and nothing is assumed after them)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.buffer) < len(expected):
            if not expected.startswith(self.buffer) or not await self._fill(deadline):
                break
        data, self.buffer = self.buffer[: len(expected)], self.buffer[len(expected):]
        assert data == expected

    async def ready(self, prompt: bytes = b"Night Market>") -> bytes:
        """The startup log up to the first prompt."""
        return await self.read_until(b"World running...\n" + prompt)

    def send(self, *lines: str, end: str = "\n") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("".join(line + end for line in lines).encode())

    async def read_to_eof(self, timeout: float = EXIT_TIMEOUT_S) -> bytes:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            rest = await self.process.stdout.read()
        data, self.buffer = self.buffer + rest, b""
        return data

    async def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    async def wait(self, timeout: float = EXIT_TIMEOUT_S) -> int:
        async with asyncio.timeout(timeout):
            return await self.process.wait()

    async def stderr(self) -> bytes:
        assert self.process.stderr is not None
        async with asyncio.timeout(EXIT_TIMEOUT_S):
            return await self.process.stderr.read()


Spawn = Callable[..., Awaitable[Console]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Start ``python -m emulator ARGS`` (or another argv) and kill what is left at the end."""
    consoles: list[Console] = []

    async def start(*args: str, argv: list[str] | None = None) -> Console:
        command = argv if argv is not None else [sys.executable, "-m", "resofleet.emulator", *args]
        process = await asyncio.create_subprocess_exec(
            *command, cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
        console = Console(process)
        consoles.append(console)
        return console

    yield start
    for console in consoles:
        if console.process.returncode is None:
            console.process.kill()
        await console.process.wait()


@pytest.fixture
async def console(spawn: Spawn) -> Console:
    """The default scenario, seeded, clock frozen, ready at its first prompt."""
    console = await spawn("--seed", "1", "--frozen-clock")
    await console.ready()
    return console
