"""The process runtime restarts a crashed headless, and stops after a crash loop."""

from __future__ import annotations

import asyncio

from resofleet.agent.console import ConsoleDriver
from resofleet.agent.runtime import ProcessRuntime, emulator_command
from resofleet.agent.runtime.policy import RestartPolicy


class Recorder:
    def __init__(self) -> None:
        self.states: list[str] = []
        self.exits: list[str] = []
        self.started_count = 0
        self.driver: ConsoleDriver | None = None
        self.runtime: ProcessRuntime | None = None
        self.changed = asyncio.Event()

    def output(self, data: bytes) -> None:
        if self.driver is not None:
            self.driver.feed(data)

    def started(self) -> None:
        self.started_count += 1
        assert self.runtime is not None
        self.driver = ConsoleDriver(self.runtime.write, name="crashy")
        self.changed.set()

    def exited(self, reason: str) -> None:
        self.exits.append(reason)
        if self.driver is not None:
            self.driver.feed_eof(reason)
        self.changed.set()

    def state(self, state: str) -> None:
        self.states.append(state)
        self.changed.set()


async def wait_for(rec: Recorder, predicate, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            rec.changed.clear()
            await rec.changed.wait()


async def test_crashed_headless_is_restarted_and_the_exit_is_published():
    """crash exits non-zero; the runtime reports it, restarts, and the console answers again."""
    rec = Recorder()
    rt = ProcessRuntime("crashy", rec, command=emulator_command("default"), kind="emulator",
                        policy=RestartPolicy(backoff_start=0.1))
    rec.runtime = rt
    await rt.start()
    try:
        await rec.driver.start(timeout=20)
        await rt.write(b"crash\n")
        await wait_for(rec, lambda: rec.started_count == 2)
        assert rec.exits == ["exited with code 134"]
        assert "restarting" in rec.states and rec.states[-1] == "running"
        assert rt.restarts == 1
        await rec.driver.start(timeout=20)
        reply = await rec.driver.run("worlds")
        assert "Harbor Lounge" in reply.text
    finally:
        await rt.close()


async def test_crash_loop_stops_the_restarts():
    """A headless that keeps dying is left stopped in the crashloop state."""
    rec = Recorder()
    rt = ProcessRuntime(
        "crashy", rec, command=[*emulator_command("default"), "--startup-delay", "0"], kind="emulator",
        policy=RestartPolicy(backoff_start=0.01),
    )
    rec.runtime = rt
    await rt.start()
    try:
        async def crash_every_start() -> None:
            seen = 0
            while rt.status != "crashloop":
                if rec.started_count > seen:
                    seen = rec.started_count
                    await asyncio.sleep(0.05)
                    try:
                        await rt.write(b"crash\n")
                    except ConnectionError:
                        pass
                rec.changed.clear()
                await rec.changed.wait()

        await asyncio.wait_for(crash_every_start(), 20)
        assert rt.status == "crashloop"
        assert len(rec.exits) == 5
    finally:
        await rt.close()


class Timeline(Recorder):
    """A recorder that notes when each run started and ended (the loop's clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[float] = []
        self.ends: list[float] = []

    def started(self) -> None:
        self.starts.append(asyncio.get_running_loop().time())
        super().started()

    def exited(self, reason: str) -> None:
        self.ends.append(asyncio.get_running_loop().time())
        super().exited(reason)


async def test_backoff_starts_over_after_a_stable_run():
    """Two quick crashes double the restart delay; a crash after a run longer than
    ``stable_run`` is restarted after the first delay again, whatever its exit code."""
    rec = Timeline()
    rt = ProcessRuntime(
        "crashy", rec, command=[*emulator_command("default"), "--startup-delay", "0"], kind="emulator",
        policy=RestartPolicy(backoff_start=0.5, stable_run=1.0),
    )
    rec.runtime = rt
    await rt.start()
    try:
        for run in range(3):
            await rec.driver.start(timeout=20)
            if run == 2:  # outlive stable_run: wait on the clock the runtime reads
                await asyncio.sleep(max(0.0, rec.starts[-1] + 1.5 - asyncio.get_running_loop().time()))
            await rt.write(b"crash\n")
            await wait_for(rec, lambda: rec.started_count == run + 2)
        delays = [start - end for start, end in zip(rec.starts[1:], rec.ends)]
        assert delays[0] >= 0.5 and delays[1] >= 1.0  # doubled after a quick crash
        assert 0.5 <= delays[2] < 1.0, delays  # started over, not 2.0
        assert rec.exits == ["exited with code 134"] * 3
    finally:
        await rt.close()


async def test_start_and_stop_during_a_backoff_act_at_once():
    """While a crashed headless waits out a long backoff (30 s), ``start`` starts it now and
    ``stop`` ends the wait at once; neither waits for the backoff."""
    rec = Recorder()
    rt = ProcessRuntime(
        "crashy", rec, command=[*emulator_command("default"), "--startup-delay", "0"], kind="emulator",
        policy=RestartPolicy(backoff_start=30.0),
    )
    rec.runtime = rt
    await rt.start()
    try:
        for action in ("start", "stop"):
            await rec.driver.start(timeout=20)
            await rt.write(b"crash\n")
            await wait_for(rec, lambda: rt.status == "restarting")
            async with asyncio.timeout(5):
                await (rt.start() if action == "start" else rt.stop())
        assert rec.started_count == 2 and rec.exits == ["exited with code 134"] * 2
        assert rt.status == "exited" and rt.pid is None
    finally:
        await rt.close()
