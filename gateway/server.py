"""The HTTP/WebSocket edge: one websockets asyncio server, its HTTP routes and paths.

Routes (answered in ``process_request``, before any WebSocket handshake):

- ``GET /healthz``: 200 while the process serves (liveness).
- ``GET /readyz``: 200 when the gateway can answer requests (its bus is connected and the
  registry and fan-out run), else 503 with the reason (readiness: a load balancer stops
  sending clients here). The bus says why it is not connected: the connection dropped
  and is being restored, or the broker has left its liveness probe unanswered (frozen,
  cut off), noticed within 3 s (:mod:`resofleet.bus.amqp`).
- ``/ws``: a WebSocket session that sees every server the client may see.
- ``/ws/<server>``: a session pinned to one server (a malformed id is a 404).
- ``GET /metrics``: the Prometheus metrics (:mod:`resofleet.gateway.metrics`, which says
  who may read them: anyone in open mode, else an admin token in ``Authorization:
  Bearer``), OpenMetrics when the ``Accept`` header asks for it.
- ``GET /login?token=T`` (or with ``Authorization: Bearer T``, as the dashboard's page
  sends it: an address with a token lands in every access log on the way, a header does
  not): checks the token and stores it in an HttpOnly, SameSite=Strict
  cookie (``resofleet_token``) for browser pages that cannot add a query or a header;
  200 with a small page naming who is logged in, 401 when the token is refused. ``GET
  /logout`` clears the cookie. In open mode (no secret) ``/login`` answers 200 saying no
  login is needed, and sets nothing. Asked with ``Accept: application/json`` (the
  dashboard's ``fetch``), both answer JSON instead: ``{signed_in: true, sub, role,
  expires, open}``, or ``{signed_in: false, error, reason}`` with 401; ``/login`` without
  a token then says whom the cookie the browser already holds names (200 either way;
  nothing is set or audited).
- ``GET /`` and the dashboard's files (:mod:`resofleet.gateway.dashboard`: caching, gzip,
  the Content-Security-Policy and the other security headers).
- anything else: 404 naming the endpoints.

Before a WebSocket handshake is accepted (:mod:`resofleet.gateway.handshake` decides, the
:class:`~resofleet.gateway.guard.Guard` counts and audits), in this order:

1. the client's address (the peer, or ``X-Forwarded-For`` from a trusted proxy);
2. a browser ``Origin`` that is neither the same origin nor configured: 403;
3. a token that is present (Bearer header, ``?token=``, cookie) but refused (malformed,
   expired, signed with an unknown secret, revoked ...): 401 with the reason;
4. the client address already holds ``connections_per_address`` connections: 429.

Connections are counted from the TCP accept, not from the handshake: a socket that opens
and never sends its request holds its address's slot until the handshake deadline
(:data:`OPEN_TIMEOUT`) closes it, so half-open sockets cannot go around the limit. A direct
peer is counted at accept; past the limit its handshake is answered 429, past
:data:`ACCEPT_FACTOR` times the limit the TCP connection is closed at once, before a byte
is read. Behind a trusted proxy the proxy's address is not limited (it carries many
clients); each forwarded client is counted at its handshake instead.

A connection with no token at all is accepted unauthenticated when the gateway has a
secret: it must send ``auth`` within the auth timeout (see :mod:`resofleet.gateway.session`).
Every refusal is audited with outcome ``handshake_refused``.

The query string (where browsers put ``token=``) is cut off before the path is matched
and is never logged; websockets' own logger is wrapped in a redacting adapter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Final

from prometheus_client import CollectorRegistry
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from resofleet.contracts import Role, is_server_id

from .dashboard import Dashboard, Reply
from .errors import CLOSE_GOING_AWAY
from .guard import Guard, Outcome
from .handshake import (
    TokenSource,
    client_address,
    fetch_allowed,
    find_token,
    host_allowed,
    is_trusted,
    login_cookie,
    login_page,
    logout_cookie,
    message_page,
    origin_allowed,
)
from .identity import OPEN_ADMIN, Principal
from .metrics import exposition
from .redact import RedactingLogger
from .tokens import TokenError

__all__ = [
    "ACCEPT_FACTOR",
    "CLOSE_TIMEOUT",
    "Edge",
    "MAX_FRAME",
    "OPEN_TIMEOUT",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "Admission",
    "Target",
    "parse_path",
]

log = logging.getLogger(__name__)

#: Largest frame a client may send, in bytes (README, *Gateway*): a request is a few hundred
#: bytes; 64 KiB leaves room for any command and refuses floods. Over it: close 1009.
MAX_FRAME: Final = 64 * 1024
#: Seconds between keepalive pings, and seconds to wait for the pong: a peer that vanished
#: without a TCP reset (a laptop lid, a dead NAT) is dropped within 40 s.
PING_INTERVAL: Final = 20.0
PING_TIMEOUT: Final = 20.0
#: Seconds the closing handshake may take before the TCP connection is dropped. Bounds how
#: long a client cut off for slowness keeps its buffer, and how long shutdown waits on one.
CLOSE_TIMEOUT: Final = 5.0
#: Seconds a client has to complete the opening handshake (TLS included) from the TCP
#: accept: a real client needs one round trip; a silent socket holds its address's slot no
#: longer than this.
OPEN_TIMEOUT: Final = 10.0
#: Connections from one direct peer, as a multiple of ``connections_per_address``, past
#: which a new TCP connection is closed at accept: up to it an over-limit client reads a
#: 429 saying why, past it a flood of sockets costs nothing but the accept.
ACCEPT_FACTOR: Final = 2
#: Frames received and not yet handled that one connection may buffer before websockets
#: stops reading its socket (TCP backpressure on a client that floods).
MAX_QUEUE: Final = 16


@dataclass(frozen=True, slots=True)
class Target:
    """What a connection asked for in its path: everything (``pinned=None``) or one server."""

    pinned: str | None


def parse_path(path: str) -> Target | None:
    """The :class:`Target` of a request path, or ``None`` if it is not a WebSocket endpoint."""
    path = path.partition("?")[0]
    if path in ("/ws", "/ws/"):
        return Target(pinned=None)
    if path.startswith("/ws/"):
        server = path[len("/ws/") :].rstrip("/")
        if is_server_id(server):
            return Target(pinned=server)
    return None


@dataclass(frozen=True, slots=True)
class Admission:
    """What the handshake established about a connection it let through."""

    target: Target
    #: ``None``: no token yet (the session waits for ``auth``).
    principal: Principal | None
    #: The client's address (the peer, or the client behind a trusted proxy).
    client: str
    #: Where the token came from; ``None`` in open mode or without one.
    source: TokenSource | None = None


SessionHandler = Callable[[ServerConnection, Admission], Awaitable[None]]


class _Counted(ServerConnection):
    """A connection counted against its peer's address from the TCP accept to the end of
    the TCP connection (see the module docstring)."""

    #: Set on the class by each :class:`Edge` (its own subclass): the edge to report to.
    edge: Edge
    #: The peer address counted at accept; ``None``: not counted (a trusted proxy).
    counted: str | None = None
    #: Whether the peer was over its limit when this one was accepted.
    over_limit: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.edge._on_accept(self, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            if self.counted is not None:
                self.edge.guard.release(self.counted)
                self.counted = None


class Edge:
    """The listening server. ``start``, ``close`` (idempotent), ``wait_closed``."""

    def __init__(
        self,
        handler: SessionHandler,
        *,
        host: str,
        port: int,
        ready: Callable[[], str | None],
        guard: Guard,
        ssl_context: ssl.SSLContext | None = None,
        compression: bool = False,
        registries: Sequence[CollectorRegistry] = (),
    ) -> None:
        self._handler = handler
        self._registries = tuple(registries)
        self._compression = compression
        self.guard = guard
        self.host = host
        self.requested_port = port
        self._ready = ready
        self.dashboard = Dashboard.load()
        self._ssl = ssl_context
        self._server: Server | None = None
        self._port: int | None = None
        self._accepted: weakref.WeakKeyDictionary[ServerConnection, Admission] = (
            weakref.WeakKeyDictionary()
        )
        # One per counted connection: gives its slot back when the TCP connection is gone,
        # whether or not the handshake completed.
        self._releases: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port actually listened on (the real one when started with port 0)."""
        return self._port if self._port is not None else self.requested_port

    @property
    def url(self) -> str:
        scheme = "wss" if self._ssl is not None else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/ws"

    async def start(self) -> None:
        counted = type("Counted", (_Counted,), {"edge": self})
        self._server = await serve(
            self._on_connection,
            self.host,
            self.requested_port,
            process_request=self._process_request,
            max_size=MAX_FRAME,
            max_queue=MAX_QUEUE,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
            open_timeout=OPEN_TIMEOUT,
            ssl=self._ssl,
            # permessage-deflate keeps a compressor per connection (tens of KiB each) and
            # compresses every frame once per client: off by default, the fan-out's cost
            # and a connection's memory stay flat; on for clients behind thin links.
            compression="deflate" if self._compression else None,
            server_header="resofleet",
            logger=RedactingLogger(logging.getLogger("websockets.server")),
            create_connection=counted,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop accepting; close every session with 1001. Idempotent; see :meth:`wait_closed`."""
        if self._server is not None:
            self._server.close(
                close_connections=True, code=CLOSE_GOING_AWAY, reason="gateway shutting down"
            )

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()

    # -- TCP -------------------------------------------------------------------------

    def _on_accept(self, connection: _Counted, transport: asyncio.BaseTransport) -> None:
        """Count a new TCP connection against its peer, unless the peer is a trusted proxy;
        far over the limit, close it at once (audited, alike ones summed per second)."""
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        security = self.guard.security
        if not address or is_trusted(address, security.trusted_proxies):
            return
        address = client_address(address, (), security.trusted_proxies)  # as _client() says
        count = self.guard.accept(address)
        connection.counted = address
        limit = security.limits.connections_per_address
        connection.over_limit = count > limit
        if count > ACCEPT_FACTOR * limit:
            self.guard.refuse(
                Outcome.HANDSHAKE_REFUSED, client=address, reason="too many connections",
                command="accept", coalesce=(address, "accept"),
            )
            transport.abort()

    # -- HTTP ------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        if path == "/healthz":
            return _text(connection, HTTPStatus.OK, "ok")
        if path == "/readyz":
            problem = self._ready()
            if problem is None:
                return _text(connection, HTTPStatus.OK, "ready")
            return _text(connection, HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {problem}")
        security = self.guard.security
        if not host_allowed(_one(request, "Host"), open_mode=security.open, hosts=security.hosts):
            log.info("conn=- server=-: request for host %r refused", (_one(request, "Host") or "")[:100])
            return _text(
                connection,
                HTTPStatus.MISDIRECTED_REQUEST,
                "misdirected: this gateway answers to loopback host names only, and to those "
                "listed in [gateway] hosts",
            )
        if path == "/metrics":
            return self._metrics(connection, request)
        reply = self.dashboard.answer(
            path, method=request.method, host=_one(request, "Host"),
            accept_encoding=_one(request, "Accept-Encoding"),
            if_none_match=_one(request, "If-None-Match"),
            if_modified_since=_one(request, "If-Modified-Since"),
        )
        if reply is not None:  # one of the dashboard's files
            return _reply(reply)
        if path in ("/login", "/logout"):
            origins = request.headers.get_all("Origin")
            if len(origins) > 1 or not fetch_allowed(
                _one(request, "Sec-Fetch-Site"), origins[0] if origins else None,
                _one(request, "Host"), security.origins,
            ):
                log.info("conn=- server=-: %s from another site refused", path)
                return _text(
                    connection, HTTPStatus.FORBIDDEN,
                    f"forbidden: {path} may be asked for only by typing it or from this "
                    "gateway's own pages, not by another site",
                )
            if path == "/login":
                return self._login(connection, request, query)
            return self._logout(connection, request)
        target = parse_path(path)
        if target is None:
            if path.startswith("/ws/"):
                return _text(
                    connection,
                    HTTPStatus.NOT_FOUND,
                    "not a server id: ids are 1-63 lowercase letters, digits and dashes",
                )
            return _text(
                connection,
                HTTPStatus.NOT_FOUND,
                "not found: the WebSocket endpoints are /ws and /ws/<server>; "
                "health checks are /healthz and /readyz; the dashboard is /",
            )
        return self._admit(connection, request, target, query)

    def _client(self, connection: ServerConnection, request: Request) -> str:
        address = connection.remote_address
        peer = str(address[0]) if isinstance(address, tuple) and address else ""
        return client_address(
            peer,
            request.headers.get_all("X-Forwarded-For"),
            self.guard.security.trusted_proxies,
        )

    def _admit(
        self, connection: ServerConnection, request: Request, target: Target, query: str
    ) -> Response | None:
        guard = self.guard
        client = self._client(connection, request)
        principal: Principal | None = None
        source: TokenSource | None = None
        problem: TokenError | None = None
        if guard.open:
            principal = OPEN_ADMIN  # tokens are ignored
        else:
            found = find_token(
                _one(request, "Authorization"), query, request.headers.get_all("Cookie")
            )
            if found is not None:
                token, source = found
                try:
                    principal = guard.check(token)
                except TokenError as exc:
                    problem = exc

        def refuse(status: HTTPStatus, reason: str, text: str) -> Response:
            log.info(
                "conn=- server=%s: handshake from %s refused (%d): %s",
                target.pinned or "*", client, status, reason,
            )
            guard.refuse(
                Outcome.HANDSHAKE_REFUSED, client=client, reason=reason, principal=principal,
                server=target.pinned, command="handshake", coalesce=(client, "handshake", reason),
            )
            return _text(connection, status, text)

        origins = request.headers.get_all("Origin")
        if len(origins) > 1 or not origin_allowed(
            origins[0] if origins else None, _one(request, "Host"), guard.security.origins
        ):
            return refuse(
                HTTPStatus.FORBIDDEN,
                "origin",
                f"forbidden: pages from {(origins or ['?'])[0][:200]} may not connect to this "
                "gateway (same origin only, or list it in [gateway] origins)",
            )
        if problem is not None:
            return refuse(
                HTTPStatus.UNAUTHORIZED, problem.reason, f"unauthorized: {problem.message}"
            )
        counted = connection.counted if isinstance(connection, _Counted) else None
        if counted is not None:  # a direct peer, counted at accept: client is the peer
            over = connection.over_limit if isinstance(connection, _Counted) else False
        else:  # behind a trusted proxy: count the forwarded client now
            over = not guard.admit(client)
        if over:
            limit = guard.security.limits.connections_per_address
            return refuse(
                HTTPStatus.TOO_MANY_REQUESTS,
                "too many connections",
                f"too many connections: at most {limit} per client address; close some "
                "(or raise [gateway.limits] connections_per_address)",
            )
        if counted is None:
            release = asyncio.get_running_loop().create_task(
                self._release_when_closed(connection, client), name=f"release:{client}"
            )
            self._releases.add(release)
            release.add_done_callback(self._releases.discard)
        if principal is None:  # small frames until it authenticates (the session lifts it)
            connection.protocol.max_message_size = guard.security.limits.pre_auth_frame
        self._accepted[connection] = Admission(target, principal, client, source)
        return None  # go on with the WebSocket handshake

    async def _release_when_closed(self, connection: ServerConnection, client: str) -> None:
        try:
            await connection.wait_closed()
        finally:
            self.guard.release(client)

    def _metrics(self, connection: ServerConnection, request: Request) -> Response:
        """The scrape (see :mod:`resofleet.gateway.metrics` for who may read it)."""
        guard = self.guard
        if not guard.open:
            header = _one(request, "Authorization") or ""
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return _text(connection, HTTPStatus.UNAUTHORIZED,
                             "unauthorized: /metrics needs Authorization: Bearer <admin token>")
            try:
                principal = guard.check(token.strip())
            except TokenError as exc:
                client = self._client(connection, request)
                guard.refuse(
                    Outcome.HANDSHAKE_REFUSED, client=client, reason=exc.reason,
                    command="metrics", coalesce=(client, "metrics", exc.reason),
                )
                return _text(connection, HTTPStatus.UNAUTHORIZED, f"unauthorized: {exc.message}")
            if principal.role < Role.ADMIN:
                return _text(connection, HTTPStatus.FORBIDDEN,
                             "forbidden: /metrics needs an admin token")
        body, content_type = exposition(self._registries, _one(request, "Accept"))
        response = connection.respond(HTTPStatus.OK, "")
        del response.headers["Content-Type"]
        del response.headers["Content-Length"]
        response.headers["Content-Type"] = content_type
        response.headers["Content-Length"] = str(len(body))
        response.headers["Cache-Control"] = "no-store"
        return dataclasses.replace(response, body=body)

    def _login(self, connection: ServerConnection, request: Request, query: str) -> Response:
        guard = self.guard
        as_json = _wants_json(request)
        if guard.open:
            if as_json:
                return _json(HTTPStatus.OK, {"signed_in": True, "sub": OPEN_ADMIN.sub,
                                             "role": OPEN_ADMIN.role.label, "expires": None,
                                             "open": True})
            return _html(
                connection,
                HTTPStatus.OK,
                message_page(
                    "resofleet: no login needed",
                    "This gateway runs open (no secret is configured): every client is an "
                    "admin, and no cookie is set.",
                ),
            )
        client = self._client(connection, request)
        found = find_token(_one(request, "Authorization"), query, ())
        # The page asks whom its cookie names: nothing is set, a refusal is not an attempt.
        held = found is None and as_json
        if held:
            found = find_token(None, "", request.headers.get_all("Cookie"))
        try:
            if found is None:
                raise TokenError("missing", "Add the token to the address: /login?token=...")
            principal = guard.check(found[0])
        except TokenError as exc:
            if not held:
                log.info("conn=- server=-: login from %s refused: %s", client, exc.reason)
                guard.refuse(
                    Outcome.HANDSHAKE_REFUSED, client=client, reason=exc.reason, command="login",
                    coalesce=(client, "login", exc.reason),
                )
            if as_json:  # asked whom the cookie names: "nobody" is an answer, not a failure
                return _json(HTTPStatus.OK if held else HTTPStatus.UNAUTHORIZED,
                             {"signed_in": False, "error": exc.message, "reason": exc.reason})
            return _html(
                connection,
                HTTPStatus.UNAUTHORIZED,
                message_page("resofleet: login refused", exc.message),
            )
        if as_json:
            response = _json(HTTPStatus.OK, {"signed_in": True, "sub": principal.sub,
                                             "role": principal.role.label,
                                             "expires": principal.expires, "open": False})
            if held:
                return response
        else:
            response = _html(connection, HTTPStatus.OK, login_page(principal))
        log.info("conn=- server=-: %s logged in from %s (cookie)", principal.sub, client)
        response.headers["Set-Cookie"] = login_cookie(
            found[0], principal, now=time.time(), secure=self._ssl is not None
        )
        return response

    def _logout(self, connection: ServerConnection, request: Request) -> Response:
        if _wants_json(request):
            response = _json(HTTPStatus.OK, {"open": self.guard.open})
            response.headers["Set-Cookie"] = logout_cookie(secure=self._ssl is not None)
            return response
        response = _html(
            connection,
            HTTPStatus.OK,
            message_page("resofleet: logged out", "This browser no longer presents a token."),
        )
        response.headers["Set-Cookie"] = logout_cookie(secure=self._ssl is not None)
        return response

    async def _on_connection(self, connection: ServerConnection) -> None:
        admission = self._accepted.pop(connection, None)
        if admission is None:  # cannot happen: process_request ran first
            await connection.close(1011, "internal error")
            return
        await self._handler(connection, admission)


def _one(request: Request, name: str) -> str | None:
    """The first value of header ``name`` (None when absent)."""
    values = request.headers.get_all(name)
    return values[0] if values else None


def _html(connection: ServerConnection, status: HTTPStatus, page: str) -> Response:
    response = connection.respond(status, page)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    return response


def _wants_json(request: Request) -> bool:
    return "application/json" in (_one(request, "Accept") or "").lower()


def _json(status: HTTPStatus, value: dict[str, object]) -> Response:
    body = json.dumps(value).encode()
    return _reply(Reply(status, [
        ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
    ], body))


def _reply(reply: Reply) -> Response:
    """An HTTP response from a :class:`~resofleet.gateway.dashboard.Reply`."""
    status = HTTPStatus(reply.status)
    headers = Headers([("Date", formatdate(usegmt=True)), ("Connection", "close"), *reply.headers])
    return Response(status.value, status.phrase, headers, reply.body)


def _text(connection: ServerConnection, status: HTTPStatus, text: str) -> Response:
    response = connection.respond(status, text + "\n")
    response.headers["Cache-Control"] = "no-store"
    return response
