"""Tokens never reach a log line."""

from __future__ import annotations

import logging

from resofleet.gateway.redact import REDACTED, RedactFilter, RedactingLogger, redact

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJl"


def test_query_header_cookie_and_json_forms():
    """token=, Bearer, resofleet_token= and a JSON "token" field are all redacted."""
    for text in (
        f"GET /ws?token={TOKEN} HTTP/1.1",
        f"GET /ws?a=1&token={TOKEN}&b=2",
        f"Authorization: Bearer {TOKEN}",
        f"Cookie: resofleet_token={TOKEN}; other=1",
        f'{{"type": "auth", "token": "{TOKEN}"}}',
    ):
        clean = redact(text)
        assert TOKEN not in clean and REDACTED in clean, clean


def test_other_text_is_untouched():
    """Lines without a token are left alone (and keep what follows a token)."""
    assert redact("conn=c1 server=eu-1: kick Bob") == "conn=c1 server=eu-1: kick Bob"
    assert redact(f"/ws?token={TOKEN}&x=1").endswith("&x=1")


def make_logger(name: str) -> tuple[logging.Logger, list[str]]:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = Keep()
    handler.addFilter(RedactFilter())
    logger.handlers[:] = [handler]
    return logger, lines


def test_filter_redacts_arguments_and_tracebacks():
    """The filter cleans the formatted message and the traceback text."""
    logger, lines = make_logger("test.redact.filter")
    logger.info("request %s", f"/ws?token={TOKEN}")
    try:
        raise ValueError(f"bad token={TOKEN}")
    except ValueError:
        logger.exception("failed")
    assert lines and all(TOKEN not in line for line in lines)
    assert REDACTED in lines[0] and "ValueError" in lines[1]


def test_adapter_redacts_before_passing_on():
    """websockets' logger goes through the adapter: its DEBUG request lines are clean."""
    logger, lines = make_logger("test.redact.adapter")
    logger.handlers[0].filters.clear()
    RedactingLogger(logger, {}).debug("< GET %s HTTP/1.1", f"/ws?token={TOKEN}")
    assert lines == [f"< GET /ws?token={REDACTED} HTTP/1.1"]
