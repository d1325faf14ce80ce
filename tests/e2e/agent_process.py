"""An agent in its own process over RabbitMQ, for tests that kill it.

Run as ``python -m tests.e2e.agent_process URL PREFIX SERVER [EMULATOR ARGS...]``: serves
one emulated server under the topology ``PREFIX``, prints ``ready`` once it announced
itself, and runs until killed. (``resofleet agent`` has no topology prefix: tests sharing
one broker each need their own names.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Seconds the child has to start its emulator and announce itself.
START_TIMEOUT = 20.0


class AgentProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, url: str, prefix: str, server: str, *emulator_args: str) -> AsyncIterator[AgentProcess]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.e2e.agent_process", url, prefix, server, *emulator_args,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, start_new_session=True,
        )
        child = cls(process)
        try:
            assert process.stdout is not None
            async with asyncio.timeout(START_TIMEOUT):
                line = await process.stdout.readline()
            assert line.strip() == b"ready", f"agent process said {line!r}"
            yield child
        finally:
            child.kill()
            await process.wait()

    def kill(self) -> None:
        """SIGKILL the agent and its emulator (its process group): no goodbye on the bus."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


async def _main(url: str, prefix: str, server: str, emulator_args: list[str]) -> None:
    from resofleet.agent import Agent
    from resofleet.bus import AmqpBus
    from resofleet.contracts import Topology
    from resofleet.agent.settings import AgentSettings, ServerConfig

    bus = AmqpBus(url, topology=Topology(prefix=prefix), name=f"test-agent-{server}")
    await bus.start()
    config = ServerConfig(id=server, runtime="emulator", scenario="default", emulator_args=tuple(emulator_args))
    agent = Agent(bus, servers=[config], settings=AgentSettings(name=f"proc-{server}"), announce_interval=0.3)
    await agent.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
