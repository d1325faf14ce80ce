"""Notices: what the notifier tells webhooks, and how they wait in its queues.

A :class:`Notice` is made once from an event (:mod:`resofleet.notifier.watch`) and put,
msgpack-encoded, into the queue of every webhook that wants it; its ``id`` stays the same
through every retry and redelivery, so a receiver can drop a notice it has seen (the
queues deliver at least once: a notifier killed between a POST and its acknowledgement
sends that notice again). A notice a webhook never took becomes a :class:`DeadLetter`.
"""

from __future__ import annotations

from typing import Final

import msgspec

from .settings import EventType

__all__ = ["DeadLetter", "Notice", "decode_dead", "decode_notice", "encode"]

#: Values in a notice's ``data``: names, counts, states.
Value = str | int | float | bool | None


class Notice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """One thing that happened, for people and for programs.

    ``text`` is one plain line for people (rich-text tags stripped); ``data`` carries the
    fields a program wants (names as the console printed them, counts, states); ``time``
    is when the notifier saw it (Unix seconds)."""

    id: str
    event: EventType
    server: str
    time: float
    text: str
    data: dict[str, Value] = msgspec.field(default_factory=dict)


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """A notice ``webhook`` did not take: after ``attempts`` tries, or at once when its
    queue was full (``attempts`` 0); ``reason`` says what the last try got."""

    webhook: str
    notice: Notice
    reason: str
    attempts: int
    time: float


_encoder: Final = msgspec.msgpack.Encoder()
_notice_decoder: Final = msgspec.msgpack.Decoder(Notice)
_dead_decoder: Final = msgspec.msgpack.Decoder(DeadLetter)


def encode(message: Notice | DeadLetter) -> bytes:
    return _encoder.encode(message)


def decode_notice(data: bytes) -> Notice:
    """``msgspec.DecodeError`` / ``ValidationError`` for bytes that are not a notice."""
    return _notice_decoder.decode(data)


def decode_dead(data: bytes) -> DeadLetter:
    return _dead_decoder.decode(data)
