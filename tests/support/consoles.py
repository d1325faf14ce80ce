"""Start the emulator as a real child process with a real console driver on top."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from resofleet.agent.console import ConsoleDriver
from resofleet.agent.runtime import ProcessRuntime, emulator_command


@dataclass
class Console:
    """A running emulator, its driver, and every line the driver streamed."""

    runtime: ProcessRuntime
    driver: ConsoleDriver
    lines: list[str] = field(default_factory=list)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    exit_reasons: list[str] = field(default_factory=list)


class _Listener:
    def __init__(self) -> None:
        self.console: Console | None = None

    def output(self, data: bytes) -> None:
        assert self.console is not None
        self.console.driver.feed(data)

    def started(self) -> None:
        assert self.console is not None
        c = self.console
        c.driver = ConsoleDriver(c.runtime.write, on_line=c.lines.append, name="test")

    def exited(self, reason: str) -> None:
        assert self.console is not None
        self.console.exit_reasons.append(reason)
        self.console.driver.feed_eof(reason)
        self.console.exited.set()

    def state(self, state: str) -> None:
        pass


async def start_console(scenario: str = "default", args: Sequence[str] = (), *, sync: bool = True) -> Console:
    listener = _Listener()
    runtime = ProcessRuntime("test", listener, command=emulator_command(scenario, args), kind="emulator")
    console = Console(runtime, ConsoleDriver(runtime.write, name="test"))
    listener.console = console
    await runtime.start()
    if sync:
        await console.driver.start(timeout=30)
    return console
