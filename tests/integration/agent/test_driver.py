"""The console driver against the emulator as a real child process, over pipes and TTY,
with engine noise landing inside replies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from resofleet.agent.console import ConsoleDriver
from resofleet.agent.errors import ConsoleClosed, ConsoleTimeout
from resofleet.agent.parsers import parse_users, parse_worlds
from resofleet.agent.runtime import ProcessRuntime, emulator_command
from tests.support.consoles import start_console
from tests.support.lines import Lines

NOISY = ["--noise-rate", "0.5", "--seed", "7"]
#: Seconds a command that the console cannot finish gets before the test gives up on it.
SLOW_DEADLINE = 30.0
#: Seconds within which such a command must fail once the console is gone: "at once",
#: far below its deadline (restart itself takes 1 s in the emulator).
FAIL_WITHIN = SLOW_DEADLINE / 3
#: Seconds any other wait of these tests may take.
WAIT = 10.0


@pytest.fixture(params=["pipe", "tty"])
def mode(request) -> list[str]:
    return ["--tty"] if request.param == "tty" else []


@pytest.fixture
async def console(mode):
    c = await start_console("default", [*mode, *NOISY])
    yield c
    await c.runtime.close()


class Watched:
    """A runtime listener with a driver per run whose streamed lines can be waited for."""

    def __init__(self) -> None:
        self.runtime: ProcessRuntime | None = None
        self.driver: ConsoleDriver | None = None
        self.streamed = Lines()

    async def line(self, predicate: Callable[[str], bool], *, timeout: float = WAIT) -> str:
        """The first streamed line (past or future) that ``predicate`` accepts."""
        return await self.streamed.first(predicate, timeout=timeout)

    def output(self, data: bytes) -> None:
        if self.driver is not None:
            self.driver.feed(data)

    def started(self) -> None:
        assert self.runtime is not None
        self.driver = ConsoleDriver(self.runtime.write, on_line=self.streamed.add, name="test")

    def exited(self, reason: str) -> None:
        if self.driver is not None:
            self.driver.feed_eof(reason)

    def state(self, state: str) -> None:
        pass


@contextlib.asynccontextmanager
async def watching(args: Sequence[str]) -> AsyncIterator[Watched]:
    """An emulator with these arguments, its driver ready."""
    watched = Watched()
    watched.runtime = ProcessRuntime(
        "test", watched, command=emulator_command("default", args), kind="emulator"
    )
    await watched.runtime.start()
    try:
        assert watched.driver is not None
        await watched.driver.start(timeout=WAIT)
        yield watched
    finally:
        await watched.runtime.close()


@pytest.fixture
async def watched(mode) -> AsyncIterator[Watched]:
    async with watching([*mode, *NOISY]) as w:
        yield w


async def test_reply_is_the_commands_output_only(console):
    """worlds answers the world lines: no prompt, no echo, no CR, whatever the noise."""
    for _ in range(20):  # noise lands in about half of them
        reply = await console.driver.run("worlds")
        worlds = parse_worlds(reply.text)
        assert [w.name for w in worlds] == ["Harbor Lounge", "Night Market"]
        assert not any("\r" in line or line.strip() == "worlds" for line in reply.lines)
        assert not any(line.endswith("Night Market>") for line in reply.lines)


async def test_silent_commands_and_focus_track_the_prompt(console):
    """focus and name print nothing; the driver follows the prompt they change."""
    driver = console.driver
    assert driver.prompt == "Night Market>"  # the last world started has focus
    reply = await driver.run("focus 0")
    assert reply.lines == () or all(not l.startswith("[") for l in reply.lines)
    assert driver.prompt == "Harbor Lounge>"
    await driver.run('name "Harbor > Lounge: Two"')
    assert driver.prompt == "Harbor > Lounge: Two>"
    status = await driver.run("status")
    assert "Name: Harbor > Lounge: Two" in status.lines
    await driver.run('focus "Night Market"')
    assert driver.prompt == "Night Market>"


async def test_stacked_silent_commands_each_end_at_their_prompt(console, caplog):
    """Several silent commands in a row each end at the prompt predicted for them: none
    waits for a quiet period (which logs that the tracking was stale) or its deadline."""
    caplog.set_level(logging.WARNING, logger="resofleet.agent.console")
    for cmd in ("maxUsers 8", "description calm", "awayKickInterval 5", "maxUsers 9"):
        reply = await console.driver.run(cmd)
        assert not [l for l in reply.lines if l and not _noise(l)]
    assert caplog.records == []
    assert console.driver.prompt == "Night Market>"


def _noise(line: str) -> bool:
    from resofleet.agent.parsers import is_noise

    return is_noise(line)


async def test_users_of_each_world_through_focus(console):
    """users lists the focused world's users, the headless account first."""
    await console.driver.run("focus 0")
    users = parse_users((await console.driver.run("users")).text)
    assert [u.username for u in users] == ["HarborHost", "Mira", "Tobias"]


