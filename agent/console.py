"""The console driver: one command at a time, a reply ends at the prompt, not at silence.

The Resonite headless console prints ``<focused world name>>`` with no newline after every
command, and nothing else marks the end of a reply (CONSOLE.md). The driver therefore
tracks the focused world's name and ends a reply the moment that prompt stands after the
last newline. It keeps the name current through ``focus`` (by index or name), ``name``
(rename), and the worlds it learns from polls. When it cannot know the next prompt (a world
opened or closed, a stale list), a trailing ``...>`` with no newline after it, followed by
a short quiet period, ends the reply, and the driver re-learns the focused world with
``status``. Silence alone never ends a reply: a slow ``save`` is waited for up to its
deadline.

Bytes come in through :meth:`ConsoleDriver.feed` from a runtime (a child's stdout, a
Docker attach socket) and go out through the runtime's ``write``. Everything the console
prints becomes lines on :attr:`ConsoleDriver.on_line` (the live stream), except the answers
to the agent's own polling, which are not streamed (engine log lines printed meanwhile
still are). A user command appears in the stream as ``<prompt><command>``, the way a
terminal shows it, then its output lines.

TTY consoles (Docker ``tty: true``) echo each command and end lines with CRLF; the driver
strips ANSI escapes, normalises line ends and drops the echo, so replies look the same in
both modes.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from resofleet.contracts import CONTROL_CHARACTERS
from resofleet.contracts.deadlines import COMMAND_DEADLINE, LONG_COMMAND_DEADLINES, deadline_for

from .errors import ConsoleClosed, ConsoleTimeout
from .parsers import is_noise, parse_status, strip_ansi

__all__ = [
    "COMMAND_DEADLINE",
    "ConsoleDriver",
    "LONG_COMMAND_DEADLINES",
    "Reply",
    "deadline_for",
]

log = logging.getLogger(__name__)

#: Quiet time (s) after a trailing ``...>`` that ends a reply when the prompt is unknown.
#: Output arrives in bursts microseconds apart; 150 ms of quiet after a prompt-shaped tail
#: is far beyond any burst and short enough not to slow interactive use.
UNKNOWN_PROMPT_QUIET: Final = 0.15
#: Quiet time (s) after a trailing ``...>`` that is NOT the expected prompt before the
#: driver concludes its tracking is stale and accepts it.
STALE_PROMPT_QUIET: Final = 1.0
#: Quiet time (s) that ends the wait for startup when no prompt-shaped tail shows up.
SYNC_QUIET: Final = 0.5
#: Seconds of flowing output after the last ``World running...`` (or after the wait began)
#: that end the wait for startup when neither a prompt nor a quiet moment shows up: a
#: console chattering from its first prompt on is never quiet, and its prompt may come
#: glued to a log line the driver does not recognise. Asking ``status`` early is safe: the
#: console reads it once its prompt is up, and the driver learns the focus from the answer.
SYNC_FLOWING: Final = 2.0
#: The line the headless prints once per started world (CONSOLE.md, "Startup").
_WORLD_RUNNING: Final = "World running..."
#: ``status`` questions asked while synchronising before giving up on learning the focus.
SYNC_ATTEMPTS: Final = 3
#: Seconds to wait for the first prompt when a console starts (the engine boots, loads
#: worlds from the cloud...).
STARTUP_DEADLINE: Final = 300.0
#: Characters kept of a reply still being read; a runaway reply past this is cut.
MAX_REPLY_CHARS: Final = 4 * 1024 * 1024
#: Commands whose effect on the focused world the driver cannot predict.
_REFOCUSING: Final = frozenset({"startworldurl", "startworldtemplate", "close", "restart"})


def quote(argument: str) -> str:
    """An argument as the console expects it: wrapped in double quotes if it has spaces."""
    return f'"{argument}"' if (" " in argument or not argument) else argument


@dataclass(frozen=True, slots=True)
class Reply:
    command: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class _Pending:
    """The command being answered: its reply accumulates here until the prompt."""

    def __init__(
        self, command: str, expected: str | None, stream: bool, learn_from_status: bool = False
    ) -> None:
        self.command = command
        self.expected = expected
        self.stream = stream
        self.learn_from_status = learn_from_status
        self.text: list[str] = []  # complete lines
        self.chars = 0  # their total length, kept as lines come (a sum per line is quadratic)
        #: Whether the console has answered, so the next prompt-shaped line start is this
        #: command's prompt. Always, except for a ``status`` asked to learn the focus while
        #: synchronising: a prompt printed before the command was read may still come, so
        #: only its ``Name:`` line (or an ``Unknown command``) counts as its answer.
        self.answered = not learn_from_status
        self.done: asyncio.Future[tuple[list[str], str]] = (
            asyncio.get_running_loop().create_future()
        )


class ConsoleDriver:
    """Drives one headless console (see the module docstring).

    ``write`` sends bytes to the console's stdin. ``on_line(line, streamed)`` receives
    every complete output line; ``streamed`` is False for answers to internal commands.
    """

    def __init__(
        self,
        write: Callable[[bytes], Awaitable[None]],
        *,
        on_line: Callable[[str], None] | None = None,
        name: str = "console",
    ) -> None:
        self._write = write
        self._on_line = on_line or (lambda line: None)
        self.name = name
        self.prompt: str | None = None  # the focused world's prompt, e.g. "Harbor Lounge>"
        self.world_names: list[str] = []  # by index, from the last `worlds`
        self._partial = ""  # text after the last newline
        self._undecoded = b""  # an escape sequence cut in two by the runtime's chunking
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: _Pending | None = None
        self._lock = asyncio.Lock()
        self._data_event = asyncio.Event()
        self._closed = False
        self._close_reason = "the console closed"
        self._ready = asyncio.Event()
        self._needs_sync = True
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # while waiting for startup: a prompt seen glued to output, the last World running
        self._startup_prompt = False
        self._world_running_at = 0.0

    # -- input from the runtime ------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Console output, as it arrives (any chunking)."""
        if self._closed:
            return
        raw = self._undecoded + data
        cut = _incomplete_escape(raw)
        self._undecoded = raw[cut:]
        text = strip_ansi(self._decoder.decode(raw[:cut]))
        if not text:
            return
        loop = asyncio.get_running_loop()
        self._last_data = loop.time()
        text = text.replace("\r\n", "\n")
        buf = self._partial + text
        *complete, self._partial = buf.split("\n")
        for line in complete:
            line = line.rstrip("\r")
            pending = self._pending
            if (
                pending is not None
                and pending.expected is not None
                and not pending.done.done()
                and line.startswith(pending.expected)
            ):
                # the prompt came back with an engine log line glued onto it: the reply
                # ended at the prompt, the rest of the line is idle output
                prompt = pending.expected
                self._finish(pending, prompt, keep_partial=True)
                while line.startswith(prompt) and len(line) > len(prompt):
                    line = line[len(prompt):]
            elif (
                pending is not None
                and pending.expected is None
                and pending.answered
                and not pending.done.done()
            ):
                # the prompt is unknown and chatter never lets the console fall quiet: a
                # prompt-shaped start glued to an engine log line ends the reply
                prompt = _glued_prompt(line)
                if prompt is not None:
                    self._finish(pending, prompt, keep_partial=True)
                    line = line[len(prompt):]
            elif self.prompt is None and (pending is None or pending.done.done()):
                # no prompt known yet (startup): the first prompt, glued to chatter after it
                prompt = _glued_prompt(line)
                if prompt is not None:
                    self._startup_prompt = True
                    line = line[len(prompt):]
                elif line == _WORLD_RUNNING:
                    self._world_running_at = loop.time()
            self._line(line)
        if len(self._partial) > MAX_REPLY_CHARS:
            self._line(self._partial)
            self._partial = ""
        self._data_event.set()
        self._check_complete()

    def feed_eof(self, reason: str = "the console closed") -> None:
        """The console is gone (process exited, container died): fail the command now."""
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        if self._partial and not self._is_prompt_tail(self._partial):
            self._on_line(self._partial)
        self._partial = ""
        pending = self._pending
        if pending is not None and not pending.done.done():
            pending.done.set_exception(ConsoleClosed(f"{self.name}: {reason}"))
        self._data_event.set()
        if self._timer is not None:
            self._timer.cancel()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._closed

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the console has shown its first prompt and been synchronised."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()
        if self._closed:
            raise ConsoleClosed(f"{self.name}: {self._close_reason}")

    # -- lines and reply completion --------------------------------------------------

    def _line(self, line: str) -> None:
        pending = self._pending
        if pending is not None and pending.done.done():
            pending = None
        if pending is None:
            # idle output (engine log lines): strip a prompt it was glued onto
            self._on_line(self._unglue(line))
            return
        if pending.expected is None and pending.learn_from_status:
            line = _unglue_status_start(line)
            if line.startswith("Name: "):
                pending.expected = f"{line[len('Name: '):]}>"
                pending.answered = True
            elif line.rpartition(">")[2] == "Unknown command":
                pending.answered = True  # the quirk: the prompt after it is this command's
        if pending.chars < MAX_REPLY_CHARS:
            pending.text.append(line)
            pending.chars += len(line)
        if pending.stream or is_noise(line):
            if not (len(pending.text) == 1 and _is_echo(line, pending.command)):
                self._on_line(line)

    def _unglue(self, line: str) -> str:
        prompt = self.prompt
        while prompt and line.startswith(prompt) and len(line) > len(prompt):
            line = line[len(prompt):]
        return line

    def _is_prompt_tail(self, tail: str) -> bool:
        return bool(tail) and tail.endswith(">")

    def _check_complete(self) -> None:
        pending = self._pending
        if pending is None or pending.done.done():
            return
        tail = self._partial
        expected = pending.expected
        if expected is not None and tail.endswith(expected):
            rest = tail[: -len(expected)]
            if not rest or rest.endswith(">"):  # stacked prompts before it are fine
                self._finish(pending, expected)
                return
        if tail.endswith(">"):
            quiet = UNKNOWN_PROMPT_QUIET if expected is None else STALE_PROMPT_QUIET
            self._arm_timer(quiet)

    def _arm_timer(self, quiet: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(quiet, self._on_quiet, quiet)

    def _on_quiet(self, quiet: float) -> None:
        self._timer = None
        pending = self._pending
        if pending is None or pending.done.done():
            return
        loop = asyncio.get_running_loop()
        waited = loop.time() - self._last_data
        if waited + 1e-3 < quiet:
            self._arm_timer(quiet - waited)
            return
        tail = self._partial
        if tail.endswith(">"):
            if pending.expected is not None:
                log.warning(
                    "%s: expected prompt %r but the console shows %r; re-learning the focus",
                    self.name, pending.expected, tail,
                )
            self._finish(pending, None)

    def _finish(self, pending: _Pending, prompt: str | None, *, keep_partial: bool = False) -> None:
        tail = self._partial
        if not keep_partial:
            self._partial = ""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending.done.set_result((pending.text, prompt if prompt is not None else tail))

    # -- commands --------------------------------------------------------------------

    async def _send(
        self,
        command: str,
        *,
        timeout: float,
        stream: bool,
        expected: str | None,
        learn_from_status: bool = False,
    ) -> tuple[list[str], str | None]:
        """Send one line and wait for its reply; returns its lines and the prompt seen."""
        if self._closed:
            raise ConsoleClosed(f"{self.name}: {self._close_reason}")
        if CONTROL_CHARACTERS.search(command):  # the last line of defence: one call, one line
            raise ValueError(f"{self.name}: refusing to send a command with a control character")
        pending = _Pending(command, expected, stream, learn_from_status)
        self._pending = pending
        if stream:
            self._on_line(f"{self.prompt or ''}{command}")
        try:
            await self._write(command.encode("utf-8") + b"\n")
            async with asyncio.timeout(timeout):
                lines, seen = await pending.done
        except TimeoutError:
            self._needs_sync = True
            raise ConsoleTimeout(
                f"{self.name}: {command.split(maxsplit=1)[0]!r} got no complete answer "
                f"within {timeout:g} s"
            ) from None
        except (OSError, ConnectionError) as exc:
            raise ConsoleClosed(f"{self.name}: cannot write to the console ({exc})") from None
        finally:
            self._pending = None
        if lines and _is_echo(lines[0], command):
            lines = lines[1:]
        return lines, seen

    async def _run_locked(
        self, command: str, *, timeout: float, stream: bool
    ) -> Reply:
        if self._needs_sync:
            await self._sync(timeout=timeout)
        name = command.strip().split(maxsplit=1)[0].lower()
        expected = self._predict_prompt(command, name)
        lines, seen = await self._send(command, timeout=timeout, stream=stream, expected=expected)
        if expected is None or seen != expected:
            # the focus moved somewhere the driver could not predict: ask the console
            self.prompt = seen or self.prompt
            await self._learn_focus(timeout=timeout)
        else:
            self.prompt = seen
        return Reply(command, tuple(lines))

    def _predict_prompt(self, command: str, name: str) -> str | None:
        if self.prompt is None or name in _REFOCUSING:
            return None
        arg = _first_argument(command)
        if name == "name" and arg:
            return f"{arg}>"
        if name == "focus" and arg:
            target = arg
            if target.isdigit():
                index = int(target)
                if 0 <= index < len(self.world_names):
                    return f"{self.world_names[index]}>"
                return self.prompt  # out of range: an error line, focus unchanged
            return f"{target}>" if target in self.world_names else None
        return self.prompt

    async def _learn_focus(self, *, timeout: float) -> None:
        lines, seen = await self._send(
            "status", timeout=timeout, stream=False, expected=None, learn_from_status=True
        )
        status = parse_status("\n".join(lines))
        if status is not None:
            self.prompt = f"{status.name}>"
        else:
            self.prompt = seen

    async def _sync(self, *, timeout: float) -> None:
        """Bring an unknown console to a known state.

        Wait for startup to end (a prompt-shaped tail, or a quiet moment), then ask
        ``status``: its ``Name:`` line names the focused world, so its prompt is known
        even when engine log lines keep the console from ever falling quiet. The first
        command after startup may be answered ``Unknown command`` (a known quirk): that
        answer is spent and the question asked again.
        """
        loop = asyncio.get_running_loop()
        self.prompt = None
        self._startup_prompt = False
        began = loop.time()
        async with asyncio.timeout(timeout):
            while not self._partial.endswith(">"):
                if self._closed:
                    raise ConsoleClosed(f"{self.name}: {self._close_reason}")
                if self._startup_prompt or _glued_prompt(self._partial) is not None:
                    break  # the first prompt, with chatter glued onto it
                now = loop.time()
                if self._last_data and now - self._last_data >= SYNC_QUIET:
                    break
                if self._last_data and now - max(began, self._world_running_at) >= SYNC_FLOWING:
                    break
                self._data_event.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(UNKNOWN_PROMPT_QUIET):
                        await self._data_event.wait()
        # drop the prompt that ended the wait; a log line still being printed after it stays
        glued = _glued_prompt(self._partial)
        if self._partial.endswith(">"):
            self._partial = ""
        elif glued is not None:
            self._partial = self._partial[len(glued):]
        for _ in range(SYNC_ATTEMPTS):
            lines, seen = await self._send(
                "status", timeout=timeout, stream=False, expected=None, learn_from_status=True
            )
            status = parse_status("\n".join(lines))
            if status is not None:
                self.prompt = f"{status.name}>"
                break
            if not any(line.strip() == "Unknown command" for line in lines):
                self.prompt = seen  # no world has focus: the bare prompt is all there is
                break
        lines, seen = await self._send(
            "worlds", timeout=timeout, stream=False, expected=self.prompt
        )
        self._remember_worlds(lines)
        self._needs_sync = False

    def _remember_worlds(self, lines: list[str]) -> None:
        from .parsers import parse_worlds

        self.world_names = [w.name for w in parse_worlds("\n".join(lines))]

    async def start(self, *, timeout: float = STARTUP_DEADLINE) -> None:
        """Synchronise with a console that is starting or already running."""
        async with self._lock:
            await self._sync(timeout=timeout)
        self._ready.set()

    async def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        stream: bool = True,
        wait: float | None = None,
    ) -> Reply:
        """Run one console command; its output without prompts or echo.

        ``wait`` bounds the time spent waiting for the console to be free (another
        command running): past it, :class:`ConsoleTimeout` and the command is never sent.
        """
        async with self.exclusive(wait=wait) as group:
            return await group.run(command, timeout=timeout, stream=stream)

    @contextlib.asynccontextmanager
    async def exclusive(self, *, wait: float | None = None) -> AsyncIterator[_Group]:
        """Hold the console for several commands that nothing may interleave with."""
        try:
            async with asyncio.timeout(wait):
                await self._lock.acquire()
        except TimeoutError:
            raise ConsoleTimeout(
                f"{self.name}: the console stayed busy with other commands for {wait:g} s"
            ) from None
        try:
            if self._closed:
                raise ConsoleClosed(f"{self.name}: {self._close_reason}")
            yield _Group(self)
        finally:
            self._lock.release()

    # -- tracking helpers used by groups ---------------------------------------------

    @property
    def focused_index(self) -> int | None:
        if self.prompt is None:
            return None
        name = self.prompt[:-1]
        try:
            return self.world_names.index(name)
        except ValueError:
            return None


