"""Crash recovery of the docker runtime against a real Docker engine and the emulator image.

A container that crashes from inside (the console's ``crash``: exit 134, no ``kill``) is
restarted per the policy and says so in ``restarts`` / ``exit_code``; one an operator
stopped (resofleet's stop, ``docker stop``, ``docker kill``) is not; one with its own Docker
restart policy is left to Docker; a crash loop stops the restarts until a start. The
engine, image and container fixtures are test_docker_runtime's (skipped, with the reason,
when no engine answers). Backoffs are a tenth of a second; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from resofleet.agent.runtime.docker import DockerRuntime
from resofleet.agent.runtime.policy import RestartPolicy

from .test_docker_runtime import WAIT_S, Harness, Make, docker_client, image, make_container

__all__ = ["docker_client", "image", "make_container"]  # fixtures, shared with that module

pytestmark = pytest.mark.docker

CRASH_CODE = 134
"""The emulator's ``crash``: SIGABRT, as an unhandled .NET exception (through docker-init)."""
BACKOFF_S = 0.1


class Recorder(Harness):
    """The shared harness, plus one Event that any lifecycle change sets."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def started(self) -> None:
        super().started()
        self.changed.set()

    def exited(self, reason: str) -> None:
        super().exited(reason)
        self.changed.set()

    def state(self, state: str) -> None:
        super().state(state)
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
        """Wait until ``predicate()`` holds, checking at each lifecycle change."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def rec() -> AsyncIterator[Recorder]:
    r = Recorder()
    yield r
    await r.close()


def attach(rec: Recorder, container: Any, **policy: Any) -> DockerRuntime:
    return rec.attach(container.name, policy=RestartPolicy(backoff_start=BACKOFF_S, **policy))


async def judged(runtime: DockerRuntime) -> None:
    """Wait until the restart policy has ruled on a death (it rules on the die event,
    which may come after the end of the attach stream already reported the exit)."""
    async with asyncio.timeout(WAIT_S):
        while runtime.tracker.last is None:
            await asyncio.sleep(0.02)


async def crash(rec: Recorder) -> None:
    """The console's ``crash``, once the console is up: the headless dies from inside."""
    await rec.console()
    assert rec.runtime is not None
    await rec.runtime.write(b"crash\n")


async def test_a_crash_is_restarted(make_container: Make, rec: Recorder) -> None:
    """on-failure (the docker default): a crash is restarted; stats count it and keep the code."""
    runtime = attach(rec, make_container(), mode="on-failure")
    await runtime.start()
    await crash(rec)
    await rec.until(lambda: rec.starts == 2)
    driver = await rec.console()
    assert "Harbor Lounge" in (await driver.run("worlds", timeout=WAIT_S)).text
    assert rec.exits == [f"exited with code {CRASH_CODE}"]
    assert "restarting" in rec.states and runtime.restarts == 1
    async with asyncio.timeout(WAIT_S):
        status = await runtime.stats()
    assert (status.status, status.restarts, status.exit_code) == ("running", 1, CRASH_CODE)


@pytest.mark.parametrize("how", ["resofleet stop", "docker stop", "docker kill"])
async def test_an_operator_stop_is_not_undone(
    make_container: Make, rec: Recorder, docker_client: Any, how: str
) -> None:
    """restart = "always", yet a container stopped on purpose stays stopped."""
    container = make_container()
    runtime = attach(rec, container, mode="always")
    await runtime.start()
    await rec.console()
    engine = docker_client.containers.get(container.name)
    if how == "resofleet stop":
        await runtime.stop()
    elif how == "docker stop":
        await asyncio.to_thread(engine.stop, timeout=5)
    else:
        await asyncio.to_thread(engine.kill)
    await rec.until(lambda: bool(rec.exits))
    if how != "resofleet stop":
        await judged(runtime)
        assert runtime.tracker.last is not None and "operator" in runtime.tracker.last.why
    # many backoffs pass; nothing may start it meanwhile
    with pytest.raises(TimeoutError):
        await rec.until(lambda: rec.starts > 1, timeout=20 * BACKOFF_S)
    assert "restarting" not in rec.states and runtime.status == "exited"
    await asyncio.to_thread(engine.reload)
    assert engine.status == "exited"


async def test_docker_restart_policy_is_left_to_docker(
    make_container: Make, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A container with its own restart policy: Docker restarts it after a crash, the agent
    follows the new run, never starts it itself, and says why in its log."""
    caplog.set_level(logging.INFO, logger="resofleet.agent.runtime.docker")
    runtime = attach(rec, make_container(restart_policy={"Name": "unless-stopped"}), mode="always")
    await runtime.start()
    assert runtime.engine_policy == "unless-stopped"
    assert any("only observes" in r.getMessage() for r in caplog.records)
    await crash(rec)
    await rec.until(lambda: rec.starts == 2)
    await rec.console()
    assert runtime.tracker.last is None and runtime.restarts == 0  # not the agent's doing
    assert "restarting" not in rec.states
    async with asyncio.timeout(WAIT_S):
        status = await runtime.stats()
    assert (status.status, status.restarts) == ("running", 1)  # Docker's RestartCount


async def test_a_crash_loop_stops_the_restarts(make_container: Make, rec: Recorder) -> None:
    """Two crashes within the window (loop_limit = 2): `crashloop`, the container stays down,
    stats say so; a start clears it."""
    runtime = attach(rec, make_container(), loop_limit=2)
    await runtime.start()
    await crash(rec)
    await rec.until(lambda: rec.starts == 2)
    await crash(rec)
    await rec.until(lambda: runtime.status == "crashloop")
    async with asyncio.timeout(WAIT_S):
        status = await runtime.stats()
    assert (status.status, status.restarts, status.exit_code) == ("crashloop", 1, CRASH_CODE)
    with pytest.raises(TimeoutError):
        await rec.until(lambda: rec.starts > 2, timeout=20 * BACKOFF_S)
    await runtime.start()
    await rec.console()
    assert runtime.status == "running"
