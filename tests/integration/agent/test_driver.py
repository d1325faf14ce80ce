"""The console driver against the emulator as a real child process, over pipes and TTY,
with engine noise landing inside replies."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from resofleet.agent.errors import ConsoleClosed, ConsoleTimeout
from resofleet.agent.parsers import parse_users, parse_worlds
from tests.support.consoles import start_console

NOISY = ["--noise-rate", "0.5", "--seed", "7"]


@pytest.fixture(params=["pipe", "tty"])
def mode(request) -> list[str]:
    return ["--tty"] if request.param == "tty" else []


@pytest.fixture
async def console(mode):
    c = await start_console("default", [*mode, *NOISY])
    yield c
    await c.runtime.close()


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


async def test_stacked_silent_commands_each_end_at_their_prompt(console):
    """Several silent commands in a row each complete, none waits for a timeout."""
    started = time.perf_counter()
    for cmd in ("maxUsers 8", "description calm", "awayKickInterval 5", "maxUsers 9"):
        reply = await console.driver.run(cmd)
        assert not [l for l in reply.lines if l and not _noise(l)]
    assert time.perf_counter() - started < 2.0


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


async def test_console_dying_mid_command_fails_at_once(console):
    """When the headless dies during a slow command, the command fails now, not at its deadline."""
    task = asyncio.create_task(console.driver.run("restart", timeout=30))  # takes 1 s
    await asyncio.sleep(0.1)
    started = time.perf_counter()
    console.runtime._proc.kill()
    with pytest.raises(ConsoleClosed):
        await asyncio.wait_for(task, 5)
    assert time.perf_counter() - started < 1.0


async def test_crash_command_fails_at_once(console):
    """crash kills the process at once: the driver reports it instead of hanging."""
    started = time.perf_counter()
    with pytest.raises(ConsoleClosed):
        await console.driver.run("crash", timeout=30)
    assert time.perf_counter() - started < 2.0


async def test_user_commands_are_streamed_with_their_echo(console):
    """The live stream shows '<prompt><command>' then the command's output lines."""
    await console.driver.run("listbans")
    i = console.lines.index("Night Market>listbans")
    after = [l for l in console.lines[i + 1:] if not _noise(l) and l.strip()]
    assert after[0].startswith("[0]\tUsername: SpamBot\t")


async def test_internal_commands_are_not_streamed(console):
    """Output of the agent's own (stream=False) commands does not reach the stream."""
    before = len(console.lines)
    await console.driver.run("users", stream=False)
    new = console.lines[before:]
    assert not any("ID: U-Mira" in line for line in new)


async def test_idle_chatter_is_streamed_without_the_prompt():
    """Engine log lines printed while idle reach the stream, unglued from the prompt."""
    c = await start_console("default", ["--chatter-rate", "50", "--seed", "3"])
    try:
        async with asyncio.timeout(5):
            while not any(l and not l.startswith(("Night Market>",)) and _noise(l) for l in c.lines[-5:]):
                await asyncio.sleep(0.05)
        reply = await c.driver.run("worlds")
        assert len(parse_worlds(reply.text)) == 2
        assert not any(l.startswith("Night Market>SIGNALR") for l in c.lines)
    finally:
        await c.runtime.close()


@pytest.mark.parametrize("text", ["users\nshutdown", "users\rshutdown", "a\x00b", "a\u2028b", "\x1b[2J"])
async def test_driver_never_writes_a_line_break_into_the_console(console, text):
    """Whatever its caller, the driver refuses to send one call as two console lines."""
    with pytest.raises(ValueError):
        await console.driver.run(text)
    with pytest.raises(ValueError):
        await console.driver.run(f"focus {text}")
    reply = await console.driver.run("worlds")  # the console is untouched and still in step
    assert [w.name for w in parse_worlds(reply.text)] == ["Harbor Lounge", "Night Market"]
