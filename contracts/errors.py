"""Errors of the wire contract.

The error tree::

    ContractError          input that does not fit the protocol; carries an ErrorCode
                           (bad_request or unknown_type; unknown_world from an agent, for a
                           ``world`` the server does not have), a sentence a person can act
                           on, and what could still be read of the request (id, type, command)

:class:`ErrorCode` is the closed set of ``error.code`` values a client can receive. Every
package maps its own failures onto one of these in one place (its ``errors.py``).
"""

from __future__ import annotations

import enum

__all__ = ["ContractError", "ErrorCode"]


class ErrorCode(enum.StrEnum):
    """The closed set of ``error.code`` values of client protocol v1."""

    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    UNKNOWN_SERVER = "unknown_server"
    #: A command's ``world`` names no world of the server (no world of that name, or an
    #: index past its last one): nothing ran. Added to v1: a client can tell it apart
    #: from malformed input and refresh its list of worlds.
    UNKNOWN_WORLD = "unknown_world"
    AMBIGUOUS_SERVER = "ambiguous_server"
    FORBIDDEN = "forbidden"
    UNAUTHENTICATED = "unauthenticated"
    SERVER_OFFLINE = "server_offline"
    #: The server's agent was lost while it held the request (its process died, its link
    #: dropped, its announcements stopped): the command may or may not have run.
    SERVER_LOST = "server_lost"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    BUS_UNAVAILABLE = "bus_unavailable"
    INTERNAL = "internal"


class ContractError(ValueError):
    """A message that does not fit the protocol.

    ``code`` is :attr:`ErrorCode.BAD_REQUEST` or :attr:`ErrorCode.UNKNOWN_TYPE` (or
    :attr:`ErrorCode.UNKNOWN_WORLD` when an agent finds the ``world`` is not there);
    ``id`` is the request id when it could still be read from the input, so the
    error reply can echo it. ``request_type`` is the request's ``type`` text and
    ``command`` a ``command`` request's console text, each when it could still be read,
    so whoever records the refusal can say what was refused without decoding the input
    again.
    """

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode = ErrorCode.BAD_REQUEST,
        id: str | int | None = None,
        request_type: str | None = None,
        command: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.request_type = request_type
        self.command = command
