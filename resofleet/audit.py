"""The audit log: who did what to which server, as JSON lines, fsynced in batches.

Both halves of the fleet write one: the agent records every console command and container
action it executed (or refused) for its servers, the gateway every attempt it refused
(handshake, unauthenticated, forbidden, out of scope, rate-limited, rejected input).
``resofleet audit tail`` prints either file.

One JSON object per line, keys always in this order::

    {"time": "2026-11-25T22:00:00.123Z",   UTC, milliseconds
     "source": "agent",                     "agent" or "gateway"
     "who": "alice", "role": "moderator",   the token's sub and role ("-" when unknown)
     "client": "10.0.0.5",                  the client's address
     "server": "eu-1",                      null when no server was involved
     "command": "kick Bob",                 what the client asked for; null when nothing
     "outcome": "ok",                       "ok" or the error code it was answered with
     "duration": 0.042,                     seconds, or null
     ...extras}                             e.g. "reason" (a short word), "detail" (the
                                            sentence the client read), "conn", "world"

Strings are capped at :data:`FIELD_LIMIT` characters and the record then carries
``"truncated": true``, so a 1 MiB attempt costs a kilobyte. Whatever a client sent stays on
one line: JSON escapes control characters, and the few characters that JSON leaves raw but
terminals or line splitters treat specially (DEL, the C1 controls such as CSI U+009B, and
the Unicode line separators U+0085, U+2028, U+2029) are written as ``\\uXXXX`` too.

Why the writer is built this way:

- :meth:`AuditLog.record` is called on hot paths (every refused frame of a flood), so it
  never blocks and never raises: it encodes the record and appends it to a bounded queue.
  A full queue drops the record and counts it; the next batch written carries one
  ``{"outcome": "audit_dropped", "count": N}`` record, so a loss is visible in the log.
- A writer task gathers records for at most :data:`FLUSH_INTERVAL`, then writes the batch
  and fsyncs once, in a thread (:func:`asyncio.to_thread`): the event loop never waits for
  the disk, and a burst of thousands of records costs one fsync, not thousands.
- Rotation by size: a file never grows past ``max_bytes`` (unless one record alone is
  larger); ``path`` becomes ``path.1``, ``path.1`` becomes ``path.2`` and so on, keeping
  ``backups`` old files.

- Budgets: a source (a token's ``who``; every unauthenticated client, ``"-"``, together)
  writes at most ``budget_bytes`` per :data:`BUDGET_WINDOW`; past it its records are
  counted, and one ``{"outcome": "audit_suppressed", "who": ..., "count": N}`` record per
  source says so when the window ends (or at flush and close). A flood from one source
  thus cannot rotate the others' records away. Admins are not budgeted (nothing they do
  is a flood to contain, and their commands are the ones an audit is for).

"No audit log" is ``None``: code that takes an audit log accepts ``AuditLog | None`` and
records only when it has one. Whoever creates an :class:`AuditLog` starts and closes it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Final

import msgspec

from resofleet.contracts import RECORD_KEYS, AuditValue

__all__ = [
    "AuditLog",
    "AuditLogUnavailable",
    "BACKUPS",
    "BUDGET_BYTES",
    "BUDGET_WINDOW",
    "CLOSE_TIMEOUT",
    "FIELD_LIMIT",
    "FLUSH_INTERVAL",
    "MAX_BYTES",
    "MAX_PENDING",
    "RECORD_KEYS",
    "start_audit_log",
]

log = logging.getLogger(__name__)

#: Bytes a file may reach before it is rotated: 10 MiB holds tens of thousands of records
#: (days of a busy fleet's commands), still a file an operator can open in an editor.
MAX_BYTES: Final = 10 * 1024 * 1024
#: Rotated files kept (``path.1`` .. ``path.5``): with :data:`MAX_BYTES`, at most 60 MiB on
#: disk, and enough history to look back over a flood that rotated the current file.
BACKUPS: Final = 5
#: Seconds a record may wait in memory before it is written and fsynced: a crash loses at
#: most this much, and a burst within it (a flood of refused frames) is one fsync.
FLUSH_INTERVAL: Final = 0.2
#: Records waiting for the writer at most. A record is a few hundred bytes (at most a few KB
#: with a capped command), so this is a few MB; it absorbs seconds of a flood even when
#: the disk is slow, and beyond it records are counted as dropped instead of growing memory.
MAX_PENDING: Final = 10_000
#: Characters kept of any string field (command, reason, address...): a long console
#: command is a few hundred characters; anything longer is an attempt, and its start is
#: enough to recognise it.
FIELD_LIMIT: Final = 1024
#: Bytes one source may write per :data:`BUDGET_WINDOW`: a few thousand records, far more
#: than a person's commands in ten minutes; at this rate one source needs ten hours to
#: fill the :data:`MAX_BYTES` x (:data:`BACKUPS` + 1) kept on disk.
BUDGET_BYTES: Final = 1024 * 1024
#: Seconds a budget lasts before every source's starts again.
BUDGET_WINDOW: Final = 600.0
#: Sources budgeted at once; past it, new ones share one budget (``"*"``).
MAX_SOURCES: Final = 10_000
#: The role whose records are never budgeted.
UNBUDGETED_ROLE: Final = "admin"
#: Seconds :meth:`AuditLog.flush` and :meth:`AuditLog.close` wait for the disk: a healthy
#: fsync takes milliseconds; past this the disk is failing and shutdown must go on.
CLOSE_TIMEOUT: Final = 10.0

_RESERVED: Final = frozenset(RECORD_KEYS) | {"truncated", "count"}
#: Characters JSON leaves unescaped that must not reach a terminal or split a line: DEL,
#: the C1 controls (U+0080-U+009F, e.g. CSI U+009B, NEL U+0085), U+2028 and U+2029. Matched
#: on the UTF-8 bytes: their lead bytes never occur inside another character's encoding.
_RAW_SPECIALS: Final = re.compile(rb"\x7f|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")

_encoder: Final = msgspec.json.Encoder()

Value = AuditValue


class _Clock:
    """UTC time as the log writes it, formatting the date and time once per second: a
    flood of records stamps thousands per second, and this is most of record()'s cost."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"