async def test_command_that_never_answers_times_out_and_the_console_recovers(mode, tmp_path: Path):
    """A wedged command fails with ConsoleTimeout at its deadline; the next one is fine."""
    scenario = Path("emulator/scenarios/default.toml").read_text()
    scenario = scenario.replace("[latency]", "[quirks]\nwedge_on_bad_url = true\n\n[latency]", 1)
    path = tmp_path / "wedge.toml"
    path.write_text(scenario)
    c = await start_console(str(path), mode)
    try:
        started = time.perf_counter()
        with pytest.raises(ConsoleTimeout):
            await c.driver.run("startWorldURL not-a-url", timeout=0.5)
        assert time.perf_counter() - started < 1.5
        # the emulated console is wedged for good, as the real one can be: a fresh one
        # answers, and a timed-out driver resynchronises before its next command
    finally:
        await c.runtime.close()
    c = await start_console("default", mode)
    try:
        with pytest.raises(ConsoleTimeout):
            await c.driver.run("save", timeout=0.05)  # save takes 0.2 s here
        reply = await c.driver.run("worlds")
        assert [w.name for w in parse_worlds(reply.text)] == ["Harbor Lounge", "Night Market"]
    finally:
        await c.runtime.close()


async def test_first_command_quirk_is_absorbed(mode):
    """With the first-command quirk on, the user's first command still gets its answer."""
    c = await start_console("default", [*mode, "--first-command-quirk"])
    try:
        reply = await c.driver.run("worlds")
        assert len(parse_worlds(reply.text)) == 2
    finally:
        await c.runtime.close()


async def test_console_dying_mid_command_fails_at_once(watched):
    """When the headless dies during a slow command, the command fails now, not at its deadline."""
    assert watched.driver is not None and watched.runtime is not None
    sent = asyncio.Event()
    task = asyncio.create_task(watched.driver.run("restart", timeout=SLOW_DEADLINE, sent=sent.set))  # 1 s
    async with asyncio.timeout(WAIT):
        await sent.wait()  # handed to the console: it runs now
    watched.runtime._proc.kill()
    with pytest.raises(ConsoleClosed):
        async with asyncio.timeout(FAIL_WITHIN):
            await task


async def test_crash_command_fails_at_once(console):
    """crash kills the process at once: the driver reports it instead of hanging."""
    with pytest.raises(ConsoleClosed):
        async with asyncio.timeout(FAIL_WITHIN):
            await console.driver.run("crash", timeout=SLOW_DEADLINE)


async def test_user_commands_are_streamed_with_their_echo(console):
    """The live stream shows '<prompt><command>' once (in a TTY, standing for the console's
    own echo) then the command's output lines."""
    await console.driver.run("listbans")
    i = console.lines.index("Night Market>listbans")
    after = [l for l in console.lines[i + 1:] if not _noise(l) and l.strip()]
    assert after[0].startswith("[0]\tUsername: SpamBot\t")
    assert console.lines.count("Night Market>listbans") == 1 and "listbans" not in console.lines


async def test_a_command_the_console_never_read_is_never_echoed(watched):
    """A frozen console does not read the command: it times out and the stream never shows
    '<prompt><command>'; what the console prints once it reads it comes as idle output."""
    assert watched.driver is not None and watched.runtime is not None and watched.runtime.pid
    pid = watched.runtime.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(ConsoleTimeout):
            await watched.driver.run("listbans", timeout=0.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    await watched.line(lambda line: line.startswith("[0]\tUsername: SpamBot\t"))
    assert not any(line.endswith(">listbans") for line in watched.streamed.lines)


async def test_internal_commands_are_not_streamed(console):
    """Output of the agent's own (stream=False) commands does not reach the stream."""
    before = len(console.lines)
    await console.driver.run("users", stream=False)
    new = console.lines[before:]
    assert not any("ID: U-Mira" in line for line in new)


async def test_idle_chatter_is_streamed_without_the_prompt():
    """Engine log lines printed while idle reach the stream, unglued from the prompt."""
    async with watching(["--chatter-rate", "50", "--seed", "3"]) as c:
        assert c.driver is not None
        await c.line(_noise)
        reply = await c.driver.run("worlds")
        assert len(parse_worlds(reply.text)) == 2
        assert not any(l.startswith("Night Market>SIGNALR") for l in c.streamed.lines)


@pytest.mark.parametrize("text", ["users\nshutdown", "users\rshutdown", "a\x00b", "a\u2028b", "\x1b[2J"])
async def test_driver_never_writes_a_line_break_into_the_console(console, text):
    """Whatever its caller, the driver refuses to send one call as two console lines."""
    with pytest.raises(ValueError):
        await console.driver.run(text)
    with pytest.raises(ValueError):
        await console.driver.run(f"focus {text}")
    reply = await console.driver.run("worlds")  # the console is untouched and still in step
    assert [w.name for w in parse_worlds(reply.text)] == ["Harbor Lounge", "Night Market"]
