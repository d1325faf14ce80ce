"""The console driver: one command at a time; a reply ends at the prompt, not at silence.

A thin async shell around :class:`~resofleet.agent.reader.ConsoleReader`, which decides everything
about the console's text (lines, the end of a reply, the tracked prompt, the end of
startup) from bytes and times alone. The driver owns what the reader cannot: the lock
that keeps commands from interleaving, the writes to the runtime, the event loop's timer
each :class:`~resofleet.agent.reader.CallAt` asks for, and the futures commands wait on, each with
its deadline.

Bytes come in through :meth:`ConsoleDriver.feed` from a runtime (a child's stdout, a
Docker attach socket) and go out through the runtime's ``write``. Every streamed line
reaches ``on_line`` (the live stream): everything the console prints, except the answers
to the agent's own polling (engine log lines printed meanwhile still are). A user command
appears as ``<prompt><command>``, the way a terminal shows it, then its output lines; the
echo line comes once the console shows it read the command (its TTY echo, else its answer
or its prompt; see :mod:`resofleet.agent.reader`), never merely because it was sent.

Two sequences of commands:

- synchronising (:meth:`ConsoleDriver.start`, and before the next command after a
  timeout): wait for the end of startup, ask ``status`` to learn the focused world (again,
  up to :data:`SYNC_ATTEMPTS` times, while the first-command quirk answers ``Unknown
  command``), then ``worlds`` for the world names that ``focus N`` refers to;
- running a command: when the prompt that ended its reply was not the predicted one (a
  world opened or closed, a stale list), ``status`` again to re-learn the focus.

The error tree::

    AgentError
    ├── ConsoleClosed     the console closed before or during the command, or a write failed
    ├── ConsoleTimeout    no complete answer by the deadline
    │   ├── ConsoleSilent the command was written and no complete answer came
    │   └── ConsoleBusy   the console stayed busy with other commands past ``wait``
    └── ConsoleNotReady   the console did not finish starting within the timeout
    ValueError            a command with a control character (never sent)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from resofleet.contracts.deadlines import COMMAND_DEADLINE, LONG_COMMAND_DEADLINES, deadline_for

from .errors import ConsoleBusy, ConsoleClosed, ConsoleNotReady, ConsoleSilent
from .reader import Answer, CallAt, Closed, ConsoleReader, Line, StartupEnded

if TYPE_CHECKING:
    from .metrics import ServerMetrics

__all__ = [
    "COMMAND_DEADLINE",
    "ConsoleDriver",
    "LONG_COMMAND_DEADLINES",
    "Reply",
    "Sent",
    "deadline_for",
    "quote",
]

log = logging.getLogger(__name__)

#: ``status`` questions asked while synchronising before giving up on learning the focus:
#: the first-command quirk spends one; three covers a console that repeats it.
SYNC_ATTEMPTS: Final = 3
#: Seconds to wait for the first prompt when a console starts (the engine boots, loads
#: worlds from the cloud...).
STARTUP_DEADLINE: Final = 300.0
#: What :meth:`ConsoleDriver.feed_eof` reports when its caller gives no reason.
CLOSED: Final = "the console closed"


def quote(argument: str) -> str:
    """An argument as the console expects it: wrapped in double quotes if it has spaces."""
    return f'"{argument}"' if (" " in argument or not argument) else argument


@dataclass(frozen=True, slots=True)
class Reply:
    """A command's answer: the lines it printed, without prompts and without the echo."""

    command: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


#: Called when a command is handed to the console (see :meth:`_Group.run`).
Sent = Callable[[], None]


def _discard(line: str) -> None:
    pass


