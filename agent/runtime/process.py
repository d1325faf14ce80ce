"""The ``process`` and ``emulator`` runtimes: the headless as an asyncio child process.

stdin and stdout are pipes (lines end in ``\\n``, no echo); stderr carries only native
noise and is logged at debug level. CPU and memory come from psutil over the process
tree, sampled in a thread. A headless that exits on its own is judged by its
:class:`~resofleet.agent.runtime.policy.RestartPolicy` (``always`` by default: restarted
with backoff, left stopped as ``crashloop`` when it keeps dying); one stopped through
:meth:`ProcessRuntime.stop` (``container stop``) never is. The agent is the child's only
supervisor: a signal sent to it from outside is a death like any other (SIGTERM and
SIGINT count as a clean exit for ``on-failure``); stop it through resofleet instead.
Exit codes are reported as a shell reports them (a death by signal N is 128 + N).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Final

import psutil

from resofleet.contracts import Status

from ..errors import RuntimeActionFailed
from .base import Runtime, RuntimeListener, format_bytes
from .policy import RestartPolicy, RestartTracker, exit_code_of

__all__ = ["ProcessRuntime", "STOP_GRACE", "emulator_command"]

log = logging.getLogger(__name__)

#: Seconds a stopping headless gets after SIGTERM before SIGKILL. The real one saves
#: worlds on shutdown; ten seconds is what Docker gives by default.
STOP_GRACE: Final = 10.0
#: Seconds over which a CPU sample is taken when no previous sample exists.
CPU_SAMPLE: Final = 0.2
#: Bytes read from stdout (and stderr) at a time.
READ_CHUNK: Final = 65536
#: Seconds writing to the console's stdin may block (a frozen headless that stopped
#: reading, its pipe full) before the write fails, as the Docker runtime's does.
WRITE_TIMEOUT: Final = 10.0
#: Characters of one stderr line that reach the debug log; the rest is cut.
STDERR_LINE: Final = 4096


def emulator_command(scenario: str | None, extra: Sequence[str] = ()) -> list[str]:
    """The command line that runs the emulator as a child of this Python."""
    cmd = [sys.executable, "-m", "resofleet.emulator"]
    if scenario:
        cmd += ["--scenario", scenario]
    return cmd + list(extra)


class ProcessRuntime(Runtime):
    kind = "process"

    def __init__(
        self,
        server: str,
        listener: RuntimeListener,
        *,
        command: Sequence[str],
        workdir: str | None = None,
        env: dict[str, str] | None = None,
        kind: str = "process",
        policy: RestartPolicy | None = None,
    ) -> None:
        super().__init__(server, listener)
        #: What happens when the headless dies (:mod:`~resofleet.agent.runtime.policy`).
        self.tracker = RestartTracker(policy or RestartPolicy())
        self.kind = kind
        self.command = list(command)
        self.workdir = workdir
        self.env = {**os.environ, **(env or {})}
        self.tty = "--tty" in self.command
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._want_running = False
        self._backing_off = False  # the supervisor sleeps before a restart
        self._started_at: float | None = None
        self._ps_procs: dict[int, psutil.Process] = {}
        #: One CPU sample at a time (see :meth:`_sample`).
        self._sampling = threading.Lock()
        self._spawned = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.tracker.reset()
        await self._start()

    async def _start(self) -> None:
        self._want_running = True
        supervisor = self._supervisor
        if supervisor is not None and self._backing_off:
            supervisor.cancel()  # waiting out a backoff: start now instead
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        if self._supervisor is None or self._supervisor.done():
            self._spawned.clear()
            self._supervisor = asyncio.create_task(self._supervise(), name=f"process:{self.server}")
            async with asyncio.timeout(30):
                await self._spawned.wait()
        if self._proc is None:
            raise RuntimeActionFailed(f"{self.server}: the process did not start")

    async def _spawn(self) -> asyncio.subprocess.Process:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.workdir,
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:
            raise RuntimeActionFailed(f"{self.server}: cannot start {self.command[0]!r}: {exc}") from None
        self._proc = proc
        self._started_at = time.time()
        self._ps_procs.clear()
        self._set_status("running")
        self.listener.started()
        return proc

    async def _supervise(self) -> None:
        while self._want_running:
            try:
                proc = await self._spawn()
            except RuntimeActionFailed as exc:
                log.error("server=%s: %s", self.server, exc)
                self._set_status("exited")
                self._spawned.set()
                return
            self._spawned.set()
            self.tracker.started(time.monotonic())
            code = self.exit_code = exit_code_of(await self._pump(proc))
            self._proc = None
            reason = f"exited with code {code}"
            self.listener.exited(reason)
            if not self._want_running:  # stop() ended it
                self._set_status("exited")
                return
            verdict = self.tracker.died(time.monotonic(), exit_code=code)
            level = logging.ERROR if verdict.state == "crashloop" else logging.WARNING
            log.log(level, "server=%s: %s; %s", self.server, reason, verdict.why)
            self._set_status(verdict.state)
            if not verdict.restart:
                self._want_running = False
                return
            self._backing_off = True
            try:
                await asyncio.sleep(verdict.delay)
            finally:
                self._backing_off = False
            self.restarts += 1

    async def _pump(self, proc: asyncio.subprocess.Process) -> int:
        assert proc.stdout is not None and proc.stderr is not None

        async def drain_stderr() -> None:
            # Read in chunks, never by readline: a line longer than the stream's limit
            # would end a readline loop, the pipe would fill, and the headless would block
            # writing to stderr. Lines go to the debug log, cut to STDERR_LINE.
            assert proc.stderr is not None
            pending = b""
            while chunk := await proc.stderr.read(READ_CHUNK):
                *lines, pending = (pending + chunk).split(b"\n")
                if len(pending) > STDERR_LINE:  # no newline for long: log what came, go on
                    lines.append(pending)
                    pending = b""
                if log.isEnabledFor(logging.DEBUG):
                    for line in lines:
                        text = line[:STDERR_LINE].decode(errors="replace").rstrip()
                        log.debug("server=%s stderr: %s", self.server, text)

        err = asyncio.create_task(drain_stderr())
        try:
            while data := await proc.stdout.read(READ_CHUNK):
                self.listener.output(data)
        except asyncio.CancelledError:
            # nobody will read its output any more: do not leave it running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            code = await proc.wait()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(err, 1)
            err.cancel()
        return code

    async def stop(self) -> None:
        self._want_running = False
        proc = self._proc
        if self._backing_off and self._supervisor is not None:
            self._supervisor.cancel()  # waiting out a backoff: nothing to stop
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self._supervisor is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._supervisor, STOP_GRACE)
            self._supervisor = None
        self._set_status("exited")

    async def restart(self, *, fresh: bool = True) -> None:
        await self.stop()
        self.restarts += 1
        self._set_status("restarting")
        await (self.start() if fresh else self._start())

    async def close(self) -> None:
        await self.stop()

    # -- console ---------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            raise ConnectionError("the process is not running")
        proc.stdin.write(data)
        try:  # asyncio.timeout, not wait_for, which on 3.11 can swallow a cancellation
            async with asyncio.timeout(WRITE_TIMEOUT):  # that lands as the drain ends
                await proc.stdin.drain()
        except TimeoutError:
            raise ConnectionError(f"writing to the console blocked for {WRITE_TIMEOUT:g} s") from None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # -- stats -----------------------------------------------------------------------

    async def stats(self) -> Status:
        proc = self._proc
        uptime = time.time() - self._started_at if (proc and self._started_at) else 0.0
        if proc is None or proc.returncode is not None:
            return Status(
                status=self.status, name=self.server, id="", cpu_usage=0.0, memory_percent=0.0,
                memory_used="0B", memory_total=format_bytes(psutil.virtual_memory().total),
                uptime="", restarts=self.restarts, memory_total_bytes=psutil.virtual_memory().total,
                exit_code=self.exit_code,
            )
        cpu, rss, total = await asyncio.to_thread(self._sample, proc.pid)
        from ..timespan import humanize_uptime

        return Status(
            status=self.status,
            name=self.server,
            id=str(proc.pid),
            cpu_usage=round(cpu, 1),
            memory_percent=round(100.0 * rss / total, 1) if total else 0.0,
            memory_used=format_bytes(rss),
            memory_total=format_bytes(total),
            uptime=humanize_uptime(uptime),
            restarts=self.restarts,
            memory_used_bytes=rss,
            memory_total_bytes=total,
            exit_code=self.exit_code,
        )

    def _sample(self, pid: int) -> tuple[float, int, int]:
        """CPU percent (100 = one core, as docker stats) and RSS of the process tree.

        Runs in a thread: psutil reads /proc. The first sample of a process measures over
        :data:`CPU_SAMPLE` seconds; later ones measure since the previous sample. Samples
        never overlap: a get_status during a status poll's sample would otherwise measure
        over the few milliseconds since the poll's call (CPU time comes in 10 ms ticks: 0 %
        or some large figure) and leave the poll measuring over almost nothing.
        """
        with self._sampling:
            return self._sample_tree(pid)

    def _sample_tree(self, pid: int) -> tuple[float, int, int]:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0, 0, psutil.virtual_memory().total
        fresh = False
        procs: dict[int, psutil.Process] = {}
        for p in tree:
            known = self._ps_procs.get(p.pid)
            if known is None:
                fresh = True
                with contextlib.suppress(psutil.Error):
                    p.cpu_percent(None)
                known = p
            procs[p.pid] = known
        self._ps_procs = procs
        if fresh:
            time.sleep(CPU_SAMPLE)
        cpu = 0.0
        rss = 0
        for p in procs.values():
            with contextlib.suppress(psutil.Error):
                cpu += p.cpu_percent(None)
                rss += p.memory_info().rss
        return cpu, rss, psutil.virtual_memory().total
