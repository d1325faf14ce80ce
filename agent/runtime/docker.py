"""The ``docker`` runtime: a headless in a named, existing Docker container.

The agent does not own the container: it attaches to its console, follows its lifecycle
through the engine's events, starts/stops/restarts it on request, and samples its stats.
:meth:`DockerRuntime.close` detaches and leaves the container running.

The console is the attach socket (stdin, stdout and stderr streams). A TTY container
(``tty: true``) sends raw bytes: the pty echoes commands and ends lines with CRLF, which
the console driver handles. A container without a TTY sends multiplexed frames
(:class:`~resofleet.agent.runtime.dockerfmt.Demultiplexer`); a frame is not a line, so the payloads
are passed on as they come and the driver does the line splitting. stderr carries only
native noise and is logged at debug level. What the engine sends is read by the pure
functions of :mod:`resofleet.agent.runtime.dockerfmt` (frames, stats formulas, times, exit reasons).

The docker SDK is blocking. Every call runs in a worker thread (:func:`asyncio.to_thread`);
the attach socket and the events stream each have a dedicated reader thread that hands
what it reads to the event loop with ``call_soon_threadsafe``. At most ``PENDING_CHUNKS``
reads of console output wait for the loop: past that the reader stops reading, and the
headless's writes block as they would on a full pipe. The events subscription, which the
SDK makes without a timeout, is waited for with one
(:mod:`~resofleet.agent.runtime.dockerevents`).

Crash recovery: a run's ``die`` event (its exit code; any ``kill`` comes before it) is
judged by the :class:`~resofleet.agent.runtime.policy.RestartPolicy` (``on-failure`` by
default). Never restarted: a run this runtime stopped (``container stop``), one with a
``kill`` event (``docker stop``/``docker kill`` from outside), and a container with its own
Docker restart policy (not ``no``): Docker restarts it, the agent observes and logs so.

A "run" is one start of the container (``State.StartedAt``). Each run is announced once
with ``listener.started()`` and ended once with ``listener.exited(reason)``, whichever
notices first: the ``die`` event (which carries the exit code), the attach stream ending,
or one of this runtime's own actions. Lifecycle changes made by anyone else (``docker
restart``, a restart policy, ``docker start``) come through the events and are followed:
a new run is attached to and announced. Attaching to a run that has already printed its
prompt sends one empty line, which the console answers with a fresh prompt, so the driver
can synchronise.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from resofleet.contracts import Status

from ..errors import RuntimeActionFailed
from .base import Runtime, RuntimeListener, format_bytes
from .dockerevents import JOIN_TIMEOUT, EventsWatcher
from .dockerfmt import (
    STDERR, Demultiplexer, cpu_percent, docker_time_ns, exit_code, exit_reason, finished_exit_code,
    memory_usage,
)
from .policy import RestartPolicy, RestartTracker

__all__ = ["DockerRuntime", "STOP_GRACE"]

log = logging.getLogger(__name__)

#: Seconds after SIGTERM before SIGKILL (Docker's default; the headless saves worlds then).
STOP_GRACE: Final = 10
#: Bytes read from the attach socket at a time.
READ_CHUNK: Final = 65536
#: Chunks read from the attach socket and not yet taken by the event loop: past this the
#: reader stops reading, so a loop that falls behind slows the console instead of queueing
#: its output without bound (as a full pipe blocks a process's writes).
PENDING_CHUNKS: Final = 64
#: Seconds a console write may block; then its connection is dropped and made again.
WRITE_TIMEOUT: Final = 10.0
#: The default engine when neither ``docker_url`` nor ``DOCKER_HOST`` says otherwise.
DEFAULT_DOCKER_URL: Final = "unix:///var/run/docker.sock"
#: Docker restart policy names that leave restarting to the agent.
NO_ENGINE_POLICY: Final = frozenset({"", "no"})
#: ``kill`` events remembered to tell an operator's stop from a crash: a ``docker stop``
#: sends at most two (SIGTERM, then SIGKILL); a few more cover repeated attempts.
KILLS_KEPT: Final = 16
_VERDICTS: Final = frozenset({"restarting", "crashloop"})
_ATTACH_PARAMS: Final = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}


# -- the runtime -----------------------------------------------------------------------


class DockerRuntime(Runtime):
    kind = "docker"

    def __init__(
        self,
        server: str,
        listener: RuntimeListener,
        *,
        container: str,
        docker_url: str | None = None,
        policy: RestartPolicy | None = None,
    ) -> None:
        super().__init__(server, listener)
        #: What happens when the container dies (:mod:`~resofleet.agent.runtime.policy`).
        self.tracker = RestartTracker(policy or RestartPolicy(mode="on-failure"))
        #: The container's own Docker restart policy (if not ``""``/``no``: the agent observes).
        self.engine_policy = ""
        self._kills: collections.deque[int] = collections.deque(maxlen=KILLS_KEPT)
        self._run_judged = True  # whether the current run's end was accounted for
        self._restart_token: object | None = None  # the pending automatic restart
        if not container:
            raise RuntimeActionFailed(f"{server}: the docker runtime needs a container name")
        self.container_name = container
        #: None: ``docker.from_env()`` (DOCKER_HOST, DOCKER_TLS_VERIFY... or the unix socket)
        self._docker_url = docker_url
        self.docker_url = docker_url or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL
        self.tty = False
        self._client: Any = None  # docker.DockerClient for actions, stats and attach
        self._container: Any = None  # docker.models.containers.Container
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()  # one lifecycle step at a time (actions and events)
        self._write_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed_flag = threading.Event()  # for the threads
        # the attach connection
        self._gen = 0  # bumped per attach; data from an older one is dropped
        self._sio: Any = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._events = EventsWatcher(
            server, container, new_client=self._new_client, post=self._post,
            fail=lambda exc: self._fail("watch the events of", exc),
            on_event=self._on_event, on_gap=lambda: self._spawn(self._reconcile(None)),
        )
        # the current run
        self._run_open = False
        self._run_started_at: str | None = None
        self._run_started_ns: int | None = None
        self._oom = False
        self._memory_total = 0
        self._warned_stdin_once = False

    # -- engine access -----------------------------------------------------------------

    def _new_client(self) -> Any:
        import docker

        try:
            if self._docker_url is None:
                return docker.from_env()
            return docker.DockerClient(base_url=self._docker_url)
        except docker.errors.DockerException as exc:
            raise RuntimeActionFailed(
                f"{self.server}: cannot reach the Docker engine at {self.docker_url} ({exc})"
            ) from None

    async def _ensure_client(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._client is None:
            self._client = await asyncio.to_thread(self._new_client)

    def _fail(self, action: str, exc: Exception) -> RuntimeActionFailed:
        import docker

        if isinstance(exc, docker.errors.NotFound):
            return RuntimeActionFailed(
                f"{self.server}: no container named {self.container_name!r} on this Docker engine"
            )
        if isinstance(exc, RuntimeActionFailed):
            return exc
        detail = getattr(exc, "explanation", None) or str(exc) or type(exc).__name__
        return RuntimeActionFailed(
            f"{self.server}: cannot {action} container {self.container_name!r}: {detail}"
        )

    async def _call(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn`` in a worker thread; SDK and connection errors become RuntimeActionFailed."""
        await self._ensure_client()
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except Exception as exc:
            raise self._fail(action, exc) from None

    def _inspect_blocking(self) -> dict[str, Any]:
        # by name every time: compose may have replaced the container under the same name
        self._container = self._client.containers.get(self.container_name)
        return self._container.attrs

    async def _inspect(self) -> dict[str, Any]:
        attrs = await self._call("inspect", self._inspect_blocking)
        engine_policy = str(((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "")
        if engine_policy != self.engine_policy:
            self.engine_policy = engine_policy
            if engine_policy not in NO_ENGINE_POLICY:
                log.info("server=%s: container %s has Docker's restart policy %r: Docker restarts it, "
                         "the agent only observes", self.server, self.container_name, engine_policy)
        config = attrs.get("Config") or {}
        self.tty = bool(config.get("Tty"))
        if config.get("StdinOnce") and not self.tty and not self._warned_stdin_once:
            self._warned_stdin_once = True
            log.warning(
                "server=%s: container %s has StdinOnce set and no TTY: when the agent detaches, "
                "Docker closes the headless's stdin and it exits. Create it with `stdin_open: "
                "true` (compose) or `docker run -d -i`, which do not set StdinOnce.",
                self.server, self.container_name,
            )
        return attrs

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._closing = False
        self._closed_flag.clear()
        async with self._lock:
            self._restart_token = None
            self.tracker.reset()  # someone started it: a crash loop is over
            await self._ensure_client()
            await self._ensure_events()
            state = (await self._inspect())["State"]
            if state.get("Running"):
                if not self._attached_to(state):
                    await self._attach_running(state)
            else:
                await self._start_stopped()

    async def stop(self) -> None:
        async with self._lock:
            await self._stop_locked()

    async def restart(self, *, fresh: bool = True) -> None:
        # stop, attach, start (not `docker restart`): only so is the first output seen
        async with self._lock:
            await self._stop_locked()
            if fresh:
                self.tracker.reset()
            self.restarts += 1
            self._set_status("restarting")
            await self._ensure_events()
            await self._inspect()
            await self._start_stopped()

    async def close(self) -> None:
        """Detach (the socket, the events stream, the threads); the container keeps running."""
        self._closing = True
        self._closed_flag.set()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._detach()
        await self._events.close()
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, JOIN_TIMEOUT)
            if self._reader.is_alive():  # pragma: no cover - a daemon thread; it dies with us
                log.warning("server=%s: thread %s did not end", self.server, self._reader.name)
        self._reader = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._client.close)
        self._client = self._container = None
        self._run_open = False

    async def _start_stopped(self) -> None:
        """Attach, announce the run, then start the container: no output is missed."""
        container = self._container
        await self._open_console()
        self._open_run(None)
        try:
            await self._call("start", container.start)
        except RuntimeActionFailed as exc:
            self._detach()
            self._close_run(f"did not start: {exc}")
            raise
        state = (await self._inspect())["State"]
        self._run_started_at = state.get("StartedAt")
        self._run_started_ns = docker_time_ns(self._run_started_at)
        if state.get("Running"):
            self._set_status(state.get("Status", "running"))
        else:  # died at once; the die event may still be on its way
            self._close_run(exit_reason(state, oom=self._oom))
            self._set_status(state.get("Status", "exited"))

    async def _attach_running(self, state: dict[str, Any]) -> None:
        """Attach to a running container's console and have it print its prompt again."""
        await self._open_console()
        self._open_run(state.get("StartedAt"))
        self._set_status("paused" if state.get("Paused") else state.get("Status", "running"))
        # an idle console has printed its prompt already: an empty line prints it again
        with contextlib.suppress(ConnectionError, OSError):
            await self.write(b"\n")

    async def _stop_locked(self) -> None:
        self._restart_token = None
        self._run_judged = True  # this run ends on purpose: its die event restarts nothing
        container = self._container
        if container is None:
            await self._ensure_client()
            await self._inspect()
            container = self._container
        try:
            await self._call("stop", container.stop, timeout=STOP_GRACE)
        except RuntimeActionFailed:
            self._run_judged = not self._run_open  # still running: its death is judged
            raise
        state = (await self._inspect())["State"]
        self._close_run(exit_reason(state, oom=self._oom))
        self._set_status(state.get("Status", "exited"))

    def _attached_to(self, state: dict[str, Any]) -> bool:
        return (
            self._run_open
            and self._sock is not None
            and self._reader is not None
            and self._reader.is_alive()
            and state.get("StartedAt") == self._run_started_at
        )

    def _open_run(self, started_at: str | None) -> None:
        if self._run_open:  # the previous run ended unnoticed (an event was missed)
            self._close_run("the container was restarted")
        self._run_open = True
        self._run_judged = False
        self.tracker.started(time.monotonic())
        self._oom = False
        self._run_started_at = started_at
        self._run_started_ns = docker_time_ns(started_at)
        self.listener.started()

    def _close_run(self, reason: str) -> None:
        if not self._run_open:
            return
        self._run_open = False
        log.info("server=%s: container %s %s", self.server, self.container_name, reason)
        self.listener.exited(reason)
        self._set_status("exited")

    # -- the attach socket -----------------------------------------------------------

    async def _open_console(self) -> None:
        self._detach()
        container = self._container
        sio = await self._call("attach to", container.attach_socket, params=dict(_ATTACH_PARAMS))
        sock = getattr(sio, "_sock", sio)
        sock.settimeout(None)  # the reader blocks; close() unblocks it with shutdown
        self._gen += 1
        self._sio, self._sock = sio, sock
        self._reader = threading.Thread(
            target=self._read, args=(sock, sio, self._gen, self.tty),
            name=f"docker-attach:{self.server}", daemon=True,
        )
        self._reader.start()

    def _detach(self) -> None:
        """Drop the attach connection; its reader thread sees the end and exits."""
        sock, self._sock, self._sio = self._sock, None, None
        self._gen += 1
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)  # wakes the reader; the fd is closed by it

    def _read(self, sock: socket.socket, sio: Any, gen: int, tty: bool) -> None:
        """Reader thread: the attach stream, demultiplexed unless TTY, to the loop."""
        demux = None if tty else Demultiplexer()
        slots = threading.Semaphore(PENDING_CHUNKS)  # released by _on_output on the loop
        try:
            while data := sock.recv(READ_CHUNK):
                if demux is not None and not (data := self._stdout_of(demux.feed(data))):
                    continue
                while not slots.acquire(timeout=JOIN_TIMEOUT / 5):
                    if gen != self._gen or self._closed_flag.is_set():
                        return
                self._post(self._on_output, gen, data, slots)
        except OSError as exc:
            if not self._closed_flag.is_set():
                log.debug("server=%s: attach stream error: %s", self.server, exc)
        finally:
            for closeable in (sio, sock):
                with contextlib.suppress(Exception):
                    closeable.close()
            self._post(self._on_eof, gen)

    def _stdout_of(self, frames: Any) -> bytes:
        """The stdout payloads of one read, joined (the driver splits lines); stderr logged."""
        out = []
        for stream, payload in frames:
            if stream == STDERR:
                log.debug("server=%s stderr: %s", self.server, payload.decode("utf-8", "replace").rstrip())
            else:
                out.append(payload)
        return b"".join(out)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(fn, *args)

    def _on_output(self, gen: int, data: bytes, slots: threading.Semaphore) -> None:
        slots.release()
        if gen == self._gen and not self._closing:
            self.listener.output(data)

    def _on_eof(self, gen: int) -> None:
        if gen != self._gen or self._closing:
            return
        self._sock = self._sio = None
        # the die event usually says it first; check in case the events stream lags
        self._spawn(self._reconcile(gen))

    async def write(self, data: bytes) -> None:
        sock = self._sock
        if sock is None or not self._run_open:
            raise ConnectionError(f"the console of container {self.container_name!r} is not attached")
        async with self._write_lock:
            try:  # asyncio.timeout: wait_for can swallow a cancellation on 3.11
                async with asyncio.timeout(WRITE_TIMEOUT):
                    await asyncio.to_thread(sock.sendall, data)
            except TimeoutError:
                with contextlib.suppress(OSError):  # ends the send under way; the reader sees
                    sock.shutdown(socket.SHUT_RDWR)  # the end and the console is attached again
                blocked = f"writing to container {self.container_name!r} blocked for {WRITE_TIMEOUT:g} s"
                raise ConnectionError(blocked) from None

    # -- the events stream -------------------------------------------------------------

    async def _ensure_events(self) -> None:
        """The events are read before we act (:mod:`~resofleet.agent.runtime.dockerevents`)."""
        self._loop = asyncio.get_running_loop()
        await self._events.ensure()

    def _on_event(self, event: dict[str, Any]) -> None:
        if self._closing:
            return
        action = str(event.get("Action") or event.get("status") or "")
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        log.debug("server=%s: docker event %s %s", self.server, action, attributes)
        if action == "oom":
            self._oom = True
            log.warning("server=%s: container %s ran out of memory", self.server, self.container_name)
        elif action == "kill":  # docker stop / docker kill (or our own stop)
            self._kills.append(int(event.get("timeNano") or time.time_ns()))
        elif action == "die":
            self._spawn(self._on_die(attributes.get("exitCode", "?"), event.get("timeNano")))
        elif action in ("start", "destroy"):
            self._spawn(self._reconcile(None))
        elif action == "pause":
            self._set_status("paused")
        elif action == "unpause":
            self._set_status("running")
        elif action == "restart":
            log.info("server=%s: container %s was restarted", self.server, self.container_name)

    async def _on_die(self, code: str, time_nano: int | None) -> None:
        async with self._lock:
            if self._closing or (time_nano and time_nano < (self._run_started_ns or 0)):
                return  # an earlier run's death, already accounted for
            if (code_value := exit_code(code)) is not None:
                self.exit_code = code_value
            self._close_run(exit_reason({"ExitCode": code}, oom=self._oom))
            if not self._run_judged:
                self._run_judged = True
                self._judge(code_value, time_nano or time.time_ns())

    def _judge(self, exit_code: int | None, died_ns: int) -> None:
        """Apply the restart policy to the run that just died (see the module docstring)."""
        if self.engine_policy not in NO_ENGINE_POLICY:
            return  # Docker's own restart policy decides (logged by _inspect)
        since = self._run_started_ns or 0
        operator = any(since <= kill <= died_ns for kill in self._kills)
        verdict = self.tracker.died(time.monotonic(), exit_code=exit_code, operator=operator)
        log.log(logging.ERROR if verdict.state == "crashloop" else logging.WARNING, "server=%s: container "
                "%s exited with code %s; %s", self.server, self.container_name, exit_code, verdict.why)
        self._set_status(verdict.state)
        if verdict.restart:
            token = self._restart_token = object()
            self._spawn(self._restart_after(verdict.delay, token))

    async def _restart_after(self, delay: float, token: object) -> None:
        """The automatic restart, unless someone started or stopped it meanwhile."""
        await asyncio.sleep(delay)
        async with self._lock:
            if self._closing or self._restart_token is not token:
                return
            self._restart_token = None
            try:
                state = (await self._inspect())["State"]
                if state.get("Running"):
                    return  # someone started it: the start event attaches to it
                await self._start_stopped()
                self.restarts += 1
            except RuntimeActionFailed as exc:
                log.error("server=%s: the automatic restart failed: %s", self.server, exc)
                self._set_status("exited")

    async def _reconcile(self, gen: int | None) -> None:
        """Bring the run in line with the container: after a start event, the end of the
        attach stream (``gen``), or a gap in the events."""
        async with self._lock:
            if self._closing or (gen is not None and gen != self._gen):
                return
            try:
                state = (await self._inspect())["State"]
            except RuntimeActionFailed as exc:
                log.warning("server=%s: %s", self.server, exc)
                self._close_run("the container is gone")
                return
            if not state.get("Running"):
                self._close_run(exit_reason(state, oom=self._oom))
                if self._restart_token is None and self.status not in _VERDICTS:
                    self._set_status(state.get("Status", "exited"))
            elif not self._attached_to(state):
                if state.get("StartedAt") != self._run_started_at:
                    self._restart_token = None
                    self.tracker.reset()  # started from outside: a fresh start
                if self._run_open and state.get("StartedAt") == self._run_started_at:
                    log.warning("server=%s: attach stream ended while running; attaching again", self.server)
                    self._close_run("the console connection was lost")
                try:
                    await self._attach_running(state)
                except RuntimeActionFailed as exc:
                    log.warning("server=%s: %s", self.server, exc)
            else:  # the same run: only a pause or unpause can have been missed
                self._set_status("paused" if state.get("Paused") else state.get("Status", "running"))

    def _spawn(self, coro: Any) -> None:
        if self._closing:
            coro.close()
            return
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("server=%s: docker runtime task failed", self.server, exc_info=task.exception())

    # -- stats ---------------------------------------------------------------------------

    def _sample(self) -> tuple[dict[str, Any], dict[str, Any]]:
        attrs = self._inspect_blocking()
        running = (attrs.get("State") or {}).get("Running")
        # ~1 s: the engine takes two samples, which fills precpu_stats
        return attrs, (self._container.stats(stream=False) if running else {})

    async def stats(self) -> Status:
        attrs, sample = await self._call("read the stats of", self._sample)
        state = attrs.get("State") or {}
        cpu = cpu_percent(sample)
        used, limit = memory_usage(sample)
        if limit:
            self._memory_total = limit
        else:
            limit = int((attrs.get("HostConfig") or {}).get("Memory") or 0) or self._memory_total
        uptime = ""
        started = docker_time_ns(state.get("StartedAt"))
        if state.get("Running") and started:
            from ..timespan import humanize_uptime

            uptime = humanize_uptime(max(0.0, time.time() - started / 1e9))
        last_code = finished_exit_code(state)
        return Status(  # a stopped one's state: the agent's verdict, which Docker cannot know
            status=self.status if last_code is not None and self.status in _VERDICTS
            else str(state.get("Status") or self.status),
            name=str(attrs.get("Name") or self.container_name).lstrip("/"),
            id=str(attrs.get("Id") or "")[:12],
            cpu_usage=round(cpu, 1),
            memory_percent=round(100.0 * used / limit, 1) if limit else 0.0,
            memory_used=format_bytes(used),
            memory_total=format_bytes(limit),
            uptime=uptime,
            restarts=int(attrs.get("RestartCount") or 0) + self.restarts,
            memory_used_bytes=used,
            memory_total_bytes=limit,
            exit_code=self.exit_code if last_code is None else last_code,
        )