class _Group:
    """Commands run while a :meth:`ConsoleDriver.exclusive` block holds the console."""

    def __init__(self, driver: ConsoleDriver) -> None:
        self.driver = driver

    async def run(self, command: str, *, timeout: float | None = None, stream: bool = True) -> Reply:
        return await self.driver._run_locked(
            command, timeout=timeout or deadline_for(command), stream=stream
        )

    async def worlds(self, *, timeout: float = COMMAND_DEADLINE) -> Reply:
        reply = await self.run("worlds", timeout=timeout, stream=False)
        self.driver._remember_worlds(list(reply.lines))
        return reply

    async def focus(self, world: str | int, *, timeout: float = COMMAND_DEADLINE, stream: bool = False) -> Reply:
        target = str(world) if isinstance(world, int) else quote(world)
        return await self.run(f"focus {target}", timeout=timeout, stream=stream)


#: Longest ANSI sequence held back while waiting for its end (a CSI is a few bytes).
_MAX_ESCAPE: Final = 32
_ESCAPE_END = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def _incomplete_escape(data: bytes) -> int:
    """Where an unfinished escape sequence starts at the end of ``data`` (or its length)."""
    start = data.rfind(b"\x1b", max(0, len(data) - _MAX_ESCAPE))
    if start < 0 or _ESCAPE_END.match(data, start):
        return len(data)
    return start


