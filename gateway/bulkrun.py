"""Running a bulk request for a session: the I/O around :mod:`resofleet.gateway.bulk`.

A ``command`` or ``container`` with ``servers`` goes through three steps:

1. :func:`start`, as the frame is read: the patterns are paid for (below), expanded and planned
   (:func:`~resofleet.gateway.bulk.plan`, pure). A request refused whole (nothing
   matches: ``unknown_server``; too many servers: ``bad_request``) is answered with one
   ``error`` and nothing runs. Plain names that matched nothing are audited as a
   ``server`` naming them is (``out_of_scope``, or a malformed id), also when nothing
   else matched.
   The rate limit: the frame paid one token; before expanding, the request pays one more
   per pattern beyond the first, and after it, what one per server beyond the first
   adds to that, at most the burst in all (:func:`~resofleet.gateway.ratelimit.bulk_cost`);
   short of them, one ``rate_limited`` error and nothing runs.
2. :func:`run`, as one of the session's in-flight requests (it holds one slot, however
   many servers it reaches): the servers the gateway refuses itself are answered first,
   without waiting (``forbidden`` per server, each audited as a refusal; ``server_offline``
   for a server whose agent stopped announcing it). The others are asked over the bus,
   at most ``bulk_concurrency`` at once (``[gateway] bulk_concurrency``, default
   :data:`~resofleet.gateway.settings.DEFAULT_BULK_CONCURRENCY`), each reply sent as it
   comes (``command_response``, ``bans_update``, ``container_response`` or ``error``,
   each with its ``server``, the request's ``id`` and its ``outcome``), exactly as for a
   one-server request.
3. Last, one ``bulk_done`` with every server's result: ``ok``, or its error's code.

Replies for a server that left the client's scope meanwhile (an in-band ``auth`` narrowed
it) are dropped, and so is that server's entry in ``bulk_done``. When the connection
closes, the requests not yet answered are cancelled, those waiting for their turn too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from resofleet.contracts import (
    BulkDone,
    BusRequest,
    Command,
    CommandOutcome,
    Container,
    RequestId,
    ServerMessage,
)

from .bulk import Plan, plan, result_of
from .errors import GatewayError, NoMatch, UnknownServer, error_for
from .identity import Principal
from .inflight import InFlight
from .ratelimit import bulk_cost
from .refusals import what_of
from .routing import Timeouts, check_server, in_scope

if TYPE_CHECKING:
    from .guard import Guard
    from .metrics import Asked
    from .registry import Registry

__all__ = ["BulkSession", "run", "start"]

log = logging.getLogger(__name__)


class BulkSession(Protocol):
    """What of a :class:`~resofleet.gateway.session.Session` a bulk request uses."""

    conn_id: str
    client: str
    pinned: str | None
    principal: Principal | None
    registry: Registry
    timeouts: Timeouts
    bulk_concurrency: int
    inflight: InFlight
    guard: Guard

    async def send(self, message: ServerMessage, *, asked: Asked | None = None) -> None: ...

    async def ask(
        self, request: BusRequest, id: RequestId | None, *, states: bool, asked: Asked
    ) -> ServerMessage | None: ...

    async def limited(
        self, id: RequestId | None, what: str | None, outcome: CommandOutcome | None = None,
        *, cost: float = 1.0, asked: Asked | None = None,
    ) -> bool: ...

    def audit_refusal(self, exc: GatewayError, message: Any) -> None: ...


async def start(
    session: BulkSession, message: Command | Container, principal: Principal, asked: Asked
) -> None:
    """Step 1 (see the module docstring): plan, refuse or charge, then hand :func:`run` to
    the session as one of its requests in flight."""
    registry = session.registry
    burst = session.guard.security.limits.command_burst
    # Patterns are paid for before they are expanded (each is matched against every
    # server in scope), as `subscribe` pays per id: a frame of 64 patterns matching
    # nothing would otherwise cost one token and milliseconds of CPU.
    upfront = bulk_cost(len(message.servers or ()), burst=burst)
    if upfront and await session.limited(
        message.id, what_of(message), CommandOutcome.NOT_EXECUTED, cost=upfront, asked=asked
    ):
        return
    try:
        planned = plan(
            message,
            known=[info.server for info in registry.snapshot()],
            online=registry.online(),
            offline=registry.offline(),
            principal=principal,
            pinned=session.pinned,
            timeouts=session.timeouts,
            client=session.client,
        )
    except GatewayError as exc:
        log.info("conn=%s: refused bulk %s: %s", session.conn_id, what_of(message), exc)
        _audit_hidden(session, exc.hidden if isinstance(exc, NoMatch) else (), message, principal)
        reply = error_for(
            exc, id=message.id, conn=session.conn_id, outcome=CommandOutcome.NOT_EXECUTED
        )
        return await session.send(reply, asked=asked)
    _audit_hidden(session, planned.hidden, message, principal)
    extra = bulk_cost(len(planned.servers), burst=burst) - upfront
    if extra > 0 and await session.limited(
        message.id, what_of(message), CommandOutcome.NOT_EXECUTED, cost=extra, asked=asked
    ):
        return
    log.info(
        "conn=%s: bulk %s on %d server(s): %s", session.conn_id, what_of(message),
        len(planned.servers), ", ".join(planned.servers),
    )
    await session.inflight.spawn(
        run(session, planned, message, asked), name=f"bulk:{session.conn_id}:{message.id}"
    )


def _audit_hidden(
    session: BulkSession, names: Iterable[str], message: Command | Container, principal: Principal
) -> None:
    """Audit the plain names that matched nothing as ``server`` naming them would be: out of
    scope, pinned elsewhere, or malformed."""
    for name in names:
        try:
            check_server(name, pinned=session.pinned, principal=principal)
        except UnknownServer as exc:
            session.audit_refusal(exc, message)


async def run(
    session: BulkSession, planned: Plan, message: Command | Container, asked: Asked
) -> None:
    """Steps 2 and 3 (see the module docstring)."""
    id = message.id
    results: dict[str, str] = {}
    for server, exc in planned.refused:  # answered at once: nothing to wait for
        session.audit_refusal(exc, message)
        reply = error_for(
            exc, id=id, server=server, conn=session.conn_id, outcome=CommandOutcome.NOT_EXECUTED
        )
        results[server] = result_of(reply)
        await session.send(reply, asked=asked)
    waiting = iter(planned.requests)

    async def worker() -> None:
        for request in waiting:  # shared: each request is taken by one worker
            try:
                reply = await session.ask(request, id, states=True, asked=asked)
            except Exception as exc:  # a bug past the bus: this server answers `internal`,
                # the others still run and `bulk_done` still comes (``ask`` itself turns
                # every bus failure into an error reply; this is only for its own bugs)
                reply = error_for(
                    exc, id=id, server=request.server, conn=session.conn_id,
                    outcome=CommandOutcome.UNKNOWN,
                )
                await session.send(reply, asked=asked)
            if reply is not None:  # None: dropped, the server left the client's scope
                results[request.server] = result_of(reply)

    workers = min(session.bulk_concurrency, len(planned.requests))
    async with asyncio.TaskGroup() as group:
        for n in range(workers):
            group.create_task(worker(), name=f"bulk:{session.conn_id}:{id}:{n}")
    principal = session.principal
    if principal is None:
        return
    shown = {
        server: results[server]
        for server in planned.servers
        if server in results and in_scope(server, pinned=session.pinned, principal=principal)
    }
    await session.send(BulkDone(results=shown, id=id))
