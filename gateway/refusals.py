"""What a refused or rejected request is, for its audit record and its ``outcome``: pure.

The session refuses frames before they reach a server (bad input, rate limits, routing's
refusals); these functions name what each asked for (the command text, else its type) and
say whether the refusal states an ``outcome`` (only requests that run something do).
"""

from __future__ import annotations

from typing import Final

from resofleet.contracts import ClientMessage, Command, CommandOutcome, Container, ContractError

from .errors import ScopeRefusal
from .guard import Outcome
from .routing import states_outcome

__all__ = ["SCOPE_AUDIT", "not_run", "refused_outcome", "refused_what", "what_of"]

#: How each reason routing gives for ``unknown_server`` is audited: the outcome and the
#: reason an operator reads (the client reads ``unknown_server`` for all three).
SCOPE_AUDIT: Final = {
    ScopeRefusal.MALFORMED: (Outcome.REJECTED_INPUT, "malformed server id"),
    ScopeRefusal.OUT_OF_SCOPE: (Outcome.OUT_OF_SCOPE, "outside the token's servers"),
    ScopeRefusal.PINNED_ELSEWHERE: (Outcome.OUT_OF_SCOPE, "pinned to another server"),
}


def what_of(message: ClientMessage) -> str:
    """What a request asked for, as the audit log names it: the command text, else the type."""
    if isinstance(message, Command):
        return message.command
    if isinstance(message, Container):
        return f"container {message.action}"
    return str(message.__struct_config__.tag)


#: Request ``type`` values whose errors state an outcome, as a refused frame names them.
_STATING_TAGS: Final = frozenset({"command", "container"})


def refused_outcome(exc: ContractError) -> CommandOutcome | None:
    """``not_executed`` for a refused frame that asked to run something, else nothing."""
    return CommandOutcome.NOT_EXECUTED if exc.request_type in _STATING_TAGS else None


def not_run(message: ClientMessage) -> CommandOutcome | None:
    """``not_executed`` for a request that states outcomes and was refused before the bus."""
    return CommandOutcome.NOT_EXECUTED if states_outcome(message) else None


def refused_what(exc: ContractError) -> str | None:
    """What a rejected frame asked for, as far as the decoder could read it: the command
    text, else the type."""
    return exc.command if exc.command is not None else exc.request_type
