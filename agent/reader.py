"""The console reader: console bytes and the time in, lines and answers out. Sans-I/O.

No event loop, no lock, no writes, no futures: the caller (:mod:`resofleet.agent.console`, the
driver) feeds what the console printed with :meth:`ConsoleReader.receive_data`, the end of
its output with :meth:`~ConsoleReader.receive_eof`, and the current time whenever a
:class:`CallAt` asked for it with :meth:`~ConsoleReader.tick`; it collects
:meth:`~ConsoleReader.events_received` and writes :meth:`~ConsoleReader.data_to_send`.
Times are seconds on any monotonic clock, the same for every call.

What it relies on, the Resonite headless console:

- The prompt is the focused world's name and ``>`` (``Harbor Lounge>``; a bare ``>`` when
  no world has focus), printed with NO newline after every command. Nothing else marks the
  end of an answer. A command that prints nothing leaves its prompt stacked before the next
  one (``A>A>``); ``focus`` and ``name`` change the next prompt silently. World names may
  hold ``>``.
- The engine's log lines (:func:`~resofleet.agent.parsers.is_noise`: ``SIGNALR: ...``, ``Updated:
  a -> b``, ...) are printed whenever they happen: inside an answer, or glued onto a prompt
  standing idle (``Night Market>SIGNALR: ...``), so a console may never fall quiet.
- Startup prints log lines, ``World running...`` once per started world, then the first
  prompt (the last world started).
- The first command after startup is sometimes answered ``Unknown command`` (a quirk).
- In a TTY (Docker ``tty: true``) lines end with CRLF, each command is echoed before its
  answer, and ANSI escapes may appear, cut anywhere by the transport's chunking.

The rules it applies:

- A reply ends the moment its expected prompt stands after the last newline (stacked
  prompts before it are fine), or when a line starts with it (a log line glued onto it;
  the rest of the line is idle output). Silence alone never ends a reply.
- The expected prompt is predicted per command (``focus N``, ``focus "name"``, ``name X``;
  unknown after ``startWorldURL``/``startWorldTemplate``/``close``/``restart``). Unknown,
  a trailing ``...>`` after :data:`UNKNOWN_PROMPT_QUIET` of silence ends the reply, and
  so does a prompt-shaped start glued to a log line. Known but not what the console shows,
  the trailing ``...>`` is accepted after :data:`STALE_PROMPT_QUIET`. After every reply
  the tracked prompt is the one that ended it; :attr:`Answer.settled` says whether it was
  the predicted one, else the caller asks ``status`` (:meth:`ConsoleReader.send_status`),
  whose ``Name:`` line names the focused world (and whose ``Unknown command``, the quirk,
  leaves it unsettled: ask again).
- The startup wait (:meth:`ConsoleReader.expect_startup`) ends at a trailing ``...>``, a
  prompt glued to a log line, :data:`SYNC_QUIET` of silence, or :data:`SYNC_FLOWING` of
  flowing output after the last ``World running...``; :class:`StartupEnded` says which.
- Every complete line is a :class:`Line` event, CR and ANSI removed. ``streamed`` is False
  for the answer of a command sent with ``stream=False`` (log lines inside it stay
  streamed) and for its TTY echo. Idle lines lose the prompt glued to them.
- A command sent with ``stream=True`` is streamed as ``<prompt><command>``, as a terminal
  shows it, once the console shows it read it, never when it is sent (a frozen or dead
  console never does): in a TTY at the console's own echo, which that line stands for;
  over pipes (no echo) at the first sign of its answer: its first line that is not an
  engine log line (those prove nothing, so any before it come first), the prompt ending
  a silent reply, or an unfinished line when the console closes. A command abandoned or
  cut off before any such sign is never echoed.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from resofleet.contracts import CONTROL_CHARACTERS, command_name

from .parsers import is_noise, parse_status, parse_worlds, strip_ansi

__all__ = [
    "MAX_REPLY_CHARS",
    "STALE_PROMPT_QUIET",
    "SYNC_FLOWING",
    "SYNC_QUIET",
    "TIMER_SLACK",
    "UNKNOWN_PROMPT_QUIET",
    "Answer",
    "CallAt",
    "Closed",
    "ConsoleReader",
    "Event",
    "Line",
    "StartupEnded",
    "StartupReason",
]

#: Quiet time (s) after a trailing ``...>`` that ends a reply when the prompt is unknown.
#: Output arrives in bursts microseconds apart; 150 ms of quiet after a prompt-shaped tail
#: is far beyond any burst and short enough not to slow interactive use.
UNKNOWN_PROMPT_QUIET: Final = 0.15
#: Quiet time (s) after a trailing ``...>`` that is NOT the expected prompt before the
#: reader concludes its tracking is stale and accepts it.
STALE_PROMPT_QUIET: Final = 1.0
#: Quiet time (s) that ends the wait for startup when no prompt-shaped tail shows up.
SYNC_QUIET: Final = 0.5
#: Seconds of flowing output after the last ``World running...`` (or after the wait began)
#: that end the wait for startup when neither a prompt nor a quiet moment shows up: a
#: console chattering from its first prompt on is never quiet, and its prompt may come
#: glued to a log line the reader does not recognise. Asking ``status`` early is safe: the
#: console reads it once its prompt is up, and its answer names the focused world.
SYNC_FLOWING: Final = 2.0
#: Characters kept of a reply still being read, and longest line held while waiting for
#: its newline: a runaway reply past this is cut.
MAX_REPLY_CHARS: Final = 4 * 1024 * 1024
#: Seconds a :meth:`ConsoleReader.tick` may come before the time its :class:`CallAt`
#: asked for and still count as on time: an event loop runs a timer up to its clock
#: resolution (about 1 ms) early.
TIMER_SLACK: Final = 1e-3
#: The line the headless prints once per started world.
_WORLD_RUNNING: Final = "World running..."
#: The console's answer to a command it does not know (and the first-command quirk's).
_UNKNOWN_COMMAND: Final = "Unknown command"
#: Commands whose effect on the focused world cannot be predicted.
_REFOCUSING: Final = frozenset({"startworldurl", "startworldtemplate", "close", "restart"})
#: Longest ANSI sequence held back while waiting for its end (a CSI is a few bytes).
_MAX_ESCAPE: Final = 32
#: The start of an escape sequence that more bytes could complete, in the forms
#: :func:`~resofleet.agent.parsers.strip_ansi` removes: a string sequence (OSC, DCS, SOS, PM, APC)
#: not yet ended by BEL, ST or a newline; a CSI without its final byte; an ESC with only
#: intermediate bytes after it.
_ESCAPE_PREFIX: Final = re.compile(
    rb"\x1b(?:[P\]X^_][^\x07\x1b\n]*|\[[0-?]*[ -/]*|[ -/]*)"
)
_ARGUMENT: Final = re.compile(r'\s*(?:"([^"]*)"|(\S+))')


# -- events ------------------------------------------------------------------------------


class Line(NamedTuple):
    """One complete console line; ``streamed``: whether it belongs on the live stream.

    A named tuple, unlike the other events: there is one per console line, and a tuple is
    the cheapest object to make."""

    text: str
    streamed: bool


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply has ended.

    ``lines``: what the command printed, without prompts and without the TTY echo.
    ``prompt``: what ended it (the prompt, or the prompt-shaped tail after a quiet period).
    ``expected``: the prompt the reader was waiting for then (None: unknown).
    ``settled``: whether the reader now knows the focused world's prompt; False after an
    unpredicted prompt or an ``Unknown command`` to ``status``: ask ``status`` (again).
    """

    command: str
    lines: tuple[str, ...]
    prompt: str
    expected: str | None
    settled: bool