def _glued_prompt(line: str) -> str | None:
    """The prompt at the start of ``line`` when an engine log line is glued onto it.

    The prompt is printed with no newline, so idle chatter starts on the prompt's line:
    ``Night Market>SIGNALR: ...`` (CONSOLE.md). World names may hold ``>``, so the prompt
    ends at the first ``>`` followed by a recognised log line; a line that is itself a log
    line (``Updated: a -> b``) has no prompt.
    """
    if ">" not in line or is_noise(line):
        return None
    at = line.find(">")
    while at >= 0:
        if is_noise(line[at + 1:]):
            return line[: at + 1]
        at = line.find(">", at + 1)
    return None


def _unglue_status_start(line: str) -> str:
    """``X>Name: X`` as ``Name: X``: a ``status`` sent before the console showed its
    first prompt is answered on that prompt's line."""
    at = line.find(">Name: ")
    while at >= 0:
        if line[:at] == line[at + len(">Name: "):]:
            return line[at + 1:]
        at = line.find(">Name: ", at + 1)
    return line


def _is_echo(line: str, command: str) -> bool:
    return line.strip() == command.strip()


_ARGUMENT = re.compile(r'\s*(?:"([^"]*)"|(\S+))')


def _first_argument(command: str) -> str | None:
    """The first argument as the console splits them: a double-quoted run or a word."""
    parts = command.strip().split(maxsplit=1)
    if len(parts) < 2:
        return None
    match = _ARGUMENT.match(parts[1])
    if match is None:
        return None
    return match.group(1) if match.group(1) is not None else match.group(2)
