"""The I/O loop: stdin lines in, UTF-8 console text out, timers for chatter and activity.

One main thread reads stdin and runs commands; one background thread (only
when chatter or activity is on) sleeps on an Event until its next deadline, so
nothing busy-waits. Both write through one :class:`Writer`, whose lock makes
each burst (a command's whole answer plus the next prompt, or one batch of
chatter) atomic: log lines can land between the lines of an answer only where
:func:`resofleet.emulator.noise.inject_noise` puts them, never inside a line.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from . import activity, noise
from .interpreter import Interpreter
from .syntax import Reply
from .state import Clock, Randomness, Server

CHATTER_MIN_TICK_S = 0.01
"""At high chatter rates lines are batched so the writer makes at most 100 bursts/s."""
ANSI_LOG_COLOUR = "\x1b[37m"
ANSI_RESET = "\x1b[0m"


class Writer:
    """The single writer of stdout: encodes once, writes whole bursts under one lock.

    It writes straight to the file descriptor (no Python buffer), so every burst
    is flushed when ``write`` returns and a closed pipe cannot raise at exit.
    """

    def __init__(self, fd: int, *, crlf: bool) -> None:
        self.fd = fd
        self.crlf = crlf
        self.broken = False
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        if not text or self.broken:
            return
        if self.crlf:
            text = text.replace("\n", "\r\n")
        view = memoryview(text.encode("utf-8"))
        with self._lock:
            while view:
                try:
                    written = os.write(self.fd, view)
                except OSError:  # EPIPE and friends: the reader went away
                    self.broken = True
                    return
                view = view[written:]


def _lines(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


class Console:
    """Runs the emulated console until EOF, ``shutdown`` or ``crash``."""

    def __init__(self, server: Server, clock: Clock, rng: Randomness, *, stdin: BinaryIO,
                 writer: Writer, echo: bool, colours: bool) -> None:
        self.server = server
        self.rng = rng
        self.stdin = stdin
        self.writer = writer
        self.echo = echo
        self.paint: Callable[[str], str] | None = (
            (lambda line: f"{ANSI_LOG_COLOUR}{line}{ANSI_RESET}") if colours else None)
        self.interpreter = Interpreter(server, clock, rng)
        self.log_mode = False
        self.wedged = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> int:
        """Startup, then the prompt loop; returns the process exit code."""
        try:
            self._startup()
            self._start_background()
            self.writer.write(self.server.prompt())
            return self._loop()
        except KeyboardInterrupt:
            return 130
        finally:
            self._stop_background()

    def _log_lines(self, lines: list[str]) -> list[str]:
        return [self.paint(line) for line in lines] if self.paint else lines

    def _startup(self) -> None:
        server = self.server
        options = server.options
        worlds = list(server.worlds)
        if options.startup_log:
            self.writer.write(_lines(self._log_lines(noise.startup_lines(server))))
        per_world = options.startup_delay / max(1, len(worlds))
        for world in worlds:
            time.sleep(per_world)
            if options.startup_log:
                self.writer.write(_lines(self._log_lines(noise.world_start_lines(server, world))))
            else:
                self.writer.write("World running...\n")
        if not worlds:
            time.sleep(options.startup_delay)

    def _loop(self) -> int:
        while not self.writer.broken:
            raw = self.stdin.readline()
            if not raw:
                return 0
            line = raw.decode("utf-8", "replace").removesuffix("\n").removesuffix("\r")
            if self.echo:
                self.writer.write(f"{line}\n")
            if self.wedged:
                continue
            with self.server.lock:
                if self.log_mode:
                    self.log_mode = False
                    self.writer.write(self.server.prompt())
                    continue
                reply = self.interpreter.execute(line)
            if reply.crash:
                os._exit(reply.exit_code if reply.exit_code is not None else 1)
            if reply.wedge:
                self.wedged = True
                continue
            if reply.delay:
                time.sleep(reply.delay)
            code = self._answer(reply)
            if code is not None:
                return code
        return 0

    def _answer(self, reply: Reply) -> int | None:
        """Print a reply and the next prompt as one burst; returns an exit code to stop."""
        if reply.exit_code is not None:
            # Stop the timers first (outside the state lock they may be waiting for),
            # so nothing follows the last line of the shutdown sequence.
            self._stop_background()
            with self.server.lock:
                lines = noise.inject_noise(self.rng.noise, self.server, reply.lines, self.paint)
            self.writer.write(_lines(lines))
            return reply.exit_code
        with self.server.lock:
            lines = noise.inject_noise(self.rng.noise, self.server, reply.lines, self.paint)
            text = _lines(lines)
            if reply.log_mode:
                self.log_mode = True
            else:
                text += self.server.prompt() + _lines(reply.late)
            self.writer.write(text)
        return None

    def _start_background(self) -> None:
        options = self.server.options
        if options.chatter_rate > 0 or options.activity_interval > 0:
            self._thread = threading.Thread(target=self._background, name="emulator-timers",
                                            daemon=True)
            self._thread.start()

    def _stop_background(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._thread = None

    def _background(self) -> None:
        """Chatter and activity on their own deadlines; sleeps on the stop Event between them."""
        options = self.server.options
        rate = options.chatter_rate
        interval = options.activity_interval
        now = time.monotonic()
        budget, last = 0.0, now
        next_chatter = now + 1.0 / rate if rate > 0 else math.inf
        next_activity = (now + activity.next_delay(self.rng.activity, interval)
                         if interval > 0 else math.inf)
        while not self._stop.wait(max(0.0, min(next_chatter, next_activity) - time.monotonic())):
            now = time.monotonic()
            out: list[str] = []
            with self.server.lock:
                if now >= next_activity:
                    event = activity.step(self.server, self.rng.activity)
                    if event and self.log_mode:
                        out += self._log_lines([event])
                    next_activity = now + activity.next_delay(self.rng.activity, interval)
                if now >= next_chatter:
                    budget += rate * (now - last)
                    last = now
                    while budget >= 1.0:
                        block = noise.log_block(self.rng.chatter, self.server)
                        out += self._log_lines(block)
                        budget -= len(block)
                    next_chatter = now + max(CHATTER_MIN_TICK_S, (1.0 - budget) / rate)
            self.writer.write(_lines(out))
