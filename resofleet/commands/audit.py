"""``resofleet audit tail [--file F] [-n N] [--follow] [--json]``: print the audit logs.

Without ``--file`` it reads the gateway's and the agent's audit logs of the configuration
(``--config``/``RESOFLEET_CONFIG``: ``[gateway] audit_log`` and ``[agent] audit_log``;
without one, the default files under ``$RESOFLEET_AUDIT_DIR`` or
``~/.local/state/resofleet/audit/``) and merges their records by time. When the current file
holds fewer than N records, the rotated ones (``F.1``, ``F.2``...) supply the rest.

One readable line per record::

    2026-11-25T22:00:00.123Z gateway alice(moderator)@10.0.0.5 eu-1 forbidden "shutdown" reason=...

Records carry what clients sent, so nothing from a record reaches the terminal raw: control
characters, bidirectional overrides and every other non-printable character are shown
escaped (``\\x1b``, ``\\u202e``): a client's ANSI sequence must not drive the operator's
terminal. ``--json`` prints the lines as written (which the writer keeps free of raw
control characters); a line that is not JSON is printed as ``{"unparsed": "..."}``.

``--follow`` then polls the files every :data:`FOLLOW_POLL` seconds and prints records as
they are appended, across rotations, until Ctrl-C.

Only the standard library, and :mod:`.common` (which imports only the standard library), are
imported at module level: the command line loads every command module.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Final

from .common import FAILURE, CommandError, load_config

#: Records ``tail`` prints by default, as ``tail(1)`` prints ten lines: two screens of
#: context is what an operator looking at "what just happened" wants.
DEFAULT_RECORDS: Final = 20
#: Seconds between looks at the files with ``--follow``: records appear within a blink, and
#: a stat of two files five times a second costs nothing.
FOLLOW_POLL: Final = 0.2
#: Bytes read per step when reading a file backwards for its last records: a few hundred
#: records per read, so the common ``-n 20`` is a single read.
TAIL_BLOCK: Final = 64 * 1024
#: Rotated files looked at for more records (``F.1`` .. ``F.9``): more than the writer keeps.
MAX_ROTATED: Final = 9
#: Exit status after Ctrl-C, as shells report a process ended by SIGINT.
INTERRUPTED: Final = 130
#: How this command names itself in its error lines.
COMMAND: Final = "audit tail"

#: The fixed keys, shown in the line's layout; every other key is printed as key=value.
_FIXED: Final = frozenset(
    {"time", "source", "who", "role", "client", "server", "command", "outcome", "duration"}
)
_SIMPLE_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Characters a JSON line may carry raw that a terminal acts on: DEL, C1 controls, and the
#: Unicode line separators (the writer escapes them; a file from elsewhere may not).
_TERMINAL_ACTIVE: Final = re.compile("[\x7f-\x9f\u2028\u2029]")


# -- formatting (pure) ---------------------------------------------------------------------


def _escape_char(char: str) -> str:
    if char in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str) -> str:
    """``text`` with every non-printable character (controls, ESC, bidi overrides, line
    separators) written as an escape sequence, so it is inert on a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def quote(text: str) -> str:
    """``text`` in double quotes, escaped: quotes and backslashes too, so it is unambiguous."""
    return '"' + escape(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        bare = value and value.isprintable() and not any(c in value for c in ' "\\=')
        return value if bare else quote(value)
    return quote(json.dumps(value, ensure_ascii=True))


def format_record(record: dict[str, Any]) -> str:
    """One record as one readable line (see the module docstring)."""

    def text(key: str, default: str = "-") -> str:
        value = record.get(key)
        if value is None or value == "":
            return default
        return escape(value if isinstance(value, str) else _value(value))

    who = text("who")
    if record.get("role"):
        who += f"({text('role')})"
    if record.get("client"):
        who += f"@{text('client')}"
    parts = [text("time", "?"), text("source", "?"), who, text("server"), text("outcome", "?")]
    command = record.get("command")
    if command is not None:
        parts.append(quote(command) if isinstance(command, str) else _value(command))
    duration = record.get("duration")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        parts.append(f"{duration:.3f}s")
    for key, value in record.items():
        if key not in _FIXED:
            parts.append(f"{escape(str(key))}={_value(value)}")
    return " ".join(parts)


def format_line(line: bytes, *, as_json: bool) -> str:
    """A raw line of a file as printed: readable, or JSON with nothing terminal-active."""
    text = line.decode("utf-8", "replace").strip()
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        if as_json:
            return json.dumps({"unparsed": text}, ensure_ascii=True)
        return f"? unparsed line: {quote(text)}"
    if as_json:
        return _TERMINAL_ACTIVE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return format_record(record)


def sort_key(line: bytes) -> str:
    """The record's time (ISO-8601 UTC sorts as text); "" for a line without one."""
    try:
        record = json.loads(line)
    except ValueError:
        return ""
    value = record.get("time") if isinstance(record, dict) else None
    return value if isinstance(value, str) else ""


# -- reading files ---------------------------------------------------------------------------


def _split(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if line.strip()]


def last_lines(file: IO[bytes], end: int, n: int) -> list[bytes]:
    """The last ``n`` non-empty lines of ``file`` before offset ``end``, read backwards."""
    if n <= 0:
        return []
    pos, data = end, b""
    while pos > 0 and data.count(b"\n") <= n:
        step = min(TAIL_BLOCK, pos)
        pos -= step
        file.seek(pos)
        data = file.read(step) + data
    if pos > 0:
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""  # drop the cut first line
    lines = _split(data)
    return lines[-n:]


class Follower:
    """One audit file, read from where the last read stopped, across rotation.

    The writer renames ``F`` to ``F.1`` and opens a new ``F``: the follower keeps reading the
    renamed file to its end, then reads any file that was rotated in between (several
    rotations within one poll), then switches to the new ``F`` from its start.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[bytes] | None = None
        self.inode: tuple[int, int] | None = None
        self.partial = b""

    def open(self) -> int:
        """Open the current file; its size (where following starts). 0 when missing."""
        try:
            self.file = open(self.path, "rb")  # noqa: SIM115 (kept open while following)
        except FileNotFoundError:
            return 0
        st = os.fstat(self.file.fileno())
        self.inode = (st.st_dev, st.st_ino)
        return st.st_size

    def tail(self, n: int) -> list[bytes]:
        """The last ``n`` records of this file and its rotated predecessors; following
        starts after them."""
        size = self.open()
        lines = last_lines(self.file, size, n) if self.file is not None else []
        if self.file is not None:
            self.file.seek(size)
        for i in range(1, MAX_ROTATED + 1):
            if len(lines) >= n:
                break
            try:
                with open(f"{self.path}.{i}", "rb") as older:
                    lines = last_lines(older, os.fstat(older.fileno()).st_size, n - len(lines)) + lines
            except FileNotFoundError:
                break
        return lines

    def poll(self) -> list[bytes]:
        """Lines appended since the last poll (complete ones; a rotated file's last too)."""
        lines = self._read()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return lines
        if self.file is None or (st.st_dev, st.st_ino) != self.inode:
            if self.partial:  # the old file ended without a newline: that line is complete
                lines.append(self.partial)
                self.partial = b""
            if self.file is not None and self.inode is not None:
                lines += self._skipped(self.inode)  # the old file still open: its inode stays its own
                self.file.close()
            self.open()
            lines += self._read()
        elif st.st_size < self.file.tell():  # truncated in place: start over
            self.file.seek(0)
            self.partial = b""
        return lines

    def _skipped(self, old: tuple[int, int]) -> list[bytes]:
        """Whole files rotated after ``old`` and before the current one, oldest first. When
        ``old`` is gone (pushed past the backups), every rotated file is newer than it."""
        newer: list[Path] = []
        for i in range(1, MAX_ROTATED + 1):
            rotated = Path(f"{self.path}.{i}")
            try:
                st = os.stat(rotated)
            except FileNotFoundError:
                break
            if (st.st_dev, st.st_ino) == old:
                break
            newer.append(rotated)
        lines: list[bytes] = []
        for rotated in reversed(newer):
            with contextlib.suppress(FileNotFoundError):
                lines += _split(rotated.read_bytes())
        return lines

    def _read(self) -> list[bytes]:
        if self.file is None:
            return []
        data = self.partial + self.file.read()
        complete, _, self.partial = data.rpartition(b"\n")
        return _split(complete)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def merged(batches: Iterable[list[bytes]]) -> list[bytes]:
    """Lines of several files in time order (stable: a file's own order breaks ties)."""
    lines = [line for batch in batches for line in batch]
    return sorted(lines, key=sort_key)


# -- the command -----------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="read the audit logs (who ran or was refused what)",
        description="Read the audit logs the gateway and the agent write.",
    )
    parser.set_defaults(func=lambda args: _usage(parser))
    actions = parser.add_subparsers(dest="audit_action", metavar="ACTION")
    tail = actions.add_parser(
        "tail",
        help="print the last records, merged by time",
        description=(
            "Print the last records of the audit logs, one readable line each, merged by "
            "time. Without --file: the gateway's and the agent's logs of the configuration."
        ),
    )
    tail.add_argument(
        "--file", metavar="F", action="append",
        help="an audit log to read (repeatable; default: the configured gateway and agent logs)",
    )
    tail.add_argument("--config", metavar="FILE", help="TOML config naming the logs (default: $RESOFLEET_CONFIG)")
    tail.add_argument(
        "-n", type=_count, default=DEFAULT_RECORDS, metavar="N",
        help=f"records to print (default {DEFAULT_RECORDS})",
    )
    tail.add_argument("--follow", action="store_true", help="keep printing new records until Ctrl-C")
    tail.add_argument("--json", action="store_true", help="print the JSON lines as written")
    tail.set_defaults(func=_tail)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _paths(args: argparse.Namespace) -> list[Path]:
    """The files to read: ``--file``, else the configured ones that exist."""
    if args.file:
        paths = [Path(f) for f in args.file]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise CommandError(f"no audit log at {missing[0]}", status=FAILURE, command=COMMAND)
        return paths
    config = load_config(args, command=COMMAND)
    configured = [Path(p) for p in (config.gateway.audit_log, config.agent.audit_log) if p is not None]
    if not configured:
        raise CommandError(
            f"{config.source}: both audit logs are disabled (audit_log = false)",
            status=FAILURE, command=COMMAND,
        )
    present = [p for p in configured if p.exists()]
    if not present:
        looked = " and ".join(str(p) for p in configured)
        raise CommandError(
            f"no audit log found; looked at {looked} (pass --file F)", status=FAILURE, command=COMMAND
        )
    return present


def _tail(args: argparse.Namespace) -> int:
    paths = _paths(args)
    followers = [Follower(p) for p in paths]
    try:
        initial = merged(f.tail(args.n) for f in followers)
        _print(initial[max(0, len(initial) - args.n) :], args.json)
        if args.follow:
            while True:
                time.sleep(FOLLOW_POLL)
                _print(merged(f.poll() for f in followers), args.json)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # the reader (`| head`) went away: stop quietly, and keep Python's exit flush quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    finally:
        for follower in followers:
            follower.close()
    return 0


def _print(lines: Sequence[bytes], as_json: bool) -> None:
    if not lines:
        return
    sys.stdout.write("".join(format_line(line, as_json=as_json) + "\n" for line in lines))
    sys.stdout.flush()
