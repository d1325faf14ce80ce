"""Errors raised by a bus, and the one way a handler's failure becomes a reply.

The error tree::

    ReplyError               a failure with a client ``error.code`` and a sentence a client
    │                        may read (``message``); ``detail``, when set, is for the log only
    └── BusError             base of the bus's own errors; ``code`` is the client error code
        ├── ServerOffline    no agent serves the server (the request was returned)   server_offline
        ├── RequestTimeout   no reply before the request's deadline                  timeout
        ├── BusUnavailable   not connected to the broker, or the link dropped         bus_unavailable
        ├── ServerBusy       the server's command queue is full                       rate_limited
        ├── QueueFull        a work queue refused a message: it holds its maximum     rate_limited
        ├── AlreadyServed    another agent already serves this server id (at serve())  internal
        └── NotPermitted     the broker user may not serve this server id (at serve()) internal

Each maps to exactly one :class:`resofleet.contracts.ErrorCode`. Other packages derive their
client-facing failures from :class:`ReplyError` (the agent's ``AgentError`` does).

A handler's failure becomes a reply in one place, :func:`reply_for`, used by both
transports' serve loops and by the agent itself:

- :class:`ReplyError`: ``Error(code, message)``; its ``detail`` (which may quote an OS or
  Docker error) goes to the log with a reference, and the reference to the client;
- :class:`resofleet.contracts.ContractError`: its own code (``bad_request``) and sentence;
- anything else: ``Error(internal, INTERNAL_SENTENCE + reference)``, and the same
  reference is logged with the traceback. No exception text ever reaches a client.
"""

from __future__ import annotations

import logging
import secrets
from typing import ClassVar, Final

from resofleet.contracts import BusReply, ContractError, Error, ErrorCode

__all__ = [
    "AlreadyServed",
    "BusError",
    "BusUnavailable",
    "INTERNAL_SENTENCE",
    "NotPermitted",
    "QueueFull",
    "ReplyError",
    "RequestTimeout",
    "ServerBusy",
    "ServerOffline",
    "new_reference",
    "reply_for",
    "with_reference",
]

log = logging.getLogger(__name__)

#: What a client reads when a handler failed in a way nobody foresaw (a bug): nothing of
#: the exception itself, which may name files, hosts or secrets; the reference after it
#: finds the traceback in the agent's log.
INTERNAL_SENTENCE: Final = "The agent failed to handle the request; its log has the details."

#: Hex digits of a reference: 8 (32 random bits) tell a day's failures apart and are
#: short enough to read out or paste into a search.
_REFERENCE_DIGITS: Final = 8


class ReplyError(Exception):
    """A failure a client may be told about: ``code`` and ``message``, a sentence a person
    can act on that quotes nothing foreign. ``detail``, when given, is what an operator
    needs (it may quote an OS or Docker error): it is logged, never sent, and it is what
    ``str()`` shows."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message if detail is None else detail)
        self.message = message
        self.detail = detail


class BusError(ReplyError):
    pass


class ServerOffline(BusError):
    code = ErrorCode.SERVER_OFFLINE

    def __init__(self, server: str) -> None:
        super().__init__(f"Server {server!r} is offline: no agent serves it right now.")
        self.server = server


class RequestTimeout(BusError):
    code = ErrorCode.TIMEOUT

    def __init__(self, server: str, timeout: float) -> None:
        super().__init__(f"Server {server!r} did not answer within {timeout:g} s.")
        self.server = server


class BusUnavailable(BusError):
    code = ErrorCode.BUS_UNAVAILABLE


class ServerBusy(BusError):
    code = ErrorCode.RATE_LIMITED

    def __init__(self, server: str) -> None:
        super().__init__(
            f"Server {server!r} has too many requests waiting; try again in a moment."
        )
        self.server = server


class QueueFull(BusError):
    """A work queue (:meth:`~resofleet.bus.base.Bus.work_queue`) that refuses new messages
    when full already holds its maximum: the message was not taken."""

    code = ErrorCode.RATE_LIMITED

    def __init__(self, queue: str) -> None:
        super().__init__(f"The queue {queue!r} is full; the message was not taken.")
        self.queue = queue


class NotPermitted(BusError):
    """The broker refused what serving a server takes (its queue, its binding): the bus's
    broker user lacks the permissions for that server id."""

    def __init__(self, server: str, detail: str) -> None:
        super().__init__(
            f"The broker refused to let this agent serve {server!r} ({detail}); its broker "
            "user's permissions must cover that server's command queue and binding key."
        )
        self.server = server


class AlreadyServed(BusError):
    def __init__(self, server: str) -> None:
        super().__init__(
            f"Server id {server!r} is already served by another agent on this bus; "
            "each server id must be configured on exactly one agent."
        )
        self.server = server


def new_reference() -> str:
    """A short random id naming one logged failure, for the client's sentence and the log."""
    return secrets.token_hex(_REFERENCE_DIGITS // 2)


def with_reference(sentence: str, reference: str) -> str:
    """``sentence`` with ``(reference <ref>)`` before its final full stop."""
    return f"{sentence.rstrip().removesuffix('.')} (reference {reference})."


def reply_for(exc: BaseException, *, server: str) -> BusReply:
    """The reply a requester receives when the handler for ``server`` failed with ``exc``:
    the one translation of handler failures (see the module docstring)."""
    if isinstance(exc, ReplyError):
        message = exc.message
        if exc.detail is not None:
            reference = new_reference()
            log.warning(
                "server=%s: answered %s: %s ref=%s", server, exc.code.value, exc.detail, reference
            )
            message = with_reference(message, reference)
        return BusReply(body=Error(message=message, code=exc.code, server=server))
    if isinstance(exc, ContractError):
        return BusReply(body=Error(message=exc.message, code=exc.code, server=server))
    reference = new_reference()
    log.error("server=%s: the handler failed ref=%s", server, reference, exc_info=exc)
    return BusReply(
        body=Error(
            message=with_reference(INTERNAL_SENTENCE, reference),
            code=ErrorCode.INTERNAL,
            server=server,
        )
    )
