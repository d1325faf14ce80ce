"""Console output: numbered, kept in a ring buffer, batched onto the bus.

Every line gets the next ``seq`` of its server. ``epoch`` is drawn when the agent starts,
so a client that sees a new epoch (or a gap in ``seq``) knows to ask ``get_output``.
Lines are published in batches: whichever comes first of :data:`BATCH_DELAY` after the
first unpublished line, or :data:`BATCH_LINES` lines.

Nobody listening. The bus says whether anyone took a batch (a gateway with a client
watching this server, a work queue bound to its output): while the last one reached
nobody, batches go out :data:`UNHEARD_BATCH_DELAY` apart instead, so an agent whose
servers nobody watches publishes a few batches a second per server, not forty, and the
broker routes them to nowhere that much less often. Nothing is dropped for it: the lines
wait, and a watcher that appears gets them with the next batch, which also brings the
delay back to :data:`BATCH_DELAY`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Final

from resofleet.contracts import ContainerOutputBatch, OutputHistory, OutputLine
from resofleet.contracts.client import MAX_OUTPUT_BYTES

__all__ = [
    "BATCH_DELAY", "BATCH_LINES", "HELD_CHARS", "LINE_CHARS", "LINE_JSON", "OutputLog", "RING_LINES",
    "UNHEARD_BATCH_DELAY", "cut_line", "page_size",
]

log = logging.getLogger(__name__)

#: Lines of history kept per server for ``get_output``: a long session's worth of
#: console (minutes of chatter), a few MB at most.
RING_LINES: Final = 10_000
#: Characters of one line that are kept and streamed; the rest is cut and the line says
#: how much (a console prints lines of tens of characters; a line of megabytes is a fault,
#: and would otherwise be held in the ring and the backlog thousands of times over).
LINE_CHARS: Final = 16 * 1024
#: Characters the ring holds at most, and the publish backlog too: the oldest lines go
#: first when either the line count or this is reached. 8 Mi characters, so a server's
#: output costs tens of MB at worst, however long its lines.
HELD_CHARS: Final = 8 * 1024 * 1024
#: Seconds a line may wait for others before its batch goes out: short enough to feel
#: live, long enough to gather the bursts a console prints. 25 ms: the gateway gathers
#: steady output into rounds anyway (10 ms and up), so a shorter delay only adds bus
#: messages (up to 40 per second per server here, instead of 100, for every gateway and
#: the broker to handle), and a line still reaches a browser well within 100 ms, below
#: what a person reading a console notices.
BATCH_DELAY: Final = 0.025
#: Seconds between batches while the last one reached nobody (see the module docstring):
#: a fifth of a second is still "live" to a person who has just opened a console, and cuts
#: the batches nobody reads eightfold (bench/README.md: the output of commands nobody
#: watches was about a tenth of an agent's CPU per request).
UNHEARD_BATCH_DELAY: Final = 0.2
#: Lines per bus message at most.
BATCH_LINES: Final = 256
#: Lines waiting for the bus at most; past it, the oldest are not published (they stay in
#: the ring for get_output), and the next flush logs how many were skipped.
PUBLISH_BACKLOG: Final = 50_000
#: Bytes of JSON around one line in an ``output_history`` (``{"seq":123456,"output":""},``),
#: counted with its text against :data:`~resofleet.contracts.client.MAX_OUTPUT_BYTES`.
LINE_JSON: Final = 32


def page_size(lines: list[OutputLine], max_bytes: int = MAX_OUTPUT_BYTES) -> int:
    """How many of ``lines``, from the first, fit in ``max_bytes`` (their UTF-8 text plus
    :data:`LINE_JSON` each); always at least one, so a page never comes back empty."""
    total = 0
    for n, line in enumerate(lines):
        total += len(line.output.encode("utf-8", "surrogatepass")) + LINE_JSON
        if total > max_bytes:
            return max(n, 1)
    return len(lines)


def cut_line(line: str, limit: int = LINE_CHARS) -> str:
    """``line``, or its first ``limit`` characters and a note of how many were cut."""
    if len(line) <= limit:
        return line
    return f"{line[:limit]} [{len(line) - limit} characters cut]"


class OutputLog:
    """The output of one server (see the module docstring)."""

    def __init__(
        self,
        server: str,
        publish: Callable[[ContainerOutputBatch], Awaitable[bool | None]],
        *,
        ring: int = RING_LINES,
    ) -> None:
        self.server = server
        self.epoch = secrets.token_hex(6)
        self.seq = 0
        self._ring_lines = ring
        self._ring: collections.deque[OutputLine] = collections.deque()
        self._ring_chars = 0
        self._unsent: collections.deque[OutputLine] = collections.deque()
        self._unsent_chars = 0
        self._publish = publish
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._skipped = 0  # lines pushed out of a full backlog since the last flush
        #: Lines never published because the backlog was full, since start (metrics).
        self.dropped = 0
        #: Whether the last batch reached anyone (``publish`` said so, or said nothing).
        self.heard = True

    def add(self, line: str) -> None:
        self.seq += 1
        line = cut_line(line)
        size = len(line)
        item = OutputLine(seq=self.seq, output=line)
        ring = self._ring
        ring.append(item)
        self._ring_chars += size
        while len(ring) > self._ring_lines or (self._ring_chars > HELD_CHARS and len(ring) > 1):
            self._ring_chars -= len(ring.popleft().output)
        unsent = self._unsent
        while unsent and (len(unsent) >= PUBLISH_BACKLOG or self._unsent_chars + size > HELD_CHARS):
            self._unsent_chars -= len(unsent.popleft().output)
            self._skipped += 1
            self.dropped += 1
        unsent.append(item)
        self._unsent_chars += size
        self._wake.set()

    def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name=f"output:{self.server}")

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
            self._flusher = None
        await self._flush_now()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            if len(self._unsent) < BATCH_LINES:
                await asyncio.sleep(BATCH_DELAY if self.heard else UNHEARD_BATCH_DELAY)
            self._wake.clear()
            await self._flush_now()
            if self._unsent:
                self._wake.set()

    async def _flush_now(self) -> None:
        if self._skipped:
            log.warning(
                "server=%s: %d output lines not published (the bus fell %d lines or %d "
                "characters behind); the ring keeps the latest for get_output",
                self.server, self._skipped, PUBLISH_BACKLOG, HELD_CHARS,
            )
            self._skipped = 0
        while self._unsent:
            n = min(BATCH_LINES, len(self._unsent))
            lines = [self._unsent.popleft() for _ in range(n)]
            self._unsent_chars -= sum(len(line.output) for line in lines)
            try:
                taken = await self._publish(
                    ContainerOutputBatch(server=self.server, epoch=self.epoch, lines=lines)
                )
                self.heard = taken is not False
            except Exception as exc:  # the bus is down: lines stay in the ring
                log.warning("server=%s: %d output lines not published: %s", self.server, n, exc)
                return

    def history(self, since: int | None, epoch: str | None, limit: int | None) -> OutputHistory:
        """The ring's lines for ``get_output``, at most ``limit`` of them and at most
        :data:`~resofleet.contracts.client.MAX_OUTPUT_BYTES` of text (one line at least),
        oldest first; ``complete`` false when lines are left for the client to ask for.

        - ``since`` in this ``epoch``: the lines after it (``complete`` false when some of
          them already fell out of the ring);
        - ``since`` in another epoch (the agent restarted since the client's line): the
          whole ring with ``reset`` true, since a ``seq`` of one epoch says nothing about
          another;
        - ``since`` without ``epoch``: the same whole ring with ``reset`` true, because
          nothing tells which epoch the ``seq`` counts in, and reading it in this one would
          silently skip this epoch's first lines after a restart. ``since`` 0 is the
          exception: every line of any epoch comes after 0. (The gateway fills in the
          epoch of the last ``output_history`` its connection received, so a client that
          never sends ``epoch`` still continues where that answer ended.)
        - no ``since``: the whole ring; ``reset`` only when an ``epoch`` was given and it
          is another one.
        """
        if since is not None and epoch is None:
            reset = since > 0
        else:
            reset = epoch is not None and epoch != self.epoch
        lines = list(self._ring)
        complete = True
        if since is not None and not reset:
            first = lines[0].seq if lines else self.seq + 1
            complete = since + 1 >= first  # nothing after `since` has fallen out of the ring
            lines = [line for line in lines if line.seq > since]
        if limit is not None and len(lines) > limit:
            lines = lines[:limit]
            complete = False
        fits = page_size(lines)
        if fits < len(lines):  # a page: the client asks again `since` its last line
            lines = lines[:fits]
            complete = False
        return OutputHistory(
            server=self.server, epoch=self.epoch, lines=lines, complete=complete, reset=reset
        )
