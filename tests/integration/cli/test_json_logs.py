"""`--log-format json` and `[log] format`: a real `resofleet up` logging one JSON object per
line, with the redaction and the one-line rule of the text format."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.integration.gateway.client import Client
from tests.support.lines import LoggedProcess

#: Seconds `up` has to start (Python start-up, an emulator started), log what a test waits
#: for, or exit after SIGTERM.
WAIT = 30.0
LISTENING = re.compile(r"^resofleet: gateway listening on (ws://\S+/ws)")
#: The keys every JSON line has.
KEYS = {"time", "level", "logger", "message"}
#: UTC, ISO 8601, milliseconds.
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
#: A token a browser would put in the URL; it must never reach the log.
TOKEN = "eyJleak.leak.leak"


class Up(LoggedProcess):
    """A running `resofleet up --demo`; its stderr collected line by line, line ends kept."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        super().__init__(process, keep_newlines=True)
        self.url = ""

    async def listening(self) -> None:
        assert self.process.stdout is not None
        async with asyncio.timeout(WAIT):
            line = (await self.process.stdout.readline()).decode()
        match = LISTENING.match(line)
        assert match, (line, self.log.lines)
        self.url = match.group(1)

    async def json_line_where(self, **fields: Any) -> dict[str, Any]:
        """The first JSON line whose fields include ``fields`` (message: a substring)."""

        def matches(line: str) -> bool:
            record = json.loads(line)
            return all(
                value in record.get(key, "") if key == "message" else record.get(key) == value
                for key, value in fields.items()
            )

        return json.loads(await self.log.first(matches, timeout=WAIT))


@asynccontextmanager
async def up(tmp_path: Path, *args: str, level: str = "DEBUG") -> AsyncIterator[Up]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESOFLEET_")}
    env.update(RESOFLEET_LOG_LEVEL=level, RESOFLEET_AUDIT_DIR=str(tmp_path / "audit"))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resofleet", "up", "--demo", "--port", "0", *args,
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    running = Up(process)
    try:
        await running.listening()
        yield running
    finally:
        await running.kill()


def assert_all_json(lines: list[str]) -> list[dict[str, Any]]:
    """Every line parses as one JSON object with the keys, and a UTC time."""
    records = []
    for line in lines:
        assert line.endswith("\n") and "\n" not in line[:-1], line
        record = json.loads(line)
        assert KEYS <= record.keys(), record
        assert TIME.match(record["time"]), record
        records.append(record)
    return records


async def test_every_line_is_a_json_object_and_tokens_and_line_breaks_stay_out(tmp_path: Path) -> None:
    """With --log-format json every stderr line is one JSON object (time, level, logger,
    message, and conn/server where they apply); a ?token= is redacted; a refused server id
    with a line break in it stays on one line, in the `server` field."""
    async with up(tmp_path, "--log-format", "json") as running:
        async with await Client.connect(f"{running.url}?token={TOKEN}") as client:
            reply = await client.request({"type": "get_status", "server": "evil\nINFO forged"})
            assert reply["type"] == "error"
        # websockets logs the handshake's request line at DEBUG, query string and all.
        handshake = await running.json_line_where(message="GET /ws?token=")
        assert "token=[redacted]" in handshake["message"]
        refused = await running.json_line_where(message="refused get_status")
        assert refused["server"] == "evil\\nINFO forged"
        assert refused["conn"] and not refused["message"].startswith("conn=")
        assert refused["level"] == "INFO" and refused["logger"].startswith("resofleet.gateway")
        assert await running.stop(timeout=WAIT) == 0
    records = assert_all_json(running.log.lines)
    assert not [line for line in running.log.lines if "leak.leak" in line]
    assert not [r for r in records if r["message"].startswith("INFO forged")]


async def test_the_config_file_chooses_json_and_the_flag_overrides_it(tmp_path: Path) -> None:
    """[log] format = "json" in the configuration makes the lines JSON; --log-format text
    on the command line wins over the file."""
    config = tmp_path / "fleet.toml"
    config.write_text('[log]\nformat = "json"\n', encoding="utf-8")
    async with up(tmp_path, "--config", str(config), level="INFO") as running:
        await running.json_line_where(level="WARNING", message="no secret configured")
        assert await running.stop(timeout=WAIT) == 0
    assert_all_json(running.log.lines)
    async with up(tmp_path, "--config", str(config), "--log-format", "text", level="INFO") as running:
        line = await running.log.first(lambda line: "no secret configured" in line, timeout=WAIT)
        assert " WARNING resofleet: no secret configured" in line and not line.startswith("{")
        assert await running.stop(timeout=WAIT) == 0
