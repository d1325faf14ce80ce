"""The console driver's startup against an emulator that chatters from its first prompt on.

The first prompt is printed with no newline, so chatter lands glued onto it
(``Night Market>SIGNALR: ...``) and the console never falls quiet. To make the race that
hid the first prompt deterministic, :class:`_Coalescing` holds the child's output back
until the first prompt has chatter glued after it, then hands all of it to the driver in
one read, as a busy agent's event loop would.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from resofleet.agent.console import ConsoleDriver
from resofleet.agent.reader import SYNC_FLOWING
from resofleet.contracts.deadlines import COMMAND_DEADLINE
from resofleet.agent.parsers import parse_users, parse_worlds
from resofleet.agent.runtime import ProcessRuntime, emulator_command

SCENARIO = str(Path(__file__).parents[2] / "support" / "scenarios" / "chatter.toml")
#: The last world the scenario starts: the first prompt is its name.
FIRST_PROMPT = b"Night Market>"
#: Seconds within which a chattering console must become ready: SYNC_FLOWING (2 s) at
#: worst once its output flows, plus the emulator's own boot on a busy machine; far below
#: the STARTUP_DEADLINE (300 s) the bug made it.
READY_WITHIN = 15 * SYNC_FLOWING
REPEATS = 5


class _Coalescing:
    """A runtime listener that delivers the startup in one read: everything up to and past
    the first prompt, with chatter glued to it, then every later chunk as it comes."""

    def __init__(self, *, hold: bool) -> None:
        self.hold = hold
        self.held = b""
        self.runtime: ProcessRuntime | None = None
        self.driver: ConsoleDriver | None = None
        self.lines: list[str] = []

    def output(self, data: bytes) -> None:
        assert self.driver is not None
        if self.hold:
            self.held += data
            at = self.held.find(FIRST_PROMPT)
            if at < 0 or self.held.find(b"\n", at) < 0:
                return  # the first prompt has no chatter glued after it yet
            self.hold, data, self.held = False, self.held, b""
        self.driver.feed(data)

    def started(self) -> None:
        assert self.runtime is not None
        self.driver = ConsoleDriver(self.runtime.write, on_line=self.lines.append, name="test")

    def exited(self, reason: str) -> None:
        if self.driver is not None:
            self.driver.feed_eof(reason)

    def state(self, state: str) -> None:
        pass


async def _start(args: Sequence[str], *, hold: bool) -> tuple[ProcessRuntime, _Coalescing]:
    listener = _Coalescing(hold=hold)
    runtime = ProcessRuntime(
        "test", listener, command=emulator_command(SCENARIO, args), kind="emulator"
    )
    listener.runtime = runtime
    await runtime.start()
    return runtime, listener


@pytest.fixture(params=["pipe", "tty"])
def mode(request) -> list[str]:
    return ["--tty"] if request.param == "tty" else []


async def _ready_and_answering(args: Sequence[str], *, hold: bool) -> None:
    """Start a console: the driver is ready within READY_WITHIN and answers commands."""
    runtime, listener = await _start(args, hold=hold)
    try:
        assert listener.driver is not None
        driver = listener.driver
        await driver.start(timeout=READY_WITHIN)
        assert driver.prompt == "Night Market>"
        assert driver.world_names == ["Harbor Lounge", "Night Market"]
        reply = await driver.run("worlds")
        assert [w.name for w in parse_worlds(reply.text)] == ["Harbor Lounge", "Night Market"]
        await driver.run("focus 0")
        users = parse_users((await driver.run("users")).text)
        assert [u.username for u in users] == ["ChatterHost", "Mira"]
        # chatter kept flowing to the stream, without a prompt glued on
        assert any(line.startswith(("SIGNALR:", "Updated:", "Running refresh")) for line in listener.lines)
        assert [line for line in listener.lines if line.startswith("Night Market>SIGNALR")] == []
    finally:
        await runtime.close()


async def test_first_prompt_glued_to_chatter_ends_the_startup_wait(mode):
    """The first prompt arriving with chatter glued after it, in the same read, while the
    console never falls quiet: the driver is ready within seconds, every time."""
    for seed in range(REPEATS):
        await _ready_and_answering([*mode, "--seed", str(seed)], hold=True)


async def test_startup_under_chatter_as_it_comes(mode):
    """The same console read as the bytes arrive (the intermittent case of the bug)."""
    for seed in range(REPEATS):
        await _ready_and_answering([*mode, "--seed", str(seed)], hold=False)


async def test_first_command_quirk_under_chatter(mode):
    """``Unknown command`` for the first ``status`` while chatter never stops: the driver
    asks again instead of waiting for a quiet moment that never comes."""
    for seed in range(3):
        await _ready_and_answering([*mode, "--seed", str(seed), "--first-command-quirk"], hold=True)


async def test_unpredictable_prompt_under_chatter(mode):
    """A command after which the driver cannot predict the prompt (a world opened, then
    closed) ends at the prompt glued to chatter: under chatter no quiet period comes, so
    without that rule it would wait for its deadline (ConsoleTimeout). An ordinary
    command's deadline stands in for the long ones of these two."""
    runtime, listener = await _start([*mode, "--seed", "1"], hold=False)
    try:
        assert listener.driver is not None
        driver = listener.driver
        await driver.start(timeout=READY_WITHIN)
        await driver.run("startWorldTemplate Grid", timeout=COMMAND_DEADLINE)
        assert driver.prompt == "Grid>"
        await driver.run("close", timeout=COMMAND_DEADLINE)
        assert driver.prompt in ("Harbor Lounge>", "Night Market>")
    finally:
        await runtime.close()