#: The current time as the log writes it: ``2026-11-25T22:00:00.123Z``.
utc_now: Final = _Clock()


def _escape_special(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(match.group().decode("utf-8"))


def encode_record(record: dict[str, Value]) -> bytes:
    """One record as one line of JSON (with its newline), whatever its strings contain."""
    try:
        data = _encoder.encode(record)
    except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800" decoded by a gateway)
        data = _encoder.encode(
            {
                k: v.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(v, str) else v
                for k, v in record.items()
            }
        )
    if b"\x7f" in data or b"\xc2" in data or b"\xe2" in data:  # memchr: cheap when absent
        data = _RAW_SPECIALS.sub(_escape_special, data)
    return data + b"\n"


class AuditLog:
    """An append-only JSON-lines audit file (see the module docstring).

    Call :meth:`record` from the event loop's thread. Records made before :meth:`start`
    wait in the queue and are written once it has run.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        source: str,
        max_bytes: int = MAX_BYTES,
        backups: int = BACKUPS,
        flush_interval: float = FLUSH_INTERVAL,
        max_pending: int = MAX_PENDING,
        budget_bytes: int | None = BUDGET_BYTES,
        budget_window: float = BUDGET_WINDOW,
    ) -> None:
        if max_bytes < 1 or backups < 0 or flush_interval < 0 or max_pending < 1:
            raise ValueError("max_bytes and max_pending must be positive, backups and flush_interval not negative")
        self.path = Path(path)
        self.source = source
        self.max_bytes = max_bytes
        self.backups = backups
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        #: Bytes per source per window (``None``: no budget; see the module docstring).
        self.budget_bytes = budget_bytes
        self.budget_window = budget_window
        self._spent: dict[str, int] = {}
        self._suppressed: dict[str, int] = {}
        self._window_end = time.monotonic() + budget_window
        #: Records counted instead of written because their source was over its budget.
        self.suppressed = 0
        #: Records lost: to a full queue, a failed write, or a call after :meth:`close`.
        self.dropped = 0
        #: Records written and fsynced so far (the ``audit_dropped`` markers not counted).
        self.written = 0
        #: Batches written, each ending with one fsync (rotation adds its own).
        self.batches = 0
        self._pending: collections.deque[bytes] = collections.deque()
        self._recorded = 0  # records ever queued
        self._settled = 0  # of those, how many were written or counted lost (flush waits for it)
        self._unreported = 0  # drops not yet written as an audit_dropped record
        self._arrived = asyncio.Event()
        self._urgent = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._fd: int | None = None
        self._size = 0
        # False when the file ends inside a line (a failed write, or a crash mid-write of an
        # earlier process): the next write starts with a newline so each record stays whole.
        self._ends_line = True
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._warned_closed = False

    # -- recording ---------------------------------------------------------------------

    def record(
        self,
        *,
        who: str,
        role: str,
        client: str,
        server: str | None,
        command: str | None,
        outcome: str,
        duration: float | None = None,
        **extra: Value,
    ) -> None:
        """Queue one record; never blocks, never raises.

        Extras follow the fixed keys in the order given; one named like a fixed key (or
        ``truncated``/``count``) is ignored, a value of another type is written as text.
        """
        try:
            if self._closing:
                self.dropped += 1
                if not self._warned_closed:
                    self._warned_closed = True
                    log.warning("audit log %s: a record arrived after close and is lost", self.path)
                return
            if len(self._pending) >= self.max_pending:
                self.dropped += 1
                self._unreported += 1
                self._urgent.set()
                return
            entry: dict[str, Value] = {
                "time": utc_now(),
                "source": self.source,
                "who": who,
                "role": role,
                "client": client,
                "server": server,
                "command": command,
                "outcome": outcome,
                "duration": None if duration is None else round(float(duration), 3),
            }
            for key, value in extra.items():
                if key not in _RESERVED:
                    entry[key] = value
            truncated = False
            for key, value in entry.items():  # values change, keys do not: safe to iterate
                if not isinstance(value, str):
                    if value is None or isinstance(value, (bool, int, float)):
                        continue
                    value = entry[key] = str(value)
                if len(value) > FIELD_LIMIT:
                    entry[key] = value[:FIELD_LIMIT]
                    truncated = True
            if truncated:
                entry["truncated"] = True
            data = encode_record(entry)
            if self.budget_bytes is not None and role != UNBUDGETED_ROLE and self._over(who, len(data)):
                return
            self._pending.append(data)
            self._recorded += 1
            self._arrived.set()
            if len(self._pending) >= self.max_pending // 2:
                self._urgent.set()  # write now rather than risk dropping the next ones
        except Exception:  # record() must never take its caller down
            self.dropped += 1
            self._unreported += 1
            log.exception("audit log %s: a record could not be encoded", self.path)

    def _over(self, who: str, size: int) -> bool:
        """Charge ``size`` bytes to ``who``'s budget; True (and counted) if over it."""
        now = time.monotonic()
        if now >= self._window_end:
            self._end_window(now)
        if who not in self._spent and len(self._spent) >= MAX_SOURCES:
            who = "*"
        spent = self._spent.get(who, 0) + size
        if self.budget_bytes is not None and spent > self.budget_bytes:
            self._suppressed[who] = self._suppressed.get(who, 0) + 1
            self.suppressed += 1
            return True
        self._spent[who] = spent
        return False

    def _end_window(self, now: float) -> None:
        """Start every source's budget again, after the summaries of what it held back."""
        self._report_suppressed()
        self._spent.clear()
        self._window_end = now + self.budget_window

    def _report_suppressed(self) -> None:
        """Queue one ``audit_suppressed`` record per source held back since the last one."""
        for who, count in self._suppressed.items():
            self._pending.append(encode_record({
                "time": utc_now(), "source": self.source, "who": who, "role": "", "client": "",
                "server": None, "command": None, "outcome": "audit_suppressed", "duration": None,
                "count": count, "window": self.budget_window,
            }))
            self._recorded += 1
            self._arrived.set()
        self._suppressed.clear()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Create the directory (0700) and open the file (0600) for appending, in a thread.

        Raises :class:`OSError` when the file cannot be opened: the caller says so and
        refuses to run without the audit log it was configured to keep.
        """
        if self._closing:
            raise RuntimeError(f"audit log {self.path} is closed")
        if self._writer is not None:
            return
        await asyncio.to_thread(self._open)
        self._writer = asyncio.create_task(self._write_loop(), name=f"audit:{self.source}")

    async def flush(self) -> None:
        """Write and fsync everything recorded so far (within :data:`CLOSE_TIMEOUT`)."""
        if self._writer is None or self._writer.done():
            return
        if self._suppressed:  # say now what the window held back so far (budgets go on)
            self._report_suppressed()
        if self._settled >= self._recorded and not self._unreported:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((self._recorded, waiter))
        self._urgent.set()
        self._arrived.set()
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await asyncio.shield(waiter)

    async def close(self) -> None:
        """Flush, fsync and close the file; idempotent. Records made after it are lost."""
        if self._closed:
            return
        if self._suppressed:
            self._report_suppressed()
        self._closing = True
        writer = self._writer
        if writer is None and self._pending:
            self.dropped += len(self._pending)
            log.warning("audit log %s: closed before start; %d records lost", self.path, len(self._pending))
            self._pending.clear()
        if writer is not None and not writer.done():
            self._urgent.set()
            self._arrived.set()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.shield(writer)
            except TimeoutError:
                lost = len(self._pending)
                self.dropped += lost
                log.error(
                    "audit log %s: the disk did not take the last records within %.0f s; "
                    "%d may be lost", self.path, CLOSE_TIMEOUT, lost,
                )
                writer.cancel()
                return  # the thread still owns the file; it is closed at exit
        self._closed = True
        if self._fd is not None:
            await asyncio.to_thread(self._close_fd)
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    # -- the writer task -----------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._arrived.wait()
            if not self._closing and not self._urgent.is_set() and self.flush_interval > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_interval):
                        await self._urgent.wait()
            self._arrived.clear()
            self._urgent.clear()
            await self._write_pending()
            # record() takes nothing once closing: the queue drains to empty and the
            # writer ends (without retrying a failed write forever).
            if self._closing and not self._pending:
                return

    async def _write_pending(self) -> None:
        lines = list(self._pending)
        self._pending.clear()
        upto = self._recorded
        dropped = self._unreported
        self._unreported = 0
        if dropped:
            lines.append(
                encode_record(
                    {
                        "time": utc_now(), "source": self.source, "who": "", "role": "",
                        "client": "", "server": None, "command": None,
                        "outcome": "audit_dropped", "duration": None, "count": dropped,
                    }
                )
            )
        if lines:
            try:
                await asyncio.to_thread(self._write_batch, lines)
            except Exception as exc:  # OSError (disk full, I/O error) or a bug: the writer goes on
                lost = len(lines) - (1 if dropped else 0)
                self.dropped += lost
                self._unreported += lost + dropped
                log.error("audit log %s: %d records not written: %r", self.path, lost, exc)
            else:
                self.written += len(lines) - (1 if dropped else 0)
                self.batches += 1
        self._settled = upto
        done = [(t, w) for t, w in self._waiters if t <= upto]
        self._waiters = [(t, w) for t, w in self._waiters if t > upto]
        for _, waiter in done:
            if not waiter.done():
                waiter.set_result(None)

    # -- file operations (in a thread) ---------------------------------------------------

    def _open(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags, 0o600)
        self._fd = fd
        self._size = os.fstat(fd).st_size
        self._ends_line = self._size == 0 or os.pread(fd, 1, self._size - 1) == b"\n"

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)

    def _write_batch(self, lines: list[bytes]) -> None:
        """Append ``lines``, rotating between lines when the file would pass max_bytes;
        one fsync at the end."""
        if self._fd is None:
            self._open()
        chunk: list[bytes] = [] if self._ends_line else [b"\n"]
        size = self._size + len(chunk)
        for line in lines:
            if size + len(line) > self.max_bytes and size > 0:
                self._append(b"".join(chunk))
                self._rotate()
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        self._append(b"".join(chunk))
        assert self._fd is not None
        os.fsync(self._fd)

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            if n:
                self._size += n
                self._ends_line = view[n - 1] == 0x0A
            view = view[n:]

    def _rotate(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        name = str(self.path)
        if self.backups == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{name}.{self.backups}")
            for i in range(self.backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{name}.{i}", f"{name}.{i + 1}")
            os.replace(name, f"{name}.1")
        self._open()
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        """Make the renames durable: a crash must not bring back the old names."""
        with contextlib.suppress(OSError):
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r}, source={self.source!r})"


class AuditLogUnavailable(Exception):
    """The configured audit log cannot be opened; the message is one line for the operator."""


async def start_audit_log(path: str | os.PathLike[str] | None, *, source: str) -> AuditLog | None:
    """The started audit log at ``path`` for a command to pass on; ``None`` for none.

    A service configured to keep an audit log refuses to run without it: an unwritable
    path raises :class:`AuditLogUnavailable` saying which setting to change.
    """
    if path is None:
        return None
    audit = AuditLog(path, source=source)
    try:
        await audit.start()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise AuditLogUnavailable(
            f"cannot open the audit log {path}: {reason}; "
            f"set [{source}] audit_log or RESOFLEET_AUDIT_DIR"
        ) from None
    log.info("audit log: %s", path)
    return audit
