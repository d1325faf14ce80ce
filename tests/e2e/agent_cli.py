"""A `resofleet agent` process serving one emulated server, as the failure tests run it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from .test_commands import START_TIMEOUT, resofleet
from .test_security_cli import env_for


@dataclass
class AgentCli:
    process: asyncio.subprocess.Process
    #: The agent's audit log and its stderr, under the test's directory.
    audit: Path
    log: Path
    #: The environment it runs with (a gateway process of the same fleet may share it).
    env: dict[str, str]

    async def serving(self, server: str = "eu-1") -> None:
        """Wait for the line saying it serves ``server``."""
        assert self.process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            line = await self.process.stdout.readline()
        assert f"serving {server}".encode() in line, (line, self.log.read_text())

    async def stop(self) -> None:
        """SIGTERM it, if still running, and wait for it to exit."""
        if self.process.returncode is None:
            self.process.terminate()
            async with asyncio.timeout(START_TIMEOUT):
                await self.process.wait()


async def start_agent(tmp_path: Path, *, bus_url: str, prefix: str, extra: str = "", **env: str) -> AgentCli:
    """Write a config for host-a serving `eu-1` (``bus_url``: a TOML value, one URL in
    quotes or a list) and start `resofleet agent` on it; the caller stops it."""
    audit = tmp_path / "agent-audit.jsonl"
    config = tmp_path / "fleet.toml"
    config.write_text(
        f'[bus]\nurl = {bus_url}\nprefix = "{prefix}"\n'
        f'[agent]\nname = "host-a"\naudit_log = "{audit}"\n'
        + extra
        + '[[servers]]\nid = "eu-1"\nruntime = "emulator"\n'
    )
    environment = env_for(tmp_path, RESOFLEET_CONFIG=str(config), **env)
    log = tmp_path / "agent.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *resofleet(), "agent", cwd=tmp_path, env=environment,
            stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )
    return AgentCli(process, audit, log, environment)
