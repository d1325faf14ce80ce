"""The gateway's security state at run time: tokens, revocations, connection counts, and
the audit record of every refused attempt.

One :class:`Guard` per gateway, shared by the edge (handshakes) and the sessions
(``auth`` messages, refused requests). What it holds is bounded: revocations by
:data:`~resofleet.gateway.tokens.MAX_REVOCATIONS`, connection counts by the open connections
themselves (an address leaves the table with its last connection).

Revocations come from two places. ``[gateway] revoked`` (kept for good) and the bus
(``resofleet token revoke`` broadcasts a :class:`~resofleet.contracts.Revoke`; kept until the token
it names has expired). A gateway started after a revocation learns it by gossip: whenever
a gateway starts it broadcasts ``discover``, and every running gateway answers by
re-broadcasting the bus revocations it still holds (at most :data:`GOSSIP_LIMIT`, those
expiring last). With no gateway running at all, a bus revocation is forgotten: list the id
in ``[gateway] revoked`` (or rotate the secret) to make it permanent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Final

from resofleet.contracts import Revoke

from .handshake import MAX_TOKEN
from .identity import OPEN_ADMIN, Principal
from .metrics import GatewayMetrics
from .security import Security
from .tokens import Revocations, TokenError

if TYPE_CHECKING:
    from resofleet.contracts import AuditSink

__all__ = [
    "GOSSIP_LIMIT",
    "Guard",
    "Outcome",
    "UNAUTHENTICATED_DETAIL",
    "UNAUTHENTICATED_ECHO",
    "UNKNOWN_WHO",
]

log = logging.getLogger(__name__)

#: Bus revocations a gateway re-broadcasts when another gateway starts. Each is one small
#: presence message to every gateway and agent; a thousand covers any sane rate of
#: revocations within a token lifetime, and bounds the burst a restart causes.
GOSSIP_LIMIT: Final = 1000
#: ``who`` in an audit record when the client presented no valid token.
UNKNOWN_WHO: Final = "-"
#: Seconds over which alike refusals (a caller's ``coalesce`` key: one connection's
#: rate-limited requests, one address's refused handshakes for one reason) share one audit
#: record after the first: a client flooding at thousands per second would otherwise
#: rotate every other record out of the audit log within a minute.
AUDIT_WINDOW: Final = 1.0
#: Characters kept of what a client that presented no token sent (a command, a type),
#: in its audit records: enough to recognise a probe, too few to fill the log with it.
UNAUTHENTICATED_ECHO: Final = 64
#: Characters kept of the sentence such a client read (it may quote what it sent).
UNAUTHENTICATED_DETAIL: Final = 256
#: Kinds of refusals held back at once; beyond it (a flood from very many addresses or
#: connections) each is recorded on its own, never dropped.
MAX_HELD: Final = 10_000


class Outcome:
    """The ``outcome`` of the gateway's audit records (each a refused attempt)."""

    HANDSHAKE_REFUSED: Final = "handshake_refused"
    UNAUTHENTICATED: Final = "unauthenticated"
    FORBIDDEN: Final = "forbidden"
    OUT_OF_SCOPE: Final = "out_of_scope"
    RATE_LIMITED: Final = "rate_limited"
    REJECTED_INPUT: Final = "rejected_input"


