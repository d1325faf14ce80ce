"""The HTTP/WebSocket edge: one websockets asyncio server, its HTTP routes and paths.

Routes (answered in ``process_request``, before any WebSocket handshake):

- ``GET /healthz``: 200 while the process serves (liveness).
- ``GET /readyz``: 200 when the gateway can answer requests (its bus is connected and the
  registry and fan-out run), else 503 with the reason (readiness: a load balancer stops
  sending clients here).
- ``/ws``: a WebSocket session that sees every server the client may see.
- ``/ws/<server>``: a session pinned to one server (a malformed id is a 404).
- anything else: 404 naming the endpoints.

The query string (where browsers will put ``token=``) is cut off before the path is
matched and is never logged.
"""

from __future__ import annotations

import logging
import ssl
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from contracts import is_server_id

from .errors import CLOSE_GOING_AWAY
from .identity import Principal, authenticate

__all__ = [
    "CLOSE_TIMEOUT",
    "Edge",
    "MAX_FRAME",
    "OPEN_TIMEOUT",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "Target",
    "parse_path",
]

log = logging.getLogger(__name__)

#: Largest frame a client may send, in bytes (DESIGN.md): a request is a few hundred
#: bytes; 64 KiB leaves room for any command and refuses floods. Over it: close 1009.
MAX_FRAME: Final = 64 * 1024
#: Seconds between keepalive pings, and seconds to wait for the pong: a peer that vanished
#: without a TCP reset (a laptop lid, a dead NAT) is dropped within 40 s.
PING_INTERVAL: Final = 20.0
PING_TIMEOUT: Final = 20.0
#: Seconds the closing handshake may take before the TCP connection is dropped. Bounds how
#: long a client cut off for slowness keeps its buffer, and how long shutdown waits on one.
CLOSE_TIMEOUT: Final = 5.0
#: Seconds a client has to complete the opening handshake.
OPEN_TIMEOUT: Final = 10.0
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


SessionHandler = Callable[[ServerConnection, Target, Principal], Awaitable[None]]


class Edge:
    """The listening server. ``start``, ``close`` (idempotent), ``wait_closed``."""

    def __init__(
        self,
        handler: SessionHandler,
        *,
        host: str,
        port: int,
        ready: Callable[[], str | None],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._handler = handler
        self.host = host
        self.requested_port = port
        self._ready = ready
        self._ssl = ssl_context
        self._server: Server | None = None
        self._port: int | None = None
        self._accepted: weakref.WeakKeyDictionary[ServerConnection, tuple[Target, Principal]] = (
            weakref.WeakKeyDictionary()
        )

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
            server_header="resofleet",
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
                "health checks are /healthz and /readyz",
            )
        principal = authenticate(request.headers, query)
        self._accepted[connection] = (target, principal)
        return None  # go on with the WebSocket handshake

    async def _on_connection(self, connection: ServerConnection) -> None:
        accepted = self._accepted.pop(connection, None)
        if accepted is None:  # cannot happen: process_request ran first
            await connection.close(1011, "internal error")
            return
        await self._handler(connection, *accepted)


def _text(connection: ServerConnection, status: HTTPStatus, text: str) -> Response:
    response = connection.respond(status, text + "\n")
    response.headers["Cache-Control"] = "no-store"
    return response
