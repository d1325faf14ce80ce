"""Log lines as JSON: one object per line, for a log collector (``--log-format json``).

Every line is one JSON object with these keys, in this order::

    {"time": "2024-05-01T12:00:00.123Z", "level": "INFO", "logger": "resofleet.gateway.session",
     "message": "refused get_status: ...", "conn": "c1a2", "server": "main"}

- ``time``: when the record was made, UTC, ISO 8601 with milliseconds and a ``Z``;
- ``level``, ``logger``, ``message``: as the text format shows them;
- ``conn``, ``server``, ``request`` (and ``ref``, the reference a client-facing error
  carries): only where they apply. The services write them at the start of the message
  (``log.info("conn=%s server=%s: ...", conn, server, ...)``, the text format's convention,
  which stays as it is). :class:`ContextFilter`, first on the handler, lifts such a prefix
  of the *format string* into the record's attributes, each with its own argument: exact
  even when the value is client text with spaces or colons in it (a refused server id). A
  prefix written out in the text (``conn=- server=-: ...``) is split off the message by
  :func:`split_context`. A record's own attributes (``extra={"server": ...}``) win over
  both. A ``ref=...`` is lifted from anywhere in the message and left in it too, so the
  text a client quoted is found;
- ``exc``: the traceback, when there is one.

The redaction (:class:`resofleet.gateway.redact.RedactFilter`, on the same handler) has
already rewritten the message by the time it is formatted: tokens redacted, control
characters escaped. Fields taken from ``extra`` are passed through the same
:func:`~resofleet.gateway.redact.clean` here, and the traceback through
:func:`~resofleet.gateway.redact.redact`. The output is ASCII (``ensure_ascii``): JSON escapes
a line break, and no U+2028 or other separator a reader might split on reaches the file, so
one record is always one line.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Final

from resofleet.gateway.redact import clean, redact

__all__ = ["CONTEXT_KEYS", "ContextFilter", "JsonFormatter", "split_context", "split_format"]

#: The context fields a line may carry, in the order they are written.
CONTEXT_KEYS: Final = ("conn", "server", "request")
#: ``key=value`` words at the start of a message, up to a ``": "`` or a plain word.
_PREFIX: Final = re.compile(r"(?P<key>conn|server|request)=(?P<value>[^\s:]*)(?::\s*|\s+|$)")
#: The same prefix in a format string: ``conn=%s server=%s: `` (one argument per key).
_FORMAT_PREFIX: Final = re.compile(r"(?P<key>conn|server|request)=%s(?::\s*|\s+|$)")
#: A reference anywhere in the message (``ref=1a2b3c4d``).
_REF: Final = re.compile(r"\bref=(?P<ref>[0-9A-Za-z_-]+)")
#: What the text format shows for "none" (``conn=- server=-``): no field.
_NONE: Final = frozenset({"", "-", "*"})


def split_context(message: str) -> tuple[dict[str, str], str]:
    """The ``conn=... server=...`` prefix of ``message`` as fields, and the rest.

    Only a leading run of the known keys counts, each key once (the first wins: a later
    ``server=`` is client text, not context); ``-`` (none) gives no field.
    """
    fields: dict[str, str] = {}
    position = 0
    while (match := _PREFIX.match(message, position)) is not None:
        key, value = match["key"], match["value"]
        if key in fields:
            break
        fields[key] = value
        position = match.end()
        if match.group().rstrip().endswith(":"):
            break
    if not fields:
        return {}, message
    return {k: v for k, v in fields.items() if v not in _NONE}, message[position:]


def split_format(msg: str, args: tuple[object, ...]) -> tuple[dict[str, object], str, tuple[object, ...]]:
    """The ``key=%s`` prefix of a format string as fields (each its argument), and the
    rest of the format string with the arguments left for it."""
    fields: dict[str, object] = {}
    position = used = 0
    while used < len(args) and (match := _FORMAT_PREFIX.match(msg, position)) is not None:
        if match["key"] in fields:
            break
        fields[match["key"]] = args[used]
        used += 1
        position = match.end()
        if match.group().rstrip().endswith(":"):
            break
    return fields, msg[position:], args[used:]


class ContextFilter(logging.Filter):
    """Lifts a ``conn=%s server=%s:`` prefix off a record's format string into its
    ``conn``/``server``/``request`` attributes (see the module's docstring). Goes on the
    handler before the redaction, which then sees only the rest of the message; the
    formatter cleans the lifted values the same way."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or not isinstance(record.args, tuple) or not record.args:
            return True
        fields, rest, args = split_format(record.msg, record.args)
        if fields:
            for key, value in fields.items():
                if getattr(record, key, None) is None and str(value) not in _NONE:
                    setattr(record, key, value)
            record.msg, record.args = rest, args
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        context, message = split_context(record.getMessage())
        line: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for key in CONTEXT_KEYS:
            given = getattr(record, key, None)
            if given is not None:
                line[key] = clean(str(given))
            elif key in context:
                line[key] = context[key]
        if (ref := _REF.search(message)) is not None:
            line["ref"] = ref["ref"]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=True, separators=(",", ":"), default=str)


def _utc(created: float) -> str:
    """``created`` (epoch seconds) as ``2024-05-01T12:00:00.123Z``."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