class Guard:
    """See the module docstring."""

    def __init__(
        self,
        security: Security,
        *,
        audit: AuditSink | None = None,
        tls: bool = False,
        wall: Callable[[], float] = time.time,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.security = security
        #: Where refusals and revocations are counted (the sessions count there too).
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self.audit = audit
        self.tls = tls
        self._wall = wall
        self.revocations = Revocations()
        for jti in security.revoked:
            self.revocations.add(jti, math.inf, now=wall())
        self._connections: dict[str, int] = {}
        #: Refused attempts since start, by outcome (for tests and, later, /metrics).
        self.refused: dict[str, int] = {}
        #: Alike refusals held back in their window: key -> the first held one's record
        #: fields and how many there are (0: the window is open, nothing held yet).
        self._held: dict[tuple[str, Hashable], tuple[dict[str, Any], int]] = {}

    @property
    def open(self) -> bool:
        return self.security.keyring is None

    # -- tokens ----------------------------------------------------------------------

    def check(self, token: str) -> Principal:
        """The principal of ``token``, or :class:`TokenError`; open mode: the open admin."""
        keyring = self.security.keyring
        if keyring is None:
            return OPEN_ADMIN
        if len(token) > MAX_TOKEN:
            raise TokenError("malformed", "The token is too long to be a resofleet token.")
        principal = keyring.verify(token)
        if self.revocations.revoked(principal.jti, now=self._wall()):
            raise TokenError("revoked", "The token has been revoked: ask for a new one.")
        return principal

    def revoke(self, jti: str, until: float) -> bool:
        """Refuse ``jti`` until ``until``; True if that is news."""
        news = self.revocations.add(jti, until, now=self._wall())
        if news:
            self.metrics.revocations.inc()
        return news

    def is_revoked(self, jti: str | None) -> bool:
        return self.revocations.revoked(jti, now=self._wall())

    def gossip(self) -> list[Revoke]:
        """The bus revocations to repeat for a gateway that just started (see above)."""
        now = self._wall()
        held = [(u, j) for j, u in self.revocations.items() if now < u < math.inf]
        held.sort(reverse=True)
        return [Revoke(jti=j, until=u) for u, j in held[:GOSSIP_LIMIT]]

    # -- connections per address -----------------------------------------------------

    def accept(self, address: str) -> int:
        """Count one more TCP connection from ``address`` (a direct peer, at accept, before
        its handshake), whatever the limit; how many it holds now, this one included. The
        caller refuses one over the limit (429 at its handshake, or at once far over)."""
        count = self._connections.get(address, 0) + 1
        self._connections[address] = count
        return count

    def connections(self, address: str) -> int:
        """Connections ``address`` holds (counted from accept, or from the handshake behind
        a trusted proxy)."""
        return self._connections.get(address, 0)

    def admit(self, address: str) -> bool:
        """Count one more connection from ``address``, unless it holds the limit already."""
        count = self._connections.get(address, 0)
        if count >= self.security.limits.connections_per_address:
            return False
        self._connections[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._connections.get(address, 0) - 1
        if count > 0:
            self._connections[address] = count
        else:
            self._connections.pop(address, None)

    # -- audit -----------------------------------------------------------------------

    def refuse(
        self,
        outcome: str,
        *,
        client: str,
        reason: str,
        principal: Principal | None = None,
        server: str | None = None,
        command: str | None = None,
        conn: str = "-",
        detail: str | None = None,
        coalesce: Hashable | None = None,
    ) -> None:
        """Count and audit one refused attempt. Never raises, never blocks.

        ``reason``: a short word or phrase (a token's refusal reason, ``origin``,
        ``bad_request`` ...); ``detail``: the sentence the client read, when it says more.
        ``coalesce``: a key naming alike refusals; the first one opens an
        :data:`AUDIT_WINDOW` and is recorded, the others within it are summed into one
        record (``refusals``: how many, with the first of them's fields) when it ends.
        """
        self.refused[outcome] = self.refused.get(outcome, 0) + 1
        self.metrics.refused(outcome)
        fields: dict[str, Any] = {
            "outcome": outcome, "client": client, "reason": reason, "principal": principal,
            "server": server, "command": command, "conn": conn, "detail": detail,
        }
        if coalesce is not None:
            key = (outcome, coalesce)
            held = self._held.get(key)
            if held is not None:
                first, count = held
                self._held[key] = (first if count else fields, count + 1)
                return
            if len(self._held) < MAX_HELD:
                try:
                    asyncio.get_running_loop().call_later(AUDIT_WINDOW, self._release, key)
                    self._held[key] = (fields, 0)
                except RuntimeError:  # no running loop: nothing can be held back
                    pass
        self._record(**fields)

    def refuse_unauthenticated(
        self,
        outcome: str,
        *,
        client: str,
        reason: str,
        server: str | None = None,
        command: str | None = None,
        conn: str = "-",
        detail: str | None = None,
    ) -> None:
        """:meth:`refuse` for a connection without a principal: anyone can make these, so
        alike ones share a record per client address (not per connection: reconnecting
        does not open a new window), and only a prefix of what was sent is kept."""
        self.refuse(
            outcome, client=client, reason=reason, server=server,
            command=None if command is None else command[:UNAUTHENTICATED_ECHO],
            conn=conn, detail=None if detail is None else detail[:UNAUTHENTICATED_DETAIL],
            coalesce=("unauthenticated", client, reason),
        )

    def _release(self, key: tuple[str, Hashable]) -> None:
        """End a window: write the summary of what it held, if anything."""
        fields, count = self._held.pop(key, ({}, 0))
        if count:
            self._record(**fields, refusals=count)

    def flush_held(self) -> None:
        """Write every held-back summary now (at shutdown)."""
        for key in list(self._held):
            self._release(key)

    def _record(
        self,
        *,
        outcome: str,
        client: str,
        reason: str,
        principal: Principal | None,
        server: str | None,
        command: str | None,
        conn: str,
        detail: str | None,
        refusals: int = 1,
    ) -> None:
        if self.audit is None:
            return
        self.audit.record(
            who=principal.sub if principal is not None else UNKNOWN_WHO,
            role=principal.role.label if principal is not None else "",
            client=client,
            server=server,
            command=command,
            outcome=outcome,
            reason=reason,
            conn=conn,
            **({"detail": detail} if detail is not None else {}),
            **({"refusals": refusals} if refusals != 1 else {}),
        )
