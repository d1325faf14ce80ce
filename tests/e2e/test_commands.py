"""The command line end to end: `resofleet up --demo`, `resofleet gateway`, `resofleet console`,
each as a real process, driven by a real websockets client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.integration.gateway.client import Client, http_get

#: Seconds a command has to print its "listening on" line (the demo starts an emulator).
START_TIMEOUT = 30.0
#: Seconds a command has to exit after SIGTERM.
STOP_TIMEOUT = 15.0
LISTENING = re.compile(rb"^resofleet: gateway listening on (ws://\S+/ws)")


def resofleet() -> list[str]:
    script = Path(sys.executable).with_name("resofleet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "resofleet"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's RESOFLEET_ settings; audit logs go to a
    directory of this test run, never to the user's own state directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESOFLEET_")}
    env["RESOFLEET_AUDIT_DIR"] = os.path.join(tempfile.gettempdir(), f"resofleet-tests-{os.getpid()}")
    env.update(extra)
    return env


class Running:
    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url
        self.port = int(url.rsplit(":", 1)[1].split("/")[0])

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_TIMEOUT):
            return await self.process.wait()


@contextlib.asynccontextmanager
async def running(*args: str, cwd: Path, env: dict[str, str]) -> AsyncIterator[Running]:
    process = await asyncio.create_subprocess_exec(
        *resofleet(), *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            line = await process.stdout.readline()
        match = LISTENING.match(line)
        assert match, f"expected the listening line, got {line!r}"
        yield Running(process, match.group(1).decode())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_up_demo_serves_the_seed_session(tmp_path):
    """`resofleet up --demo` from an empty directory answers get_worlds, get_status and users."""
    async with running("up", "--demo", "--port", "0", cwd=tmp_path, env=clean_env()) as up:
        assert up.url.startswith("ws://127.0.0.1:")
        async with await Client.connect(up.url) as client:
            await client.send({"type": "get_worlds"})
            worlds = await client.expect(lambda m: m["type"] == "worlds_update", timeout=20)
            assert worlds["server"] == "demo" and worlds["output"]
            assert all({"name", "users", "users_list"} <= set(w) for w in worlds["output"])
            await client.send({"type": "get_status"})
            status = await client.expect(lambda m: m["type"] == "status_update" and "id" not in m)
            assert status["status"]["status"] == "running"
            await client.send({"type": "command", "command": "users"})
            users = await client.expect(lambda m: m["type"] == "command_response")
            assert (users["command"], users["server"]) == ("users", "demo")
            assert "DemoHost" in users["output"]

            assert await up.stop() == 0
            with pytest.raises(ConnectionClosed) as info:
                async with asyncio.timeout(STOP_TIMEOUT):
                    while True:
                        await client.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001


async def test_console_runs_a_script_against_up(tmp_path):
    """`resofleet console` with commands on stdin prints their answers; exit 1 if one failed."""
    async with running("up", "--demo", "--port", "0", cwd=tmp_path, env=clean_env()) as up:
        console = await asyncio.create_subprocess_exec(
            *resofleet(), "console", "--url", up.url, cwd=tmp_path, env=clean_env(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await console.communicate(b"/worlds\n/status\nusers\n/servers\n/server nope\nversion\n")
        assert console.returncode == 1, err.decode()  # the last request failed
        text = out.decode()
        assert "Harbor Lounge" in text and "DemoHost" in text
        assert "running" in text and "cpu" in text
        assert "error [nope] (server_offline)" in text

        console = await asyncio.create_subprocess_exec(
            *resofleet(), "console", "--url", up.url + "/demo", cwd=tmp_path, env=clean_env(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await console.communicate(b"listbans\n")
        assert console.returncode == 0, err.decode()
        assert out.decode().startswith("no bans") or "(U-" in out.decode()
        assert await up.stop() == 0


async def test_gateway_over_rabbitmq_is_ready_and_stops_on_sigterm(tmp_path, amqp_url):
    """`resofleet gateway --amqp URL` listens, is ready, answers ping, exits 0 on SIGTERM."""
    args = ("gateway", "--amqp", amqp_url, "--port", "0")
    async with running(*args, cwd=tmp_path, env=clean_env()) as gateway:
        assert await http_get(gateway.port, "/readyz") == (200, "ready\n")
        async with await Client.connect(gateway.url) as client:
            assert (await client.request({"type": "ping"}))["type"] == "pong"
        assert await gateway.stop() == 0


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (("gateway",), {}, "needs a message bus"),
        (("gateway", "--amqp", "http://x"), {}, "amqp://"),
        (("up", "--config", "missing.toml"), {}, "missing.toml: no such file"),
        (("gateway", "--tls-cert", "c.pem"), {"RESOFLEET_AMQP_URL": "amqp://x/"}, "go together"),
    ],
)
async def test_bad_invocations_fail_with_one_clear_line(tmp_path, args, env, words):
    """A missing bus, a bad URL or a missing config file: one line naming it, exit 2."""
    process = await asyncio.create_subprocess_exec(
        *resofleet(), *args, cwd=tmp_path, env=clean_env(**env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(STOP_TIMEOUT):
        out, err = await process.communicate()
    assert process.returncode == 2
    lines = err.decode().splitlines()
    assert len(lines) == 1 and words in lines[0] and lines[0].startswith("resofleet: ")
