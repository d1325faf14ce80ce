"""The console driver alone against the emulator: no bus, no gateway (a baseline).

The same :class:`resofleet.agent.runtime.ProcessRuntime` and :class:`resofleet.agent.console.ConsoleDriver`
the agent uses, wired together directly, as the agent's own :class:`~resofleet.agent.server.
ManagedServer` does minus the bus, the pollers and the output log.
"""

from __future__ import annotations

from collections.abc import Sequence

from resofleet.agent.console import ConsoleDriver
from resofleet.agent.runtime import ProcessRuntime, emulator_command

__all__ = ["DirectConsole"]


class DirectConsole:
    """An emulator child process and a driver on its pipes."""

    def __init__(self, name: str, scenario: str = "default", args: Sequence[str] = ()) -> None:
        self.runtime = ProcessRuntime(
            name, self, command=emulator_command(scenario, args), kind="emulator"
        )
        self.driver = ConsoleDriver(self.runtime.write, name=name)

    # RuntimeListener
    def output(self, data: bytes) -> None:
        self.driver.feed(data)

    def started(self) -> None:
        self.driver = ConsoleDriver(self.runtime.write, name=self.runtime.server)

    def exited(self, reason: str) -> None:
        self.driver.feed_eof(reason)

    def state(self, state: str) -> None:
        pass

    async def start(self) -> DirectConsole:
        await self.runtime.start()
        await self.driver.start(timeout=30)
        return self

    async def close(self) -> None:
        await self.runtime.close()
