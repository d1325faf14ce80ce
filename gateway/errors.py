"""Errors of the gateway, and what each one becomes on the wire, in one place.

The error tree::

    GatewayError              base; ``code`` is the client ``error.code`` it maps to
    ├── UnknownServer         the id refused (``refused``) and why (``reason``):  unknown_server
    │                         malformed, outside the client's scope, or another
    │                         server than the connection is pinned to
    ├── AmbiguousServer       no ``server`` and several visible              ambiguous_server
    ├── NoMatch               a bulk request's ``servers`` match no server   unknown_server
    │                         the client may see
    ├── TooManyServers        a bulk request's ``servers`` match more than   bad_request
    │                         one request may reach
    ├── NoServer              no ``server`` and none visible                 server_offline
    ├── ServerGone            its agent went silent, or was lost             server_offline
    ├── ServerLost            its agent was lost while it held the request   server_lost
    ├── Forbidden             the client's role may not do this; carries     forbidden
    │                         the role ``needed``, the role ``held`` and the ``server``
    ├── Unauthenticated       no valid token yet, or a refused ``auth``      unauthenticated
    └── RateLimited           over the connection's request rate             rate_limited

Refusals carry what the audit records, so nobody recomputes the decision routing made.

Every ``error`` a client receives is made by :func:`error_for`, the one table:

- :class:`GatewayError`: its own code and sentence;
- :class:`resofleet.contracts.ContractError` (input that does not fit the protocol): its own code,
  ``bad_request`` or ``unknown_type``, and sentence;
- :class:`resofleet.bus.ReplyError`, which :class:`resofleet.bus.BusError` (``ServerOffline``,
  ``RequestTimeout``, ``BusUnavailable``, ``ServerBusy``) derives from: its ``code`` and
  its client sentence, never its ``detail``;
- :class:`~resofleet.gateway.tokens.TokenError` (a refused ``auth``): ``unauthenticated`` and why;
- anything else: ``internal``, with a fixed sentence and a reference; the traceback is
  logged under the same reference, and no text of the exception reaches the client.

Failures of an agent's handler arrive already translated, as ``error`` replies made by
:func:`resofleet.bus.reply_for`.

Whether a refused or failed ``command`` or ``container`` request ran is decided in one
place too, :func:`outcome_for`, from the failure and whether the request had been handed
to the bus (its ``error`` then carries :class:`~resofleet.contracts.CommandOutcome`):

- refusals of the gateway's own (:class:`GatewayError` but :class:`ServerLost`, bad input,
  a refused token): ``not_executed``, nothing left the gateway;
- :class:`resofleet.bus.ServerOffline` (the bus returned the request: nobody took it) and
  :class:`resofleet.bus.ServerBusy` (the server's queue refused it): ``not_executed``;
- :class:`ServerLost`: ``unknown``, the agent may have run it before it went;
- anything else (``timeout``, ``bus_unavailable``, ``internal``): ``unknown`` once the
  request was handed to the bus, ``not_executed`` before (the broker link was already down).

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

import enum
import logging
from collections.abc import Sequence
from typing import Final

from resofleet.bus import ReplyError, ServerBusy, ServerOffline, new_reference, with_reference
from resofleet.contracts import CommandOutcome, ContractError, Error, ErrorCode, RequestId, Role

from .tokens import TokenError

__all__ = [
    "AmbiguousServer",
    "NoMatch",
    "TooManyServers",
    "CLOSE_GOING_AWAY",
    "CLOSE_REVOKED",
    "CLOSE_TOO_SLOW",
    "CLOSE_UNAUTHENTICATED",
    "Forbidden",
    "GatewayError",
    "INTERNAL_SENTENCE",
    "NoServer",
    "RateLimited",
    "ScopeRefusal",
    "ServerGone",
    "ServerLost",
    "Unauthenticated",
    "UnknownServer",
    "error_for",
    "outcome_for",
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

#: What a client reads when the gateway failed in a way nobody foresaw (a bug): nothing of
#: the exception, which may name files or hosts; :func:`error_for` appends the reference
#: under which the traceback is logged.
INTERNAL_SENTENCE: Final = "The gateway failed to handle the request and logged why; try again."


class GatewayError(Exception):
    """A request the gateway answers with an error itself, without asking a server."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, server: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.server = server


class ScopeRefusal(enum.StrEnum):
    """Why a server id was answered ``unknown_server``."""

    #: Not a server id at all (1-63 lowercase letters, digits and dashes).
    MALFORMED = "malformed"
    #: A server id the client's token does not cover (or, pinned, its pinned server).
    OUT_OF_SCOPE = "out_of_scope"
    #: A server the token covers, on a connection pinned (``/ws/<id>``) to another.
    PINNED_ELSEWHERE = "pinned_elsewhere"


class UnknownServer(GatewayError):
    """``refused``: the id asked for; ``reason``: why. The client reads the same sentence
    for a server outside its scope as for one that does not exist."""

    code = ErrorCode.UNKNOWN_SERVER

    def __init__(self, refused: str, reason: ScopeRefusal, *, pinned: str | None = None) -> None:
        if reason is ScopeRefusal.MALFORMED:
            message = (
                f"{refused[:80]!r} is not a server id: ids are 1-63 lowercase letters, "
                "digits and dashes (send get_servers for the list)."
            )
        elif reason is ScopeRefusal.PINNED_ELSEWHERE:
            message = (
                f"This connection is pinned to server {pinned!r}; connect to /ws to reach "
                f"{refused!r}."
            )
        else:
            message = f"There is no server {refused!r} (send get_servers for the list)."
        super().__init__(message)
        self.refused = refused
        self.reason = reason


