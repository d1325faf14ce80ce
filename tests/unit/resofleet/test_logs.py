"""The JSON log format: one object per line, context lifted into fields, nothing leaked."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from resofleet.gateway.redact import RedactFilter
from resofleet.logs import ContextFilter, JsonFormatter, split_context, split_format


def formatted(msg: str, *args: object, exc: bool = False, **extra: object) -> dict:
    """``msg % args`` as the JSON handler writes it: context filter, redaction, formatter."""
    exc_info = None
    if exc:
        try:
            raise ValueError("Authorization: Bearer eyJsecret.leak")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("resofleet.test", logging.INFO, __file__, 1, msg, args, exc_info)
    record.created = 1714564800.123456
    for key, value in extra.items():
        setattr(record, key, value)
    for f in (ContextFilter(), RedactFilter()):
        assert f.filter(record)
    line = JsonFormatter().format(record)
    assert "\n" not in line and line.isascii()
    return json.loads(line)


def test_the_keys_and_a_utc_time_with_milliseconds() -> None:
    """time (UTC ISO 8601, ms), level, logger, message; no context: no context keys."""
    assert formatted("started %d", 3) == {
        "time": "2024-05-01T12:00:00.123Z", "level": "INFO", "logger": "resofleet.test",
        "message": "started 3",
    }


def test_a_format_prefix_becomes_fields_with_its_own_arguments() -> None:
    """conn=%s server=%s: lifts each argument whole, spaces and colons included."""
    line = formatted("conn=%s server=%s: refused %s: %s", "c1", "a b: c", "get_status", "no")
    assert (line["conn"], line["server"], line["message"]) == ("c1", "a b: c", "refused get_status: no")


def test_client_text_in_a_field_is_cleaned() -> None:
    """A line break or a token in a lifted value is escaped or redacted like the message."""
    line = formatted("conn=%s server=%s: refused", "c1", "x\ny?token=abc")
    assert line["server"] == "x\\ny?token=[redacted]"


@pytest.mark.parametrize(
    ("message", "fields", "rest"),
    [
        ("conn=- server=-: login refused", {}, "login refused"),
        ("server=main stderr: boom", {"server": "main"}, "stderr: boom"),
        ("conn=c1 server=main: closing", {"conn": "c1", "server": "main"}, "closing"),
        ("plain message server=x", {}, "plain message server=x"),
        ("server=a server=b: x", {"server": "a"}, "server=b: x"),
    ],
)
def test_a_written_out_prefix_is_split_off(message: str, fields: dict, rest: str) -> None:
    """A prefix in the text: the known keys at the start, each once, '-' meaning none."""
    assert split_context(message) == (fields, rest)


def test_split_format_leaves_the_other_arguments() -> None:
    assert split_format("server=%s: %s failed", ("main", "x")) == ({"server": "main"}, "%s failed", ("x",))


def test_extra_wins_and_a_reference_is_a_field() -> None:
    """extra={"request": ...} is written; a ref= stays in the message and is a field too."""
    line = formatted("server=%s: the handler failed ref=%s", "main", "1a2b3c4d", request="r7")
    assert (line["request"], line["ref"], line["server"]) == ("r7", "1a2b3c4d", "main")
    assert line["message"] == "the handler failed ref=1a2b3c4d"


def test_a_traceback_is_one_field_and_redacted() -> None:
    line = formatted("failed", exc=True)
    assert "ValueError" in line["exc"] and "eyJsecret" not in line["exc"]
