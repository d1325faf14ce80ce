"""What the agent writes to its audit log: each command a client sent, each container action.

The agent serves each server through :func:`audited`, which times the request and records
it once answered: ``who``/``role``/``client`` from the :class:`~resofleet.contracts.BusRequest` (the
gateway fills them from the token and the connection), the console command text (or
``container <action>``), and the outcome: ``ok`` or the error code the agent answered with.
A request whose deadline passed before the console got to it is answered ``timeout`` and
recorded like any other refusal, since an operator wants to know what did not run.

Reads (status, worlds, output) are not recorded: they change nothing, and a dashboard asks
for them every few seconds. Nor is the agent's own polling, which never passes through the
bus handler.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from resofleet.contracts import BusReply, BusRequest, ContainerRequest, ContainerResponse, Error, RunCommand

if TYPE_CHECKING:
    from resofleet.bus import Handler
    from resofleet.contracts import AuditSink

__all__ = ["audited", "describe", "outcome_of"]

#: Outcome recorded for a request interrupted by the agent shutting down: it may have run
#: in part, and nobody got an answer.
CANCELLED = "cancelled"
#: Outcome recorded when the handler itself failed (the bus answers ``internal``).
INTERNAL = "internal"


def describe(request: BusRequest) -> tuple[str, dict[str, str | int]] | None:
    """The audited ``command`` text and extras for ``request``; ``None``: not audited."""
    match request.body:
        case RunCommand(command=command, world=world):
            return command, ({} if world is None else {"world": world})
        case ContainerRequest(action=action):
            return f"container {action}", {}
    return None


def outcome_of(reply: BusReply) -> tuple[str, dict[str, str]]:
    """``ok`` or the error code answered, with extras: ``detail``, the sentence the client
    read (as the gateway records it); ``status``, a container's state after its action."""
    body = reply.body
    if isinstance(body, Error):
        return str(body.code), {"detail": body.message}
    if isinstance(body, ContainerResponse):
        return "ok", {"status": body.status}
    return "ok", {}


def audited(handler: Handler, audit: AuditSink | None) -> Handler:
    """``handler`` recording each client command and container action in ``audit``;
    ``handler`` itself when there is no audit log."""
    if audit is None:
        return handler

    async def handle(request: BusRequest, deadline: float) -> BusReply:
        what = describe(request)
        if what is None:
            return await handler(request, deadline)
        command, extras = what
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome, more = INTERNAL, {}
        try:
            reply = await handler(request, deadline)
            outcome, more = outcome_of(reply)
            return reply
        except asyncio.CancelledError:
            outcome = CANCELLED
            raise
        finally:
            audit.record(
                who=request.sub,
                role=request.role,
                client=request.client,
                server=request.server,
                command=command,
                outcome=outcome,
                duration=loop.time() - started,
                **extras,
                **more,
            )

    return handle
