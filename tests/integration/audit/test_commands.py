"""The audit log from the command line: `resofleet audit tail` and the agent's log of `resofleet up`,
each a real process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

from resofleet.audit import AuditLog
from tests.integration.gateway.client import Client

ROOT = Path(__file__).resolve().parents[3]
#: Seconds a child has to print what a test waits for, or to exit.
WAIT = 30.0
LISTENING = re.compile(rb"^resofleet: gateway listening on (ws://\S+/ws)")


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RESOFLEET_")}
    clean.update(extra)
    return clean


async def resofleet(*args: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``python -m resofleet ARGS`` to completion; (status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resofleet", *args, cwd=ROOT, env=environ or env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def write(path: Path, *commands: str, source: str = "agent", **options) -> None:
    audit = AuditLog(path, source=source, **options)
    await audit.start()
    for i, command in enumerate(commands):
        audit.record(who="alice", role="admin", client="10.0.0.5", server="one", command=command,
                     outcome="ok", duration=0.01 * i)
    await audit.close()


async def test_tail_prints_records_and_escapes_esc(tmp_path: Path):
    """tail prints one readable line per record; an ESC in a command is shown escaped, never raw."""
    path = tmp_path / "agent.jsonl"
    await write(path, "users", "say \x1b[2J\x1b]0;owned\x07hi", "kick Bob")
    status, out, err = await resofleet("audit", "tail", "--file", str(path))
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 3
    assert re.match(r'^\d{4}-\d\d-\d\dT[\d:.]+Z agent alice\(admin\)@10\.0\.0\.5 one ok "users" 0\.000s$', lines[0])
    assert '"say \\x1b[2J\\x1b]0;owned\\x07hi"' in lines[1]
    assert "\x1b" not in out and "\x07" not in out
    status, out, _ = await resofleet("audit", "tail", "--file", str(path), "-n", "1", "--json")
    assert status == 0 and json.loads(out)["command"] == "kick Bob"


async def test_tail_merges_the_default_files_by_time(tmp_path: Path):
    """Without --file, the gateway's and the agent's logs under RESOFLEET_AUDIT_DIR are merged by time."""
    def line(second: int, source: str, command: str) -> str:
        return json.dumps({"time": f"2026-11-25T22:00:0{second}.000Z", "source": source, "command": command}) + "\n"

    (tmp_path / "gateway.jsonl").write_text(line(1, "gateway", "first") + line(3, "gateway", "third"))
    (tmp_path / "agent.jsonl").write_text(line(2, "agent", "second"))
    status, out, _ = await resofleet("audit", "tail", environ=env(RESOFLEET_AUDIT_DIR=str(tmp_path)))
    assert status == 0
    assert [re.search(r'"(\w+)"', line).group(1) for line in out.splitlines()] == ["first", "second", "third"]
    assert [line.split()[1] for line in out.splitlines()] == ["gateway", "agent", "gateway"]


async def test_tail_reads_the_paths_of_the_config(tmp_path: Path):
    """--config names the logs: [agent] audit_log is read, a disabled gateway log is not looked for."""
    await write(tmp_path / "elsewhere.jsonl", "from-config")
    config = tmp_path / "resofleet.toml"
    config.write_text(f'[gateway]\naudit_log = false\n[agent]\naudit_log = "{tmp_path / "elsewhere.jsonl"}"\n')
    status, out, _ = await resofleet("audit", "tail", "--config", str(config))
    assert status == 0 and '"from-config"' in out


async def test_tail_missing_files_say_where_they_looked(tmp_path: Path):
    """A missing --file, or no default file, is one line and exit 1."""
    status, out, err = await resofleet("audit", "tail", "--file", str(tmp_path / "nope.jsonl"))
    assert (status, out) == (1, "")
    assert err == f"resofleet audit tail: no audit log at {tmp_path / 'nope.jsonl'}\n"
    status, _, err = await resofleet("audit", "tail", environ=env(RESOFLEET_AUDIT_DIR=str(tmp_path)))
    assert status == 1 and len(err.splitlines()) == 1
    assert str(tmp_path / "gateway.jsonl") in err and str(tmp_path / "agent.jsonl") in err


def _as_at_a_terminal() -> None:
    """In the child before exec: SIGINT at its default, as a shell's foreground job has it.
    A test run started in the background (``make test &``, nohup, some CI runners) ignores
    SIGINT, the child inherits that, Python then installs no KeyboardInterrupt handler and
    the Ctrl-C this test sends would be dropped."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_follow_prints_appended_records_across_rotation(tmp_path: Path):
    """--follow prints records appended after it started, including those past a rotation."""
    path = tmp_path / "agent.jsonl"
    await write(path, "before")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resofleet", "audit", "tail", "--file", str(path), "--follow",
        cwd=ROOT, env=env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=_as_at_a_terminal,
    )
    try:
        assert process.stdout is not None

        async def next_command() -> str:
            async with asyncio.timeout(WAIT):
                line = (await process.stdout.readline()).decode()
            return re.search(r'"([^"]*)"', line).group(1)

        assert await next_command() == "before"
        audit = AuditLog(path, source="agent", max_bytes=600, backups=3)
        await audit.start()
        for i in range(8):  # about 200 bytes each: rotates every few records
            audit.record(who="bob", role="operator", client="10.0.0.6", server="one",
                         command=f"after {i}", outcome="ok")
            await audit.flush()
        await audit.close()
        assert (tmp_path / "agent.jsonl.1").exists()
        assert [await next_command() for _ in range(8)] == [f"after {i}" for i in range(8)]
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(WAIT):
            status = await process.wait()
        assert process.stderr is not None
        assert (await process.stderr.read()) == b""  # no traceback on Ctrl-C
    assert status == 130


async def test_up_records_a_command_in_the_agent_log(tmp_path: Path):
    """`resofleet up --demo` writes the agent's log under RESOFLEET_AUDIT_DIR; a command is in it after shutdown."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resofleet", "up", "--demo", "--port", "0",
        cwd=tmp_path, env=env(RESOFLEET_AUDIT_DIR=str(tmp_path / "audit"), PYTHONPATH=str(ROOT)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(WAIT):
            match = LISTENING.match(await process.stdout.readline())
        assert match
        async with await Client.connect(match.group(1).decode()) as client:
            reply = await client.request({"type": "command", "command": "users"}, timeout=WAIT)
            assert reply["type"] == "command_response"
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    path = tmp_path / "audit" / "agent.jsonl"
    [record] = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert (record["source"], record["server"], record["command"], record["outcome"]) == ("agent", "demo", "users", "ok")
    assert record["client"] and record["who"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


async def test_an_unopenable_audit_log_stops_up_and_agent(tmp_path: Path):
    """`up` and `agent` refuse to start without the audit log they were told to keep: one line, exit 1."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    environ = env(RESOFLEET_AUDIT_DIR=str(blocker / "audit"))
    status, _, err = await resofleet("up", "--demo", "--port", "0", environ=environ)
    assert status == 1
    assert err.strip() == (
        f"resofleet: cannot open the audit log {blocker / 'audit' / 'agent.jsonl'}: Not a directory; "
        "set [agent] audit_log or RESOFLEET_AUDIT_DIR"
    )
    config = tmp_path / "agent.toml"
    config.write_text('[[servers]]\nid = "one"\nruntime = "emulator"\n')
    status, _, err = await resofleet("agent", "--config", str(config), "--amqp", "amqp://nobody@127.0.0.1:1/", environ=environ)
    assert status == 1
    assert err.splitlines()[-1].startswith("resofleet agent: cannot open the audit log ")
