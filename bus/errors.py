"""Errors raised by a bus.

The error tree::

    BusError                 base; ``code`` is the client error code it maps to
    ├── ServerOffline        no agent serves the server (the request was returned)   server_offline
    ├── RequestTimeout       no reply before the request's deadline                  timeout
    ├── BusUnavailable       not connected to the broker, or the link dropped         bus_unavailable
    ├── ServerBusy           the server's command queue is full                       rate_limited
    └── AlreadyServed        another agent already serves this server id (at serve())  internal

Each maps to exactly one :class:`contracts.ErrorCode`; the gateway turns them into
``error`` replies in one place.
"""

from __future__ import annotations

from resofleet.contracts import ErrorCode

__all__ = [
    "AlreadyServed",
    "BusError",
    "BusUnavailable",
    "RequestTimeout",
    "ServerBusy",
    "ServerOffline",
]


class BusError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL


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


class AlreadyServed(BusError):
    def __init__(self, server: str) -> None:
        super().__init__(
            f"Server id {server!r} is already served by another agent on this bus; "
            "each server id must be configured on exactly one agent."
        )
        self.server = server
