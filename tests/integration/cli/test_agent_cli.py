"""`resofleet agent` as an operator runs it: a real child process, a real broker, a real
headless process whose stderr the agent logs."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from resofleet.contracts import Topology
from tests.support.lines import LoggedProcess

#: Seconds the agent has to log what a test waits for (Python start-up, a broker
#: connection, a child process started and ended).
LOG_TIMEOUT = 30.0
#: Seconds the agent has to exit after SIGTERM.
STOP_TIMEOUT = 15.0
#: What the headless prints on its stderr: the request line of a browser and a script's
#: header, each with a token in it.
LEAKED = "GET /ws?token=eyJleak.leak.leak HTTP/1.1\nAuthorization: Bearer eyJbearer.leak.leak\n"

pytestmark = pytest.mark.amqp


class Agent(LoggedProcess):
    """A running `resofleet agent`; its stderr collected line by line as it comes."""

    async def serving(self) -> None:
        """Wait for the line saying it serves its servers (then it handles SIGTERM)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(LOG_TIMEOUT):
            line = await self.process.stdout.readline()
        assert b" serving " in line, (line, self.log.lines)

    async def line_where(self, predicate: Callable[[str], bool]) -> str:
        """The first log line (logged so far or next) for which ``predicate`` holds."""
        return await self.log.first(predicate, timeout=LOG_TIMEOUT)


@asynccontextmanager
async def agent(tmp_path: Path, amqp_url: str, topology: Topology, *, log_level: str) -> AsyncIterator[Agent]:
    """`resofleet agent` serving one headless that prints :data:`LEAKED` on stderr and
    exits with 3 (so the agent also has a warning and an error to log)."""
    headless = [sys.executable, "-c", f"import sys; sys.stderr.write({LEAKED!r}); sys.exit(3)"]
    config = tmp_path / "agent.toml"
    config.write_text(
        f"[bus]\nprefix = {json.dumps(topology.prefix)}\n"
        "[agent]\nname = \"cli-test\"\naudit_log = false\n"
        f"[[servers]]\nid = \"leaky\"\nruntime = \"process\"\ncommand = {json.dumps(headless)}\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESOFLEET_")}
    env.update(RESOFLEET_AMQP_URL=amqp_url, RESOFLEET_LOG_LEVEL=log_level)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resofleet", "agent", "--config", str(config), env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    running = Agent(process)
    try:
        await running.serving()
        yield running
    finally:
        await running.kill()


async def test_agent_redacts_tokens_from_its_log(tmp_path: Path, amqp_url: str, topology: Topology) -> None:
    """At RESOFLEET_LOG_LEVEL=debug the agent logs its headless's stderr, with every token
    replaced by [redacted]."""
    async with agent(tmp_path, amqp_url, topology, log_level="debug") as running:
        query = await running.line_where(lambda line: "stderr: GET /ws?token=" in line)
        bearer = await running.line_where(lambda line: "stderr: Authorization: Bearer" in line)
        assert " DEBUG " in query and query.endswith("GET /ws?token=[redacted] HTTP/1.1")
        assert bearer.endswith("Authorization: Bearer [redacted]")
        assert await running.stop(timeout=STOP_TIMEOUT) == 0
    assert not [line for line in running.log.lines if "leak.leak" in line]


async def test_agent_logs_at_the_level_asked_for(tmp_path: Path, amqp_url: str, topology: Topology) -> None:
    """At RESOFLEET_LOG_LEVEL=ERROR the agent's errors are logged, its warnings and
    everything below them are not."""
    async with agent(tmp_path, amqp_url, topology, log_level="ERROR") as running:
        # The headless's exit is logged as a warning before the error about its console.
        await running.line_where(lambda line: " ERROR " in line and "did not become ready" in line)
        assert await running.stop(timeout=STOP_TIMEOUT) == 0
    below = [line for line in running.log.lines if any(f" {level} " in line for level in ("WARNING", "INFO", "DEBUG"))]
    assert below == []
