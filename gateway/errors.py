"""Errors of the gateway, and what each one becomes on the wire, in one place.

The error tree::

    GatewayError              base; ``code`` is the client ``error.code`` it maps to
    ├── UnknownServer         malformed id, or outside the client's scope    unknown_server
    ├── AmbiguousServer       no ``server`` and several visible              ambiguous_server
    ├── NoServer              no ``server`` and none visible                 server_offline
    ├── ServerGone            its agent stopped announcing it                server_offline
    ├── Forbidden             the client's role may not do this              forbidden
    ├── Unauthenticated       no valid token yet, or a refused ``auth``      unauthenticated
    └── RateLimited           over the connection's request rate             rate_limited

Failures that arrive from elsewhere map the same way, in :func:`error_for`:

- :class:`contracts.ContractError` (input that does not fit the protocol): its own code,
  ``bad_request`` or ``unknown_type``;
- :class:`bus.BusError` (``ServerOffline``, ``RequestTimeout``, ``BusUnavailable``,
  ``ServerBusy``): its ``code``;
- anything else: ``internal``, with a sentence that does not leak the traceback.

Close codes (a connection ends with one of these, never silently):

- :data:`CLOSE_GOING_AWAY` (1001): the gateway is shutting down; reconnect elsewhere.
- :data:`CLOSE_TOO_SLOW` (1013, "try again later"): the client fell too far behind the
  event stream and was cut off; reconnect and ask ``get_output since`` for what was missed.
- 1009 (message too big) is sent by websockets itself for a frame over ``max_size``.
- :data:`CLOSE_UNAUTHENTICATED` (4401): no valid token within the auth timeout (5 s), or
  the session's token expired without being renewed in band ("token expired").
- :data:`CLOSE_REVOKED` (4403): the session's token was revoked (``token revoke``).

Refusals before the WebSocket exists are HTTP answers to the handshake, with a one-line
body: 401 (a token was presented and refused: the body says why), 403 (a browser origin
that is neither the same origin nor configured), 429 (the client address holds the
maximum number of connections).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from resofleet.bus import BusError
from resofleet.contracts import ContractError, Error, ErrorCode, RequestId

__all__ = [
    "AmbiguousServer",
    "CLOSE_GOING_AWAY",
    "CLOSE_REVOKED",
    "CLOSE_TOO_SLOW",
    "CLOSE_UNAUTHENTICATED",
    "Forbidden",
    "GatewayError",
    "NoServer",
    "RateLimited",
    "ServerGone",
    "Unauthenticated",
    "UnknownServer",
    "error_for",
]

log = logging.getLogger(__name__)

#: The gateway is going away (shutdown); the client should reconnect, maybe elsewhere.
CLOSE_GOING_AWAY: Final = 1001
#: The client could not keep up with its event stream. 1013 ("try again later") rather
#: than 1008 (policy violation): the condition is transient, reconnecting is the cure.
CLOSE_TOO_SLOW: Final = 1013
#: Not (or no longer) authenticated. The 4000-4999 range is the application's; 4401 and
#: 4403 echo the HTTP statuses a browser developer already knows.
CLOSE_UNAUTHENTICATED: Final = 4401
#: The token this session was opened with has been revoked.
CLOSE_REVOKED: Final = 4403


class GatewayError(Exception):
    """A request the gateway answers with an error itself, without asking a server."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, server: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.server = server


class UnknownServer(GatewayError):
    code = ErrorCode.UNKNOWN_SERVER


class AmbiguousServer(GatewayError):
    code = ErrorCode.AMBIGUOUS_SERVER

    def __init__(self, servers: Sequence[str]) -> None:
        listed = ", ".join(servers)
        super().__init__(
            f"Several servers are online ({listed}): add \"server\": \"<id>\" to the request, "
            "or connect to /ws/<id>."
        )
        self.servers = tuple(servers)


class NoServer(GatewayError):
    code = ErrorCode.SERVER_OFFLINE

    def __init__(self) -> None:
        super().__init__(
            "No server is online right now: start an agent (or `resofleet up`) and try again."
        )


class ServerGone(GatewayError):
    code = ErrorCode.SERVER_OFFLINE

    def __init__(self, server: str, seconds: float) -> None:
        super().__init__(
            f"Server {server!r} is offline: its agent has not announced it for {seconds:.0f} s "
            "(it stopped, or lost its link to the bus).",
            server=server,
        )


class Forbidden(GatewayError):
    code = ErrorCode.FORBIDDEN


class Unauthenticated(GatewayError):
    code = ErrorCode.UNAUTHENTICATED


class RateLimited(GatewayError):
    code = ErrorCode.RATE_LIMITED


def error_for(
    exc: BaseException,
    *,
    id: RequestId | None = None,
    server: str | None = None,
    conn: str = "-",
) -> Error:
    """The ``error`` message a client receives for ``exc``: the one mapping of failures."""
    if isinstance(exc, GatewayError):
        return Error(message=exc.message, code=exc.code, id=id, server=exc.server or server)
    if isinstance(exc, ContractError):
        return Error(message=exc.message, code=exc.code, id=exc.id if id is None else id)
    if isinstance(exc, BusError):
        return Error(message=str(exc), code=exc.code, id=id, server=server)
    log.error("conn=%s server=%s: internal error", conn, server or "-", exc_info=exc)
    return Error(
        message="The gateway failed to handle the request; it has been logged. Try again.",
        code=ErrorCode.INTERNAL,
        id=id,
        server=server,
    )
