"""The audit log writer: record layout, escaping, bounds, rotation, fsync batching, close."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import stat
from pathlib import Path

import pytest

from resofleet.audit import (
    FIELD_LIMIT,
    RECORD_KEYS,
    AuditLog,
    AuditLogUnavailable,
    start_audit_log,
)

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), "a file ends with a complete line"
    return data.split(b"\n")[:-1]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in lines(path)]


def one(audit: AuditLog, i: int = 0, **extra) -> None:
    audit.record(
        who="alice", role="moderator", client="10.0.0.5", server="eu-1",
        command=f"kick Bob{i}", outcome="ok", duration=0.0421, **extra,
    )


@pytest.fixture
async def audit(tmp_path: Path):
    log = AuditLog(tmp_path / "audit" / "agent.jsonl", source="agent")
    await log.start()
    yield log
    await log.close()


async def test_record_fields_order_and_time(audit: AuditLog):
    """A record has the fixed keys in order, then extras; UTC time with milliseconds and Z."""
    one(audit, world="Night Market", conn="c-7", code=4001, silent=False, note=None)
    await audit.flush()
    [line] = lines(audit.path)
    record = json.loads(line)
    assert list(record) == [*RECORD_KEYS, "world", "conn", "code", "silent", "note"]
    assert TIME.match(record["time"])
    assert record == {
        "time": record["time"], "source": "agent", "who": "alice", "role": "moderator",
        "client": "10.0.0.5", "server": "eu-1", "command": "kick Bob0", "outcome": "ok",
        "duration": 0.042, "world": "Night Market", "conn": "c-7", "code": 4001,
        "silent": False, "note": None,
    }


async def test_absent_server_command_and_duration_are_null(audit: AuditLog):
    """A refusal before any server or command was known writes nulls, not missing keys."""
    audit.record(who="", role="", client="10.0.0.9", server=None, command=None, outcome="unauthenticated")
    await audit.flush()
    [record] = records(audit.path)
    assert [record[k] for k in ("server", "command", "duration")] == [None, None, None]


async def test_control_characters_stay_on_one_line(audit: AuditLog):
    """CR, LF, NUL, ESC, DEL, C1 CSI, NEL, U+2028/2029 stay one line, escaped, and round-trip."""
    nasty = "say hi\r\nshutdown\x00\x1b[2J\x7f\x9b31m\x85\u2028\u2029\u202e end"
    one(audit, reason=nasty)
    audit.record(who="x", role="", client="", server="eu-1", command=nasty, outcome="bad_request")
    await audit.flush()
    data = audit.path.read_bytes()
    assert data.count(b"\n") == 2
    assert len(data.decode("utf-8").splitlines()) == 2  # str.splitlines splits on U+2028 too
    for raw in (b"\r", b"\x00", b"\x1b", b"\x7f", "\x9b".encode(), "\x85".encode(), "\u2028".encode()):
        assert raw not in data
    first, second = records(audit.path)
    assert first["reason"] == nasty and second["command"] == nasty


async def test_lone_surrogate_is_recorded_not_raised(audit: AuditLog):
    """A string that is not valid Unicode (a lone surrogate from client JSON) is still written."""
    audit.record(who="x", role="", client="", server="eu-1", command="kick \ud800", outcome="forbidden")
    await audit.flush()
    [record] = records(audit.path)
    assert record["command"] == "kick \\ud800" and audit.dropped == 0


async def test_huge_command_is_truncated(audit: AuditLog):
    """A 1 MiB command is cut to FIELD_LIMIT characters and the record says so."""
    audit.record(who="x", role="", client="", server="eu-1", command="A" * (1 << 20), outcome="bad_request")
    one(audit)
    await audit.flush()
    big, small = lines(audit.path)
    assert len(big) < FIELD_LIMIT + 400
    record = json.loads(big)
    assert record["command"] == "A" * FIELD_LIMIT and record["truncated"] is True
    assert "truncated" not in json.loads(small)


async def test_reserved_extras_ignored_and_odd_values_written_as_text(audit: AuditLog):
    """An extra named like a fixed key cannot overwrite it; a non-scalar extra becomes text."""
    one(audit, time="yesterday", count=5, truncated=True, error=ValueError("boom"))
    await audit.flush()
    [record] = records(audit.path)
    assert TIME.match(record["time"]) and "count" not in record and "truncated" not in record
    assert record["error"] == "boom"


async def test_full_queue_counts_drops_and_writes_a_marker(tmp_path: Path):
    """Past max_pending, records are dropped, counted, and one audit_dropped record says how many."""
    log = AuditLog(tmp_path / "a.jsonl", source="gateway", max_pending=10)
    for i in range(25):  # before start: nothing drains the queue
        one(log, i)
    assert log.dropped == 15
    await log.start()
    await log.flush()
    written = records(log.path)
    assert [r["command"] for r in written[:10]] == [f"kick Bob{i}" for i in range(10)]
    marker = written[10]
    assert (marker["outcome"], marker["count"], marker["source"]) == ("audit_dropped", 15, "gateway")
    assert list(marker)[: len(RECORD_KEYS)] == list(RECORD_KEYS)
    one(log, 99)
    await log.flush()
    assert [r["outcome"] for r in records(log.path)].count("audit_dropped") == 1
    await log.close()


async def test_rotation_keeps_backups_of_whole_lines(tmp_path: Path):
    """Past max_bytes the file rotates to .1, .2; only `backups` old files are kept, each whole lines."""
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, source="agent", max_bytes=2000, backups=2)
    await log.start()
    for i in range(120):
        one(log, i)
        if i % 7 == 0:
            await log.flush()
    await log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "a.jsonl.1", "a.jsonl.2"]
    kept: list[str] = []
    for name in ("a.jsonl.2", "a.jsonl.1", "a.jsonl"):
        f = tmp_path / name
        assert f.stat().st_size <= 2000
        kept += [r["command"] for r in records(f)]
    # the newest records, in order, with none missing
    assert kept == [f"kick Bob{i}" for i in range(120 - len(kept), 120)]
    assert len(kept) > 20


async def test_one_batch_one_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """1000 records recorded in one go are written with a handful of fsyncs, not 1000."""
    calls = 0
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        nonlocal calls
        calls += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    log = AuditLog(tmp_path / "a.jsonl", source="agent")
    await log.start()
    for i in range(1000):
        one(log, i)
    await log.flush()
    assert len(lines(log.path)) == 1000
    assert log.batches == 1 and calls <= 2, (log.batches, calls)
    await log.close()


async def test_records_wait_at_most_flush_interval(tmp_path: Path):
    """Without flush(), a record reaches the disk within the flush interval, gathered into one batch."""
    log = AuditLog(tmp_path / "a.jsonl", source="agent", flush_interval=0.05)
    await log.start()
    one(log, 1)
    await asyncio.sleep(0)
    one(log, 2)
    async with asyncio.timeout(5):
        while log.written < 2:
            await asyncio.sleep(0.01)
    assert log.batches == 1 and len(lines(log.path)) == 2
    await log.close()


async def test_close_flushes_and_is_idempotent(tmp_path: Path):
    """close() writes what was recorded, a second close() is a no-op, a later record() is counted lost."""
    log = AuditLog(tmp_path / "a.jsonl", source="agent", flush_interval=60)
    await log.start()
    one(log)
    await log.close()
    await log.close()
    assert [r["command"] for r in records(log.path)] == ["kick Bob0"]
    one(log, 1)  # never raises
    assert log.dropped == 1
    assert len(records(log.path)) == 1


async def test_a_failed_write_is_reported_in_the_next_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A write error (disk full) loses that batch, counted; the next batch says so and stays valid JSON lines."""
    log = AuditLog(tmp_path / "a.jsonl", source="agent")
    await log.start()
    real_write = os.write

    def full(fd: int, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    one(log, 1)
    one(log, 2)
    await log.flush()
    assert log.dropped == 2
    monkeypatch.setattr(os, "write", real_write)
    one(log, 3)
    await log.flush()
    written = records(log.path)
    assert [(r["outcome"], r.get("count")) for r in written] == [("ok", None), ("audit_dropped", 2)]
    await log.close()


async def test_file_and_directory_are_private(audit: AuditLog):
    """The directory is created 0700 and the file 0600: the log names people and addresses."""
    one(audit)
    await audit.flush()
    assert stat.S_IMODE(audit.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(audit.path.parent.stat().st_mode) == 0o700


async def test_unopenable_path_is_one_clear_error(tmp_path: Path):
    """start() raises OSError; start_audit_log turns it into one line naming the setting to change."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(OSError):
        await AuditLog(blocker / "agent.jsonl", source="agent").start()
    with pytest.raises(AuditLogUnavailable) as caught:
        await start_audit_log(blocker / "agent.jsonl", source="agent")
    message = str(caught.value)
    assert message.startswith(f"cannot open the audit log {blocker / 'agent.jsonl'}: ")
    assert message.endswith("; set [agent] audit_log or RESOFLEET_AUDIT_DIR") and "\n" not in message
    assert await start_audit_log(None, source="agent") is None


async def test_half_line_left_by_a_crash_is_ended_first(tmp_path: Path):
    """A file ending inside a line (an earlier process died mid-write) gets a newline before new records."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"time":"2026-01-01T00:00:00.000Z","source":"agent","who":"al')
    log = AuditLog(path, source="agent")
    await log.start()
    one(log)
    await log.close()
    broken, line = lines(path)
    assert broken.startswith(b'{"time"') and json.loads(line)["command"] == "kick Bob0"


async def test_one_source_past_its_budget_is_summed_and_cannot_rotate_the_others_away(tmp_path: Path):
    """A source (a token's sub, or every unauthenticated client together) writes at most
    its budget per window: the rest is counted in one `audit_suppressed` record, so a
    flood from one source leaves another's earlier record in the files. Admins are exempt."""
    path = tmp_path / "gateway.jsonl"
    log = AuditLog(path, source="gateway", max_bytes=8 * 1024, backups=1, budget_bytes=4 * 1024)
    await log.start()
    try:
        log.record(who="alice", role="viewer", client="10.0.0.1", server="eu-1", command="marker",
                   outcome="forbidden")
        for i in range(2_000):
            log.record(who="-", role="", client=f"10.9.{i // 250}.{i % 250}", server=None,
                       command="kick " + "A" * 200, outcome="unauthenticated")
        for _ in range(20):
            log.record(who="root", role="admin", client="10.0.0.2", server="eu-1",
                       command="save", outcome="ok")
        await log.flush()
    finally:
        await log.close()
    kept = [r for p in sorted(tmp_path.glob("gateway.jsonl*")) for r in records(p)]
    assert any(r["command"] == "marker" for r in kept)
    flood = [r for r in kept if r["outcome"] == "unauthenticated"]
    summary = [r for r in kept if r["outcome"] == "audit_suppressed"]
    assert summary and summary[0]["who"] == "-" and summary[0]["count"] == 2_000 - len(flood)
    assert len([r for r in kept if r["who"] == "root"]) == 20
