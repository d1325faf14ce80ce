"""`resofleet audit tail`'s reading and printing: escaping, the line layout, files read backwards, rotation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resofleet.commands import audit as tail
from resofleet.commands.audit import Follower, escape, format_line, format_record, last_lines, merged, quote


def record(**overrides) -> dict:
    base = {
        "time": "2026-11-25T22:00:00.123Z", "source": "gateway", "who": "alice", "role": "moderator",
        "client": "10.0.0.5", "server": "eu-1", "command": "shutdown", "outcome": "forbidden",
        "duration": None, "reason": "moderator tokens cannot run shutdown",
    }
    base.update(overrides)
    return base


def test_readable_layout():
    """One line: time, source, who(role)@client, server, outcome, quoted command, duration, extras."""
    assert format_record(record()) == (
        '2026-11-25T22:00:00.123Z gateway alice(moderator)@10.0.0.5 eu-1 forbidden "shutdown" '
        'reason="moderator tokens cannot run shutdown"'
    )
    agent = record(source="agent", outcome="ok", command="kick Bob", duration=0.04213, reason=None, world=0)
    assert format_record(agent).endswith(' eu-1 ok "kick Bob" 0.042s reason=null world=0')


def test_missing_parts_are_dashes():
    """A refusal with no identity, server or command still prints a complete line."""
    line = format_record(record(who="", role="", server=None, command=None, outcome="unauthenticated", reason="bad token"))
    assert line == '2026-11-25T22:00:00.123Z gateway -@10.0.0.5 - unauthenticated reason="bad token"'


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J", "\\x1b[2J"),
        ("a\r\nb\x00", "a\\r\\nb\\x00"),
        ("\x9b31m\x7f", "\\x9b31m\\x7f"),
        ("\u202eevil\u2028", "\\u202eevil\\u2028"),
        ("plain text é", "plain text é"),
    ],
)
def test_escape_leaves_nothing_a_terminal_acts_on(raw: str, shown: str):
    """Controls, C1, DEL, bidi overrides and line separators are shown as escapes; printable text as is."""
    assert escape(raw) == shown


def test_every_field_is_escaped():
    """ESC in any field (command, who, client, an extra's key or value) never reaches the output raw."""
    esc = "\x1b]0;pwned\x07"
    line = format_record(record(command=esc, who=esc, client=esc, server=esc, **{esc: esc}))
    assert "\x1b" not in line and "\x07" not in line
    assert line.count("\\x1b]0;pwned\\x07") == 6


def test_quote_is_unambiguous():
    """Quotes and backslashes inside a command are escaped, so the quoted text reads back exactly."""
    assert quote('say "hi" \\x1b') == '"say \\"hi\\" \\\\x1b"'


def test_json_mode_prints_lines_as_written_but_inert():
    """--json passes valid lines through, escapes raw terminal-active characters, wraps garbage."""
    line = json.dumps(record(command="kick"), separators=(",", ":")).encode()
    assert format_line(line, as_json=True) == line.decode()
    raw_csi = b'{"command":"\xc2\x9b2J"}'
    assert format_line(raw_csi, as_json=True) == '{"command":"\\u009b2J"}'
    assert json.loads(format_line(b"\x1b[2J not json", as_json=True)) == {"unparsed": "\x1b[2J not json"}
    assert "\x1b" not in format_line(b"\x1b[2J not json", as_json=True)
    assert format_line(b"\x1b[2J not json", as_json=False) == '? unparsed line: "\\x1b[2J not json"'


def test_last_lines_reads_backwards_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The last N lines come out whole even when they span several read blocks."""
    monkeypatch.setattr(tail, "TAIL_BLOCK", 7)
    path = tmp_path / "f"
    path.write_bytes(b"".join(f"line {i}\n".encode() for i in range(50)))
    with path.open("rb") as f:
        assert last_lines(f, path.stat().st_size, 3) == [b"line 47", b"line 48", b"line 49"]
        assert len(last_lines(f, path.stat().st_size, 100)) == 50
        assert last_lines(f, path.stat().st_size, 0) == []


def test_merged_by_time():
    """Records of two files interleave by time."""
    a = [json.dumps({"time": t}).encode() for t in ("2026-01-01T00:00:01.000Z", "2026-01-01T00:00:03.000Z")]
    b = [json.dumps({"time": t}).encode() for t in ("2026-01-01T00:00:02.000Z",)]
    assert merged([a, b]) == [a[0], b[0], a[1]]


def test_tail_continues_into_rotated_files(tmp_path: Path):
    """Fewer records than asked in the current file: the rotated .1 supplies the older ones."""
    path = tmp_path / "a.jsonl"
    (tmp_path / "a.jsonl.1").write_bytes(b"1\n2\n3\n")
    path.write_bytes(b"4\n5\n")
    follower = Follower(path)
    assert follower.tail(4) == [b"2", b"3", b"4", b"5"]
    follower.close()


def test_follower_reads_on_across_rotation(tmp_path: Path):
    """Following sees appends, the rest of a renamed file, then the new file from its start."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"old\n")
    follower = Follower(path)
    assert follower.tail(5) == [b"old"]
    assert follower.poll() == []
    with path.open("ab") as f:
        f.write(b"one\ntw")
    assert follower.poll() == [b"one"]
    with path.open("ab") as f:
        f.write(b"o\nlast-in-old\n")
    path.rename(tmp_path / "a.jsonl.1")
    path.write_bytes(b"new\n")
    assert follower.poll() == [b"two", b"last-in-old", b"new"]
    follower.close()


def test_follower_reads_files_rotated_between_two_polls(tmp_path: Path):
    """Two rotations between polls: the file rotated in between is read whole, in order."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"a\n")
    follower = Follower(path)
    assert follower.tail(5) == [b"a"]
    for content in (b"b\n", b"c\n"):
        if (tmp_path / "a.jsonl.1").exists():
            (tmp_path / "a.jsonl.1").rename(tmp_path / "a.jsonl.2")
        path.rename(tmp_path / "a.jsonl.1")
        path.write_bytes(content)
    with (tmp_path / "a.jsonl.2").open("ab") as f:
        f.write(b"a2\n")  # written to the old file after it was renamed
    assert follower.poll() == [b"a2", b"b", b"c"]
    follower.close()
