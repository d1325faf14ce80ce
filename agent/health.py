"""The agent's HTTP endpoint: ``/healthz``, ``/readyz`` and ``/metrics`` over minimal HTTP/1.1.

Off unless ``[agent] health = "HOST:PORT"``; container health checks, load balancers and
Kubernetes probes ask it, nothing else. It speaks just enough HTTP/1.1 for them, with
``asyncio.start_server`` and no dependency:

- ``GET /healthz``: 200 ``ok`` while the process serves (liveness).
- ``GET /readyz``: 200 ``ready`` when the agent can answer for every server it was given:
  its bus is connected and each server's console has answered (synchronised) since its
  headless last started; else 503 ``not ready: <reasons>``, for example
  ``not ready: bus not connected; a2 starting``.
- ``GET /metrics``: the agent's Prometheus metrics (:mod:`resofleet.agent.metrics`),
  OpenMetrics when the ``Accept`` header asks for it; only on an endpoint given them
  (``[agent] metrics = "HOST:PORT"``; the same address as ``health`` serves both), else
  404. No token: like the health checks, it listens where the operator says (loopback or a
  cluster-only address), and a scrape reads nothing but counts.
- ``HEAD`` works like ``GET`` without the body; another method is 405, another path 404,
  a request line that is not HTTP is 400. One request per connection
  (``Connection: close``), which is how every probe asks anyway.

Bounded, since it listens on a port: a request head is read up to
:data:`MAX_REQUEST_HEAD` bytes, and the answer written, within :data:`REQUEST_TIMEOUT`
seconds (a scraper that never reads is cut off), and at most
:data:`MAX_PROBES` connections are answered at once (others are closed unanswered).

The translation is pure (:func:`answer`: a request head and the readiness problems in,
response bytes out), under a thin asyncio shell (:class:`HealthServer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .service import Agent

#: What serves ``/metrics``: the ``Accept`` header in, the body and its type out.
Scrape = Callable[[str | None], tuple[bytes, str]]

__all__ = [
    "MAX_PROBES",
    "MAX_REQUEST_HEAD",
    "REQUEST_TIMEOUT",
    "HealthServer",
    "answer",
    "problems",
    "split_address",
]

log = logging.getLogger(__name__)

#: Bytes of request line and headers read at most: probes send well under 1 KiB.
MAX_REQUEST_HEAD: Final = 8192
#: Seconds a client has to send its request head: a probe sends it at once, a stalled
#: peer must not hold a slot.
REQUEST_TIMEOUT: Final = 5.0
#: Connections answered at once: one or two probes are normal; more is a flood, refused.
MAX_PROBES: Final = 32
#: ``HOST:PORT``, the host a name, an IPv4 address or a bracketed IPv6 address.
_ADDRESS: Final = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):(?P<port>[0-9]{1,5})")
#: ``METHOD TARGET HTTP/1.x`` (HTTP/1.0 probes, such as some load balancers', too).
_REQUEST_LINE: Final = re.compile(rb"(?P<method>[A-Z]{1,16}) (?P<target>/\S*) HTTP/1\.[01]")
_ACCEPT: Final = re.compile(rb"^accept:[ \t]*(?P<value>[^\r\n]*)", re.IGNORECASE | re.MULTILINE)


def split_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8001"`` -> ``("127.0.0.1", 8001)``; ``"[::1]:8001"`` -> ``("::1", 8001)``.

    Port 0 asks the system for a free port (tests). Raises ``ValueError`` with a sentence
    saying what is expected."""
    match = _ADDRESS.fullmatch(text)
    if match is None or int(match["port"]) > 65535:
        raise ValueError("must be HOST:PORT, such as 127.0.0.1:8001 or [::1]:8001 (port 0 to 65535)")
    return match["host"].strip("[]"), int(match["port"])


def problems(agent: Agent) -> list[str]:
    """Why ``agent`` is not ready, one short phrase each; empty when it is ready."""
    found = [] if agent.bus.connected else ["bus not connected"]
    for server in agent.servers.values():
        status = server.presence().status
        if status != "running":
            found.append(f"{server.id} {status}")
    return found


def answer(head: bytes, unready: Callable[[], Sequence[str]], metrics: Scrape | None = None) -> bytes:
    """The whole response to one request head (request line and headers). ``unready`` is
    asked only for ``/readyz``, and gives the readiness problems (empty: ready);
    ``metrics`` only for ``/metrics`` (``None``: not served here)."""
    match = _REQUEST_LINE.match(head.split(b"\r\n", 1)[0].rstrip(b"\n"))
    if match is None:
        return _response(HTTPStatus.BAD_REQUEST, "bad request: this is an HTTP/1.1 health endpoint")
    method = match["method"].decode("ascii")
    path = match["target"].decode("ascii", "replace").partition("?")[0]
    if path not in ("/healthz", "/readyz") and not (path == "/metrics" and metrics is not None):
        return _response(HTTPStatus.NOT_FOUND, "not found: the agent answers /healthz and /readyz")
    if method not in ("GET", "HEAD"):
        return _response(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed: use GET", allow=True)
    head_only = method == "HEAD"
    if path == "/metrics" and metrics is not None:
        accept = _ACCEPT.search(head)
        body, content_type = metrics(accept["value"].decode("latin-1") if accept else None)
        return _response(HTTPStatus.OK, body, head_only=head_only, content_type=content_type)
    if path == "/healthz":
        return _response(HTTPStatus.OK, "ok", head_only=head_only)
    reasons = list(unready())
    if not reasons:
        return _response(HTTPStatus.OK, "ready", head_only=head_only)
    return _response(
        HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {'; '.join(reasons)}", head_only=head_only
    )


def _response(
    status: HTTPStatus, text: str | bytes, *, head_only: bool = False, allow: bool = False,
    content_type: str = "text/plain; charset=utf-8",
) -> bytes:
    body = text if isinstance(text, bytes) else f"{text}\n".encode()
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if allow:
        lines.append("Allow: GET, HEAD")
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + (b"" if head_only else body)


class HealthServer:
    """The endpoint on ``host:port``, answering from ``unready`` (see :func:`answer`).

    :meth:`start` listens (``OSError`` if it cannot), :meth:`close` stops accepting and
    drops the connections being answered; both are idempotent. :attr:`port` is the port
    it listens on (the real one when asked for port 0)."""

    def __init__(
        self, unready: Callable[[], Sequence[str]], *, host: str, port: int,
        metrics: Scrape | None = None,
    ) -> None:
        self._unready = unready
        self._metrics = metrics
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._slots = MAX_PROBES
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=MAX_REQUEST_HEAD
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots <= 0:
            writer.close()  # a flood: the probes that matter come one at a time
            return
        self._slots -= 1
        self._writers.add(writer)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):  # reading and writing: a scraper
                head = await reader.readuntil(b"\r\n\r\n")  # that never reads holds no slot
                writer.write(answer(head, self._unready, self._metrics))
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a probe that hung up, stalled or sent too much gets nothing more
        except Exception:
            log.exception("health: answering a probe failed")
        finally:
            self._slots += 1
            self._writers.discard(writer)
            writer.close()