@dataclass(frozen=True, slots=True)
class CallAt:
    """Call :meth:`ConsoleReader.tick` at ``when`` (or later): a quiet period may end then.

    Each replaces the previous one; a tick that finds nothing to do is harmless."""

    when: float


StartupReason = Literal["prompt", "glued prompt", "quiet", "flowing"]


@dataclass(frozen=True, slots=True)
class StartupEnded:
    """The wait begun by :meth:`ConsoleReader.expect_startup` is over, and why."""

    reason: StartupReason


@dataclass(frozen=True, slots=True)
class Closed:
    """The console's output ended; ``interrupted``: the command it was answering, if any."""

    interrupted: str | None


Event = Line | Answer | CallAt | StartupEnded | Closed


# -- the reader ------------------------------------------------------------------------


class _Pending:
    """The command being answered: its reply accumulates here until the prompt."""

    __slots__ = ("answered", "chars", "command", "echo", "expected", "lines", "predicted",
                 "stream", "status")

    def __init__(self, command: str, expected: str | None, *, stream: bool, status: bool) -> None:
        self.command = command
        self.echo: str | None = None  # ``<prompt><command>`` until streamed; None: not streamed
        self.expected = expected  # the prompt waited for; a status answer may teach it
        self.predicted = expected  # the prompt predicted when it was sent
        self.stream = stream
        self.status = status  # a ``status`` asked to learn the focused world
        self.lines: list[str] = []
        self.chars = 0  # their total length, kept as lines come (a sum per line is quadratic)
        #: Whether the console has answered, so the next prompt-shaped line start is this
        #: command's prompt. Always, except for a ``status`` asked to learn the focus: a
        #: prompt printed before the command was read may still come, so only its
        #: ``Name:`` line (or an ``Unknown command``) counts as its answer.
        self.answered = not status


