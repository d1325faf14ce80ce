"""Child processes of a benchmark: parts of the system (:mod:`bench.node`) and client
swarms (:mod:`bench.swarm`), with their CPU time and peak memory read from outside.

Every child's stdin is a pipe the benchmark holds: closing it (or the benchmark dying)
stops the child. Children's stderr goes to ``bench/results/logs/``.

Profiling: with ``BENCH_PYSPY=DIR`` in the environment (and ``py-spy`` installed), every
node is sampled by ``py-spy record --nonblocking`` from the moment it is ready until it
stops, into ``DIR/<name>.txt`` (collapsed stacks: ``py-spy``'s ``raw`` format).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Final

import psutil

__all__ = ["Child", "LOG_DIR", "amqp_url", "now", "start_node", "start_swarm", "unique_prefix"]

LOG_DIR: Final = Path(__file__).resolve().parent / "results" / "logs"
#: Seconds a child may take to say READY (an agent starts its emulators first).
READY_TIMEOUT: Final = 60.0
ROOT: Final = Path(__file__).resolve().parent.parent


def amqp_url() -> str | None:
    return os.environ.get("RESOFLEET_AMQP_URL") or None


def unique_prefix() -> str:
    """A topology prefix of this run's own, so runs and tests sharing a broker never meet."""
    return f"bench-{uuid.uuid4().hex[:8]}."


class Child:
    """A running child process; ``info`` is what it printed after ``READY``."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log
        self.info: dict[str, Any] = {}
        self.ps = psutil.Process(proc.pid)

    @property
    def port(self) -> int:
        return int(self.info["port"])

    async def ready(self, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(
                        f"{self.name} exited before it was ready; see {self.log}"
                    )
                if line.startswith(b"READY "):
                    self.info = json.loads(line[6:])
                    return self.info

    async def readline(self, timeout: float | None = None) -> bytes:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited unexpectedly; see {self.log}")
        return line

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    # -- resource use, read from /proc ----------------------------------------------

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process (its threads included)."""
        t = self.ps.cpu_times()
        return t.user + t.system

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def peak_rss(self) -> int:
        """The high-water mark of resident memory (``VmHWM``), in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return self.rss()

    def reset_peak_rss(self) -> None:
        """Start the high-water mark again from the current RSS (Linux ``clear_refs`` 5)."""
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def _spawn(name: str, module: str, args: list[str], env: dict[str, str] | None) -> Child:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{name}.log"
    with open(log, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
    return Child(name, proc, log)


async def start_node(role: str, spec: dict[str, Any], *, name: str | None = None,
                     env: dict[str, str] | None = None) -> Child:
    """Start ``python -m bench.node ROLE`` and wait for it to be ready."""
    child = await _spawn(name or role, "bench.node", [role, "--spec", json.dumps(spec)], env)
    try:
        await child.ready()
    except BaseException:
        await child.stop()
        raise
    if os.environ.get("BENCH_PYSPY"):
        await _profile(child, Path(os.environ["BENCH_PYSPY"]))
    return child


async def _profile(child: Child, where: Path) -> None:
    """Sample ``child`` with py-spy until it exits (see the module docstring)."""
    where.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    await asyncio.create_subprocess_exec(
        str(spy), "record", "--pid", str(child.proc.pid), "--nonblocking", "--rate", "250",
        "--format", "raw", "--output", str(where / f"{child.name}.txt"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def start_swarm(spec: dict[str, Any], *, name: str) -> Child:
    """Start ``python -m bench.swarm`` (it prints READY once every client is connected)."""
    return await _spawn(name, "bench.swarm", ["--spec", json.dumps(spec)], None)


def now() -> float:
    return time.perf_counter()
