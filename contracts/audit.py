"""The audit record, and the sink the agent and the gateway write records to.

Both services record what they did or refused (the agent every command and container action
it ran, the gateway every attempt it refused) through an :class:`AuditSink`. They never
open files themselves: whoever wires a service together (the command line) gives it a sink,
usually the JSON-lines writer of :mod:`resofleet.audit`, or none at all.

Every record has the keys of :data:`RECORD_KEYS` in that order, then extras (``reason``,
``detail``, ``world``, ``conn``, ...). Values are JSON scalars (:data:`AuditValue`).
"""

from __future__ import annotations

from typing import Final, Protocol

__all__ = ["AuditSink", "AuditValue", "RECORD_KEYS"]

#: The fixed keys of every audit record, in the order they are written.
RECORD_KEYS: Final = (
    "time", "source", "who", "role", "client", "server", "command", "outcome", "duration",
)

AuditValue = str | int | float | bool | None


class AuditSink(Protocol):
    """Takes audit records. :meth:`record` is called on hot paths (every refused frame of a
    flood): an implementation must neither block nor raise."""

    def record(
        self,
        *,
        who: str,
        role: str,
        client: str,
        server: str | None,
        command: str | None,
        outcome: str,
        duration: float | None = None,
        **extra: AuditValue,
    ) -> None: ...