class ConsoleReader:
    """One console's output, framed into lines and replies (see the module docstring)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._undecoded = b""  # an escape sequence cut in two by the transport's chunking
        self._partial = ""  # text after the last newline
        self._prompt: str | None = None  # the focused world's prompt, e.g. "Harbor Lounge>"
        self._world_names: list[str] = []  # by index, from the last `worlds`
        self._pending: _Pending | None = None
        self._eof = False
        self._last_data: float | None = None
        self._startup_began: float | None = None  # set while waiting for startup
        self._startup_prompt = False  # a first prompt seen glued to output meanwhile
        self._world_running_at: float | None = None
        self._call_at: float | None = None  # the last CallAt emitted
        self._events: list[Event] = []
        self._to_send: list[bytes] = []

    # -- state -------------------------------------------------------------------------

    @property
    def prompt(self) -> str | None:
        """The focused world's prompt as tracked (None: unknown, before startup)."""
        return self._prompt

    @property
    def world_names(self) -> list[str]:
        """World names by index, from the last :meth:`remember_worlds`."""
        return self._world_names

    @property
    def focused_index(self) -> int | None:
        """The focused world's index in :attr:`world_names`, if it is there."""
        if self._prompt is None:
            return None
        try:
            return self._world_names.index(self._prompt[:-1])
        except ValueError:
            return None

    @property
    def closed(self) -> bool:
        """Whether :meth:`receive_eof` was called."""
        return self._eof

    # -- output of the reader ----------------------------------------------------------

    def events_received(self) -> list[Event]:
        """The events since the last call, in order."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """The bytes to write to the console's stdin since the last call, in order."""
        data, self._to_send = self._to_send, []
        return data

    # -- input from the console and the clock ------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Console output as it arrives, in any chunking, at time ``now``."""
        if self._eof:
            return
        raw = self._undecoded + data
        cut = _incomplete_escape(raw)
        self._undecoded = raw[cut:]
        text = strip_ansi(self._decoder.decode(raw[:cut]))
        if not text:
            return
        self._last_data = now
        text = text.replace("\r\n", "\n")
        *complete, self._partial = (self._partial + text).split("\n")
        for line in complete:
            self._complete_line(line.rstrip("\r"), now)
        if len(self._partial) > MAX_REPLY_CHARS:
            self._line(self._partial)
            self._partial = ""
        self._check_startup(now)
        self._check_prompt()
        self._schedule()

    def receive_eof(self) -> None:
        """The console's output ended (process exited, container died)."""
        if self._eof:
            return
        self._eof = True
        if self._partial and not self._partial.endswith(">"):
            if self._pending is not None and not is_noise(self._partial):
                self._echo(self._pending)
            self._events.append(Line(self._partial, True))
        self._partial = ""
        pending, self._pending = self._pending, None
        self._startup_began = None
        self._events.append(Closed(pending.command if pending is not None else None))

    def tick(self, now: float) -> None:
        """The time a :class:`CallAt` asked for has come. Too early, it only asks again."""
        self._call_at = None
        if self._eof:
            return
        self._check_startup(now)
        pending = self._pending
        if pending is not None and self._partial.endswith(">") and self._last_data is not None:
            if now + TIMER_SLACK >= self._last_data + _quiet(pending):
                # quiet after a prompt-shaped tail: the prompt was unknown, or the
                # tracking is stale (the Answer shows it: expected != prompt)
                self._finish(None)
        self._schedule()

    # -- what the caller asks for ------------------------------------------------------

    def expect_startup(self, now: float) -> None:
        """Wait for a starting (or unknown) console to show its prompt; ends with
        :class:`StartupEnded` (at once if it already has). Forgets the tracked prompt."""
        self._check_idle()
        self._prompt = None
        self._startup_prompt = False
        self._startup_began = now
        self._check_startup(now)
        self._schedule()

    def send_command(self, command: str, *, stream: bool = True) -> None:
        """Send one command line and read its reply, expecting the prompt predicted for it.

        Raises ValueError for a command with a control character (it would be more than
        one console line) and RuntimeError while a reply or the startup is still awaited.
        """
        self._send(command, self._predict(command), stream=stream, status=False)

    def send_status(self) -> None:
        """Ask ``status`` to learn the focused world: its ``Name:`` line gives the prompt
        (even glued to the prompt it was typed at: ``X>Name: X``). Not streamed."""
        self._send("status", None, stream=False, status=True)

    def abandon(self) -> None:
        """Stop waiting for the reply (or the startup) being read: the caller gave up.
        Later output is idle output. A no-op when nothing is awaited."""
        self._pending = None
        self._startup_began = None

    def remember_worlds(self, lines: Iterable[str]) -> None:
        """The world names, from the lines of a ``worlds`` answer (for ``focus N``)."""
        self._world_names = [w.name for w in parse_worlds("\n".join(lines))]

    # -- lines -------------------------------------------------------------------------

    def _complete_line(self, line: str, now: float) -> None:
        pending = self._pending
        expected = pending.expected if pending is not None else None
        if expected is not None and line.startswith(expected):
            # the prompt came back with an engine log line glued onto it: the reply
            # ended at the prompt, the rest of the line is idle output
            self._finish(expected, keep_partial=True)
            while line.startswith(expected) and len(line) > len(expected):
                line = line[len(expected):]
        elif pending is not None and pending.expected is None and pending.answered:
            # the prompt is unknown and chatter never lets the console fall quiet: a
            # prompt-shaped start glued to an engine log line ends the reply
            glued = _glued_prompt(line)
            if glued is not None:
                self._finish(glued, keep_partial=True)
                line = line[len(glued):]
        elif self._prompt is None and pending is None:
            # no prompt known yet (startup): the first prompt, glued to chatter after it
            glued = _glued_prompt(line)
            if glued is not None:
                self._startup_prompt = True
                line = line[len(glued):]
            elif line == _WORLD_RUNNING:
                self._world_running_at = now
        self._line(line)

    def _line(self, line: str) -> None:
        pending = self._pending
        if pending is None:
            self._events.append(Line(self._unglue(line), True))
            return
        if pending.expected is None and pending.status:
            line = _unglue_status_start(line)
            if line.startswith("Name: "):
                pending.expected = f"{line[len('Name: '):]}>"
                pending.answered = True
            elif line.rpartition(">")[2] == _UNKNOWN_COMMAND:
                pending.answered = True  # the quirk: the prompt after it is this command's
        if pending.chars < MAX_REPLY_CHARS:
            pending.lines.append(line)
            pending.chars += len(line)
        if len(pending.lines) == 1 and _is_echo(line, pending.command):
            if pending.echo is None:  # a poll's echo stays off the stream
                self._events.append(Line(line, False))
            self._echo(pending)  # a TTY's echo: the console read it; shown as a terminal does
            return
        if pending.echo is not None and not is_noise(line):
            self._echo(pending)
        self._events.append(Line(line, pending.stream or is_noise(line)))

    def _echo(self, pending: _Pending) -> None:
        """Stream the command's ``<prompt><command>`` line, once, if it has one."""
        if pending.echo is not None:
            self._events.append(Line(pending.echo, True))
            pending.echo = None

    def _unglue(self, line: str) -> str:
        """An idle line without the known prompt(s) glued before it."""
        prompt = self._prompt
        while prompt and line.startswith(prompt) and len(line) > len(prompt):
            line = line[len(prompt):]
        return line

    # -- replies -----------------------------------------------------------------------

    def _check_prompt(self) -> None:
        """End the reply if its expected prompt stands after the last newline."""
        pending = self._pending
        if pending is None or pending.expected is None:
            return
        tail = self._partial
        if tail.endswith(pending.expected):
            rest = tail[: -len(pending.expected)]
            if not rest or rest.endswith(">"):  # stacked prompts before it are fine
                self._finish(pending.expected)

    def _finish(self, prompt: str | None, *, keep_partial: bool = False) -> None:
        """End the pending reply at ``prompt`` (None: at the prompt-shaped tail)."""
        pending = self._pending
        assert pending is not None
        self._pending = None
        self._echo(pending)  # a reply that printed nothing: its prompt shows it was read
        seen = prompt if prompt is not None else self._partial
        if not keep_partial:
            self._partial = ""
        lines = pending.lines
        if lines and _is_echo(lines[0], pending.command):
            lines = lines[1:]
        if pending.status:
            status = parse_status("\n".join(lines))
            self._prompt = f"{status.name}>" if status is not None else seen
            settled = status is not None or not any(
                line.strip() == _UNKNOWN_COMMAND for line in lines
            )
        else:
            self._prompt = seen
            settled = seen == pending.predicted
        self._events.append(Answer(pending.command, tuple(lines), seen, pending.expected, settled))

    # -- startup -----------------------------------------------------------------------

    def _check_startup(self, now: float) -> None:
        began = self._startup_began
        if began is None:
            return
        partial = self._partial
        glued = _glued_prompt(partial)
        reason: StartupReason | None = None
        if partial.endswith(">"):
            reason = "prompt"
        elif self._startup_prompt or glued is not None:
            reason = "glued prompt"
        elif self._last_data is not None:
            if now + TIMER_SLACK >= self._last_data + SYNC_QUIET:
                reason = "quiet"
            elif now + TIMER_SLACK >= self._flowing_since(began) + SYNC_FLOWING:
                reason = "flowing"
        if reason is None:
            return
        self._startup_began = None
        # drop the prompt that ended the wait; a log line still being printed after it stays
        if partial.endswith(">"):
            self._partial = ""
        elif glued is not None:
            self._partial = partial[len(glued):]
        self._events.append(StartupEnded(reason))

    def _flowing_since(self, began: float) -> float:
        running = self._world_running_at
        return began if running is None else max(began, running)

    # -- sending -----------------------------------------------------------------------

    def _check_idle(self) -> None:
        if self._eof:
            raise RuntimeError("the console has closed")
        if self._pending is not None or self._startup_began is not None:
            raise RuntimeError("the console is still answering: abandon() it first")

    def _send(self, command: str, expected: str | None, *, stream: bool, status: bool) -> None:
        if CONTROL_CHARACTERS.search(command):  # the last line of defence: one call, one line
            raise ValueError("refusing to send a command with a control character")
        self._check_idle()
        self._pending = _Pending(command, expected, stream=stream, status=status)
        if stream:
            self._pending.echo = f"{self._prompt or ''}{command}"
        self._to_send.append(command.encode("utf-8") + b"\n")

    def _predict(self, command: str) -> str | None:
        """The prompt the console will show after ``command``; None if unpredictable."""
        name = command_name(command)
        if self._prompt is None or name in _REFOCUSING:
            return None
        arg = _first_argument(command)
        if name == "name" and arg:
            return f"{arg}>"
        if name == "focus" and arg:
            if arg.isdigit():
                index = int(arg)
                if 0 <= index < len(self._world_names):
                    return f"{self._world_names[index]}>"
                return self._prompt  # out of range: an error line, focus unchanged
            return f"{arg}>" if arg in self._world_names else None
        return self._prompt

    # -- timers ------------------------------------------------------------------------

    def _schedule(self) -> None:
        """Emit a :class:`CallAt` when the next quiet period to watch has changed."""
        when = self._next_call()
        if when is not None and when != self._call_at:
            self._events.append(CallAt(when))
        self._call_at = when

    def _next_call(self) -> float | None:
        last = self._last_data
        if self._eof or last is None:
            return None  # silence before any output ends nothing
        if self._startup_began is not None:
            return min(last + SYNC_QUIET, self._flowing_since(self._startup_began) + SYNC_FLOWING)
        pending = self._pending
        if pending is not None and self._partial.endswith(">"):
            return last + _quiet(pending)
        return None


