"""Keep tokens out of logs, and client text on one line.

Browsers present a token as ``?token=...`` (and proxies, websockets' debug log or a
traceback may print a request line that carries it), scripts as ``Authorization: Bearer
...``, and ``GET /login`` sets it as a cookie. A log file is read by more people than
hold admin tokens, so every log line goes through :func:`redact` on its way out:

- :class:`RedactFilter`, installed on the root logger's handlers by the command line,
  rewrites each record's message (and its formatted traceback);
- :class:`RedactingLogger` wraps the logger websockets is given, so even its DEBUG
  request lines are clean when a test or an embedder turns them on.

The gateway's own log lines never print a query string in the first place.

The same pass escapes every control character in a message (CR, LF, ESC, the C1 controls
such as CSI, DEL, the Unicode line separators: :data:`resofleet.contracts.CONTROL_CHARACTERS`)
as ``\\n``, ``\\x1b``, ``\\x9b``...: log lines quote what clients sent (a refused server
id, a bad command), and a line break there would forge a log line, an escape sequence would
drive the terminal of whoever reads the log. Tracebacks keep their lines; only the message
is one line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any, Final

from resofleet.contracts import CONTROL_CHARACTERS

__all__ = ["REDACTED", "RedactFilter", "RedactingLogger", "clean", "install", "redact"]

REDACTED: Final = "[redacted]"

# token=VALUE in a query or a cookie (also resofleet_token=, access_token=), and
# "Bearer VALUE" in a header; the value runs to the next separator.
_PATTERNS: Final = (
    (re.compile(r"(?i)(\btoken=)[^\s&;,'\"]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"(?i)(_token=)[^\s&;,'\"]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"(?i)(\bbearer\s+)[^\s,'\"]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"(\"token\"\s*:\s*\")[^\"]*"), rf"\g<1>{REDACTED}"),
)


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def clean(text: str) -> str:
    """``text`` as a log line may show it: tokens redacted, control characters escaped."""
    return CONTROL_CHARACTERS.sub(_escape, redact(text))


def redact(text: str) -> str:
    """``text`` with every token value replaced by :data:`REDACTED`."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactFilter(logging.Filter):
    """A handler filter that redacts each record's message and traceback in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as usual
            return True
        cleaned = clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put a :class:`RedactFilter` on every handler of ``logger`` (default: the root)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())


class RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that formats each message itself and redacts it before passing it on."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args!r}"
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, "%s", clean(text), **kwargs)