class AmbiguousServer(GatewayError):
    code = ErrorCode.AMBIGUOUS_SERVER

    def __init__(self, servers: Sequence[str]) -> None:
        listed = ", ".join(servers)
        super().__init__(
            f"Several servers are online ({listed}): add \"server\": \"<id>\" to the request, "
            "or connect to /ws/<id>."
        )
        self.servers = tuple(servers)


class NoMatch(GatewayError):
    """No server the client may see matches a bulk request's patterns. The sentence
    repeats only what the client sent, so a pattern naming a server outside its scope
    reads exactly as one naming no server at all."""

    code = ErrorCode.UNKNOWN_SERVER

    def __init__(self, patterns: Sequence[str], *, hidden: Sequence[str] = ()) -> None:
        listed = ", ".join(repr(p) for p in patterns[:8]) + (", ..." if len(patterns) > 8 else "")
        super().__init__(f"No server matches {listed} (send get_servers for the list).")
        self.patterns = tuple(patterns)
        #: The plain names among them outside the client's scope (audited, never told).
        self.hidden = tuple(hidden)


class TooManyServers(GatewayError):
    """A bulk request's patterns match ``matched`` servers, more than ``limit``."""

    code = ErrorCode.BAD_REQUEST

    def __init__(self, matched: int, limit: int) -> None:
        super().__init__(
            f"The patterns match {matched} servers; one bulk request may reach at most "
            f"{limit}: narrow the patterns, or split the fleet over several requests."
        )
        self.matched = matched
        self.limit = limit


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
            f"Server {server!r} is offline: its agent has not announced it for "
            f"{seconds:.{0 if seconds >= 1 else 1}f} s (it stopped, or lost its link to the bus).",
            server=server,
        )


class ServerLost(GatewayError):
    """The agent of ``server`` went away while it held the request; ``how`` says how the
    gateway learnt it (its command queue vanished, its announcements stopped)."""

    code = ErrorCode.SERVER_LOST

    def __init__(self, server: str, how: str) -> None:
        super().__init__(
            f"Server {server!r} was lost while it had this request ({how}). It may or may "
            "not have run: check (get_status, get_worlds, get_output) before sending it again.",
            server=server,
        )
        self.how = how


class Forbidden(GatewayError):
    """``what`` (as the sentence names it) needs the role ``needed``; the client holds
    ``held``; ``server`` is the server it was meant for."""

    code = ErrorCode.FORBIDDEN

    def __init__(self, what: str, *, needed: Role, held: Role, server: str) -> None:
        super().__init__(
            f"Your role ({held.label}) may not run {what}; it needs {needed.label}.",
            server=server,
        )
        self.needed = needed
        self.held = held


class Unauthenticated(GatewayError):
    code = ErrorCode.UNAUTHENTICATED


class RateLimited(GatewayError):
    code = ErrorCode.RATE_LIMITED


def outcome_for(exc: BaseException, *, handed: bool) -> CommandOutcome:
    """Whether a ``command`` or ``container`` request that failed with ``exc`` ran;
    ``handed``: whether it had been given to the bus (see the module docstring)."""
    if isinstance(exc, ServerLost):
        return CommandOutcome.UNKNOWN
    if isinstance(exc, (GatewayError, ContractError, TokenError, ServerOffline, ServerBusy)):
        return CommandOutcome.NOT_EXECUTED
    return CommandOutcome.UNKNOWN if handed else CommandOutcome.NOT_EXECUTED


def error_for(
    exc: BaseException,
    *,
    id: RequestId | None = None,
    server: str | None = None,
    conn: str = "-",
    outcome: CommandOutcome | None = None,
) -> Error:
    """The ``error`` message a client receives for ``exc``: the one mapping of failures
    (see the module docstring). ``outcome``: for a ``command`` or ``container`` request,
    whether it ran (:func:`outcome_for`)."""
    if isinstance(exc, GatewayError):
        return Error(
            message=exc.message, code=exc.code, id=id, server=exc.server or server, outcome=outcome
        )
    if isinstance(exc, ContractError):
        return Error(
            message=exc.message, code=exc.code, id=exc.id if id is None else id, outcome=outcome
        )
    if isinstance(exc, ReplyError):
        return Error(message=exc.message, code=exc.code, id=id, server=server, outcome=outcome)
    if isinstance(exc, TokenError):
        return Error(message=exc.message, code=ErrorCode.UNAUTHENTICATED, id=id, outcome=outcome)
    reference = new_reference()
    log.error(
        "conn=%s server=%s: internal error ref=%s", conn, server or "-", reference, exc_info=exc
    )
    return Error(
        message=with_reference(INTERNAL_SENTENCE, reference),
        code=ErrorCode.INTERNAL,
        id=id,
        server=server,
        outcome=outcome,
    )