class ConsoleDriver:
    """Drives one headless console (see the module docstring).

    ``write`` sends bytes to the console's stdin. ``on_line(line)`` receives every
    streamed output line.
    """

    def __init__(
        self,
        write: Callable[[bytes], Awaitable[None]],
        *,
        on_line: Callable[[str], None] | None = None,
        name: str = "console",
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._write = write
        #: Where timeouts and resynchronisations are counted (``None``: nowhere).
        self._metrics = metrics
        self._on_line = on_line or _discard
        self.name = name
        self._reader = ConsoleReader()
        self._lock = asyncio.Lock()
        self._closed = False
        self._close_reason = CLOSED
        self._ready = False
        self._needs_sync = True
        self._timer: asyncio.TimerHandle | None = None
        #: what a command (an Answer) or the startup wait (StartupEnded) waits for
        self._waiter: asyncio.Future[Answer | StartupEnded] | None = None

    # -- input from the runtime ------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Console output, as it arrives (any chunking)."""
        if self._closed:
            return
        self._reader.receive_data(data, asyncio.get_running_loop().time())
        self._process()

    def feed_eof(self, reason: str = CLOSED) -> None:
        """The console is gone (process exited, container died): fail the command now."""
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        self._reader.receive_eof()
        self._process()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ready(self) -> bool:
        """Whether :meth:`start` has synchronised with the console, which is still there."""
        return self._ready and not self._closed

    # -- what the reader tracks --------------------------------------------------------

    @property
    def prompt(self) -> str | None:
        """The focused world's prompt, e.g. ``"Harbor Lounge>"`` (None before startup)."""
        return self._reader.prompt

    @property
    def world_names(self) -> list[str]:
        """World names by index, from the last ``worlds`` of a sync or a group."""
        return self._reader.world_names

    @property
    def focused_index(self) -> int | None:
        return self._reader.focused_index

    # -- events from the reader --------------------------------------------------------

    def _process(self) -> None:
        for event in self._reader.events_received():
            if type(event) is Line:  # the common case, one per console line
                if event.streamed:
                    self._on_line(event.text)
                continue
            match event:
                case Answer(expected=expected, prompt=prompt) if expected not in (None, prompt):
                    log.warning(
                        "%s: expected prompt %r but the console shows %r; re-learning the focus",
                        self.name, expected, prompt,
                    )
                    self._resolve(event)
                case Answer() | StartupEnded():
                    self._resolve(event)
                case CallAt(when=when):
                    if self._timer is not None:
                        self._timer.cancel()
                    self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)
                case Closed():
                    waiter = self._waiter
                    if waiter is not None and not waiter.done():
                        waiter.set_exception(ConsoleClosed(f"{self.name}: {self._close_reason}"))

    def _resolve(self, event: Answer | StartupEnded) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(event)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._closed:
            self._reader.tick(asyncio.get_running_loop().time())
            self._process()

    # -- commands --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConsoleClosed(f"{self.name}: {self._close_reason}")

    async def _command(
        self, command: str, *, timeout: float, stream: bool, sent: Sent | None = None
    ) -> Answer:
        """Send one line and wait for its reply."""
        self._check_open()
        try:
            self._reader.send_command(command, stream=stream)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None
        return await self._answer(command, timeout=timeout, sent=sent)

    async def _ask_focus(self, *, timeout: float) -> Answer:
        """``status``, which teaches the reader the focused world's prompt."""
        self._check_open()
        self._reader.send_status()
        return await self._answer("status", timeout=timeout)

    async def _answer(self, command: str, *, timeout: float, sent: Sent | None = None) -> Answer:
        """Write what the reader has to send, then wait for the reply it frames; ``sent`` is
        called just before the first byte is written."""
        waiter: asyncio.Future[Answer | StartupEnded] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            if sent is not None:
                sent()
            for data in self._reader.data_to_send():
                await self._write(data)
            async with asyncio.timeout(timeout):
                answer = await waiter
        except TimeoutError:
            self._needs_sync = True
            if self._metrics is not None:
                self._metrics.timeouts.inc()
            raise ConsoleSilent(
                f"{self.name}: {(command.split(maxsplit=1) or [''])[0]!r} got no complete answer "
                f"within {timeout:g} s"
            ) from None
        except (OSError, ConnectionError) as exc:
            raise ConsoleClosed(f"{self.name}: cannot write to the console ({exc})") from None
        finally:
            self._waiter = None
            self._reader.abandon()
        assert isinstance(answer, Answer)
        return answer

    async def _wait_startup(self, *, timeout: float) -> None:
        self._check_open()
        waiter: asyncio.Future[Answer | StartupEnded] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            self._reader.expect_startup(asyncio.get_running_loop().time())
            self._process()
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise ConsoleNotReady(
                f"{self.name}: the console did not finish starting within {timeout:g} s"
            ) from None
        finally:
            self._waiter = None
            self._reader.abandon()

    async def _sync(self, *, timeout: float) -> None:
        """Bring an unknown console to a known state (see the module docstring)."""
        await self._wait_startup(timeout=timeout)
        for _ in range(SYNC_ATTEMPTS):
            if (await self._ask_focus(timeout=timeout)).settled:
                break
        answer = await self._command("worlds", timeout=timeout, stream=False)
        self._reader.remember_worlds(answer.lines)
        self._needs_sync = False

    async def _run_locked(
        self, command: str, *, timeout: float, stream: bool, sent: Sent | None = None
    ) -> Reply:
        if self._needs_sync:
            if self._metrics is not None:
                self._metrics.resyncs.inc()
            await self._sync(timeout=timeout)
        answer = await self._command(command, timeout=timeout, stream=stream, sent=sent)
        if not answer.settled:
            # the focus moved somewhere the reader could not predict: ask the console
            await self._ask_focus(timeout=timeout)
        return Reply(command, answer.lines)

    async def start(self, *, timeout: float = STARTUP_DEADLINE) -> None:
        """Synchronise with a console that is starting or already running."""
        async with self._lock:
            await self._sync(timeout=timeout)
        self._ready = True

    async def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        stream: bool = True,
        wait: float | None = None,
        sent: Sent | None = None,
    ) -> Reply:
        """Run one console command; its output without prompts or echo.

        ``wait`` bounds the time spent waiting for the console to be free (another
        command running): past it, :class:`ConsoleTimeout` and the command is never sent.
        ``sent``: see :meth:`_Group.run`.
        """
        async with self.exclusive(wait=wait) as group:
            return await group.run(command, timeout=timeout, stream=stream, sent=sent)

    @contextlib.asynccontextmanager
    async def exclusive(self, *, wait: float | None = None) -> AsyncIterator[_Group]:
        """Hold the console for several commands that nothing may interleave with."""
        try:
            async with asyncio.timeout(wait):
                await self._lock.acquire()
        except TimeoutError:
            raise ConsoleBusy(
                f"{self.name}: the console stayed busy with other commands for {wait:g} s"
            ) from None
        try:
            self._check_open()
            yield _Group(self)
        finally:
            self._lock.release()


class _Group:
    """Commands run while a :meth:`ConsoleDriver.exclusive` block holds the console."""

    def __init__(self, driver: ConsoleDriver) -> None:
        self.driver = driver

    async def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        stream: bool = True,
        sent: Sent | None = None,
    ) -> Reply:
        """Run one command within the group. ``sent``, when given, is called the moment the
        command is handed to the console (just before its line is written): a failure
        before that means it never ran, a failure after it means it may have."""
        return await self.driver._run_locked(
            command, timeout=timeout or deadline_for(command), stream=stream, sent=sent
        )

    async def worlds(self, *, timeout: float = COMMAND_DEADLINE) -> Reply:
        """``worlds``, not streamed; its names become the driver's :attr:`world_names`."""
        reply = await self.run("worlds", timeout=timeout, stream=False)
        self.driver._reader.remember_worlds(reply.lines)
        return reply

    async def focus(
        self, world: str | int, *, timeout: float = COMMAND_DEADLINE, stream: bool = False
    ) -> Reply:
        target = str(world) if isinstance(world, int) else quote(world)
        return await self.run(f"focus {target}", timeout=timeout, stream=stream)