# -- pure helpers ------------------------------------------------------------------------


def _quiet(pending: _Pending) -> float:
    return UNKNOWN_PROMPT_QUIET if pending.expected is None else STALE_PROMPT_QUIET


def _incomplete_escape(data: bytes) -> int:
    """Where an unfinished escape sequence starts at the end of ``data`` (or its length)."""
    start = data.rfind(b"\x1b", max(0, len(data) - _MAX_ESCAPE))
    if start >= 0 and _ESCAPE_PREFIX.fullmatch(data, start):
        return start
    return len(data)


def _glued_prompt(line: str) -> str | None:
    """The prompt at the start of ``line`` when an engine log line is glued onto it.

    The prompt is printed with no newline, so idle chatter starts on the prompt's line:
    ``Night Market>SIGNALR: ...``. World names may hold ``>``, so the prompt ends at the
    first ``>`` followed by a recognised log line; a line that is itself a log line
    (``Updated: a -> b``) has no prompt.
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


def _first_argument(command: str) -> str | None:
    """The first argument as the console splits them: a double-quoted run or a word."""
    parts = command.strip().split(maxsplit=1)
    if len(parts) < 2:
        return None
    match = _ARGUMENT.match(parts[1])
    if match is None:
        return None
    return match.group(1) if match.group(1) is not None else match.group(2)
