"""Security end to end through the command line: secure by default.

`resofleet gateway` and `resofleet up` refuse to listen beyond loopback without a secret;
on loopback without one they run open and say so once; with a secret they require tokens
(also on 0.0.0.0); with `--tls-cert/--tls-key` they serve wss. Each is a real process.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from resofleet.gateway.tokens import new_secret
from tests.integration.gateway.client import Client, handshake_status

from .test_commands import START_TIMEOUT, STOP_TIMEOUT, clean_env, resofleet

LISTENING = re.compile(rb"^resofleet: gateway listening on (wss?)://([^/\s]+):(\d+)/ws(.*)$")


class Started:
    def __init__(self, process: asyncio.subprocess.Process, scheme: str, port: int, note: str) -> None:
        self.process, self.scheme, self.port, self.note = process, scheme, port, note

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/ws"

    async def stop(self) -> tuple[int, str]:
        """SIGTERM; the exit code and everything the process wrote on stderr."""
        self.process.terminate()
        async with asyncio.timeout(STOP_TIMEOUT):
            assert self.process.stderr is not None
            err = await self.process.stderr.read()
            return await self.process.wait(), err.decode()


@contextlib.asynccontextmanager
async def started(*args: str, cwd: Path, env: dict[str, str]) -> AsyncIterator[Started]:
    process = await asyncio.create_subprocess_exec(
        *resofleet(), *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            line = await process.stdout.readline()
        match = LISTENING.match(line.strip())
        if match is None:
            assert process.stderr is not None
            raise AssertionError(f"expected the listening line, got {line!r}; stderr: {await process.stderr.read()!r}")
        yield Started(process, match.group(1).decode(), int(match.group(3)), match.group(4).decode())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(RESOFLEET_AUDIT_DIR=str(tmp_path / "audit"), **extra)


async def run_to_exit(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *resofleet(), *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(START_TIMEOUT):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def issue(tmp_path: Path, secret: str, role: str) -> str:
    code, out, err = await run_to_exit("token", "issue", "--role", role, "--ttl", "1h", cwd=tmp_path,
                                       env=env_for(tmp_path, RESOFLEET_SECRET=secret))
    assert code == 0, err
    return out.strip()


@pytest.mark.parametrize("command", [("gateway",), ("up", "--demo")], ids=["gateway", "up"])
async def test_listening_beyond_loopback_without_a_secret_is_refused_with_one_line(tmp_path, amqp_url, command):
    """`--host 0.0.0.0` without a secret exits non-zero with one line saying how to make one."""
    args = (*command, "--host", "0.0.0.0", "--port", "0")
    if command[0] == "gateway":
        args += ("--amqp", amqp_url)
    code, out, err = await run_to_exit(*args, cwd=tmp_path, env=env_for(tmp_path))
    lines = err.splitlines()
    assert code != 0 and "listening" not in out
    assert len(lines) == 1 and lines[0].startswith("resofleet: "), err
    assert "0.0.0.0" in lines[0] and "RESOFLEET_SECRET" in lines[0] and "resofleet token secret" in lines[0]


async def test_on_loopback_without_a_secret_up_runs_open_and_says_so_once(tmp_path):
    """`resofleet up` on loopback without a secret serves every client as an admin, and
    warns once, not per connection."""
    async with started("up", "--demo", "--port", "0", cwd=tmp_path, env=env_for(tmp_path)) as up:
        assert "open" in up.note
        for _ in range(3):
            async with await Client.connect(up.url) as client:
                me = await client.request({"type": "auth", "token": "ignored"})
                assert (me["type"], me["role"]) == ("authenticated", "admin")
                reply = await client.request({"type": "command", "command": "message Mira hi"}, timeout=20)
                assert reply["output"].endswith("Message sent!")
        code, err = await up.stop()
    assert code == 0
    warnings = [line for line in err.splitlines() if "WARNING" in line and "secret" in line.lower()]
    assert len(warnings) == 1 and "open" in warnings[0], err
    per_connection = [line for line in err.splitlines() if "conn=" in line and "secret" in line.lower()]
    assert per_connection == [], per_connection


@pytest.mark.parametrize("command", ["gateway", "up"])
async def test_with_a_secret_on_all_interfaces_tokens_are_required(tmp_path, amqp_url, command):
    """With RESOFLEET_SECRET, `--host 0.0.0.0` listens; a client needs a token from
    `resofleet token issue` with the same secret, and its role applies."""
    secret = new_secret()
    args = ["--host", "0.0.0.0", "--port", "0"]
    args = ["gateway", *args, "--amqp", amqp_url] if command == "gateway" else ["up", "--demo", *args]
    env = env_for(tmp_path, RESOFLEET_SECRET=secret, RESOFLEET_BUS_PREFIX=f"cli-{tmp_path.name[-12:]}.")
    async with started(*args, cwd=tmp_path, env=env) as gateway:
        assert "tokens" in gateway.note
        async with await Client.connect(gateway.url) as anonymous:
            refused = await anonymous.request({"type": "get_servers"})
            assert refused["code"] == "unauthenticated"
        viewer = await issue(tmp_path, secret, "viewer")
        async with await Client.connect(f"{gateway.url}?token={viewer}") as client:
            listed = await client.request({"type": "get_servers"})
            assert listed["type"] == "servers_update"
            if command == "up":
                forbidden = await client.request({"type": "command", "command": "message Mira hi"}, timeout=20)
                assert (forbidden["code"], "admin" in forbidden["message"]) == ("forbidden", True)
        stranger = await issue(tmp_path, new_secret(), "admin")
        assert await handshake_status(gateway.url, additional_headers={"Authorization": f"Bearer {stranger}"}) == 401
        code, err = await gateway.stop()
    assert code == 0, err
    assert viewer not in err and stranger not in err


async def test_tls_cert_and_key_serve_wss_with_tokens(tmp_path):
    """`resofleet up --tls-cert --tls-key` with a secret serves wss://, and a token works over it."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    secret = new_secret()
    env = env_for(tmp_path, RESOFLEET_SECRET=secret)
    args = ("up", "--demo", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key))
    async with started(*args, cwd=tmp_path, env=env) as up:
        assert up.scheme == "wss"
        trusted = ssl.create_default_context(cafile=str(cert))
        token = await issue(tmp_path, secret, "operator")
        async with await Client.connect(up.url, ssl=trusted, additional_headers={"Authorization": f"Bearer {token}"}) as client:
            reply = await client.request({"type": "command", "command": "gc"}, timeout=20)
            assert reply["output"] == "GC finished"
        with pytest.raises(ssl.SSLError):  # a client that does not trust the certificate
            await Client.connect(up.url, ssl=ssl.create_default_context())
        code, err = await up.stop()
    assert code == 0, err


async def test_client_text_in_log_lines_is_escaped(tmp_path):
    """A refused request whose server id carries a line break, a forged log line and a
    terminal escape sequence is logged on one line, with those characters escaped: nothing a
    client sends can add a line to the log or drive the operator's terminal."""
    forged = "2026-11-30 14:00:00,000 ERROR forged"
    async with started("up", "--demo", "--port", "0", cwd=tmp_path, env=env_for(tmp_path)) as up:
        async with await Client.connect(up.url) as client:
            for request in (
                {"type": "get_status", "server": f"evil\n{forged}\x1b[2J"},
                {"type": "subscribe", "servers": [f"evil\r\n{forged}\x9b31m"]},
            ):
                assert (await client.request(request))["code"] == "unknown_server"
        code, logged = await up.stop()
    assert not [line for line in logged.splitlines() if line.startswith(forged)], logged
    assert "\x1b" not in logged and "\x9b" not in logged and "\r" not in logged
    assert "\\x1b[2J" in logged  # the attempt is still readable
