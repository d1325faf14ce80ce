"""What the Docker engine sends, read without I/O: the attach stream, stats, times, exits.

Pure functions and one incremental parser, no SDK, no sockets, no clock: the ``docker``
runtime (:mod:`resofleet.agent.runtime.docker`) calls them on what its threads receive, and they
are tested on their own.

- :class:`Demultiplexer`: a container without a TTY sends its attach stream as frames,
  each an 8-byte header (stream: 0 stdin, 1 stdout, 2 stderr; three zero bytes; a
  big-endian u32 length) and that many bytes of payload. A frame is not a line.
- :func:`cpu_percent`, :func:`memory_usage`: the formulas of ``docker stats`` on one
  ``stats(stream=False)`` sample (100 % is one core busy; memory without the inactive
  page cache).
- :func:`docker_time_ns`: Docker's RFC 3339 times (``State.StartedAt``), with their
  nanosecond fraction, as the ``timeNano`` of its events counts.
- :func:`exit_reason`: the sentence a run's end is reported with; :func:`exit_code`,
  :func:`finished_exit_code`: the exit code of a ``die`` event and of a stopped container.
"""

from __future__ import annotations

import re
import struct
from datetime import datetime
from typing import Any, Final

__all__ = [
    "STDERR",
    "Demultiplexer",
    "cpu_percent",
    "docker_time_ns",
    "exit_code",
    "exit_reason",
    "finished_exit_code",
    "memory_usage",
]

#: The attach stream's frame header: stream, three zero bytes, big-endian u32 length.
_FRAME_HEADER: Final = struct.Struct(">BxxxL")
#: The stream number of stderr in a frame header (0 is stdin, echoed; 1 is stdout).
STDERR: Final = 2
_DOCKER_TIME: Final = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)"
)


class Demultiplexer:
    """Docker's multiplexed attach stream in, ``(stream, payload)`` pieces out.

    Takes any chunking (a header may be split across reads); stream 0 (stdin, echoed)
    and 1 are stdout, 2 (:data:`STDERR`) is stderr.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The frames ``data`` completes, in order; a partial frame waits for more."""
        self._buffer += data
        pieces: list[tuple[int, bytes]] = []
        while len(self._buffer) >= _FRAME_HEADER.size:
            stream, size = _FRAME_HEADER.unpack_from(self._buffer)
            end = _FRAME_HEADER.size + size
            if len(self._buffer) < end:
                break
            pieces.append((stream, bytes(self._buffer[_FRAME_HEADER.size:end])))
            del self._buffer[:end]
        return pieces


def cpu_percent(sample: dict[str, Any]) -> float:
    """``docker stats`` CPU %: 100 is one core busy. 0 when a delta is missing or <= 0."""
    cpu = sample.get("cpu_stats") or {}
    pre = sample.get("precpu_stats") or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage")
    pre_total = (pre.get("cpu_usage") or {}).get("total_usage")
    system, pre_system = cpu.get("system_cpu_usage"), pre.get("system_cpu_usage")
    if None in (total, pre_total, system, pre_system):
        return 0.0
    cpu_delta, system_delta = total - pre_total, system - pre_system
    if cpu_delta <= 0 or system_delta <= 0:
        return 0.0
    cpus = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or ()) or 1
    return cpu_delta / system_delta * cpus * 100.0


def memory_usage(sample: dict[str, Any]) -> tuple[int, int]:
    """``docker stats`` memory: (used, limit) bytes; used leaves out the inactive page cache
    (``total_inactive_file`` on cgroup v1, ``inactive_file`` on v2). (0, 0) if unknown."""
    memory = sample.get("memory_stats") or {}
    usage = int(memory.get("usage") or 0)
    limit = int(memory.get("limit") or 0)
    stats = memory.get("stats") or {}
    inactive = stats.get("total_inactive_file", stats.get("inactive_file"))
    if inactive is not None and inactive < usage:
        usage -= int(inactive)
    return usage, limit


def docker_time_ns(text: str | None) -> int | None:
    """Nanoseconds since the epoch of Docker's RFC 3339 time (nanosecond fraction);
    None when absent, empty or not such a time."""
    match = _DOCKER_TIME.fullmatch(text or "")
    if match is None:
        return None
    seconds, fraction, zone = match.groups()
    base = datetime.fromisoformat(seconds + ("+00:00" if zone == "Z" else zone))
    return int(base.timestamp()) * 1_000_000_000 + int((fraction or "0")[:9].ljust(9, "0"))


def exit_reason(state: dict[str, Any], *, oom: bool = False) -> str:
    """How a run ended, from a container's ``State`` (or a ``die`` event's ``ExitCode``):
    ``exited with code N``, plus ``(out of memory)`` when the engine said so."""
    reason = f"exited with code {state.get('ExitCode', '?')}"
    if oom or state.get("OOMKilled"):
        reason += " (out of memory)"
    return reason


def exit_code(value: object) -> int | None:
    """A ``die`` event's ``exitCode`` attribute (a string) as a number; None if not one."""
    text = str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else None


def finished_exit_code(state: dict[str, Any]) -> int | None:
    """A stopped container's last exit code from its ``State``; None while it runs or if
    it never ran (``FinishedAt`` is Go's zero time, year 1)."""
    finished = docker_time_ns(state.get("FinishedAt"))
    if state.get("Running") or finished is None or finished <= 0:
        return None
    return exit_code(state.get("ExitCode"))
