"""Whether a failed command ran: the gateway's one table (outcome_for) and how it fills in
an agent's reply that states no outcome (answered). Pure."""

from __future__ import annotations

import pytest

from resofleet.bus import BusUnavailable, RequestTimeout, ServerBusy, ServerOffline
from resofleet.contracts import (
    BansUpdate,
    CommandOutcome,
    CommandResponse,
    ContainerResponse,
    ContractError,
    Error,
    ErrorCode,
    Role,
)
from resofleet.gateway.errors import (
    Forbidden,
    NoServer,
    RateLimited,
    ServerGone,
    ServerLost,
    error_for,
    outcome_for,
)
from resofleet.gateway.routing import answered

NOT_RUN, UNKNOWN = CommandOutcome.NOT_EXECUTED, CommandOutcome.UNKNOWN


@pytest.mark.parametrize(
    ("exc", "handed", "expected"),
    [
        (ContractError("bad"), False, NOT_RUN),
        (Forbidden("x", needed=Role.ADMIN, held=Role.VIEWER, server="s"), False, NOT_RUN),
        (RateLimited("slow down"), False, NOT_RUN),
        (NoServer(), False, NOT_RUN),
        (ServerGone("s", 7.0), False, NOT_RUN),
        (ServerOffline("s"), True, NOT_RUN),  # returned by the bus: nobody took it
        (ServerBusy("s"), True, NOT_RUN),  # refused by the server's full queue
        (BusUnavailable("down"), False, NOT_RUN),  # the link was down before sending
        (BusUnavailable("dropped"), True, UNKNOWN),  # the link dropped after sending
        (RequestTimeout("s", 15), True, UNKNOWN),
        (ServerLost("s", "its command queue is gone"), True, UNKNOWN),
        (RuntimeError("a bug"), True, UNKNOWN),
        (RuntimeError("a bug"), False, NOT_RUN),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_outcome_for_each_failure(exc, handed, expected):
    """Refusals never ran; what was handed over and then lost may have."""
    assert outcome_for(exc, handed=handed) is expected


def test_server_lost_says_the_command_may_have_run():
    """server_lost: its own code, the server, and a sentence that says what to do."""
    error = error_for(ServerLost("eu-1", "its agent stopped"), id=4, outcome=UNKNOWN)
    assert (error.code, error.server, error.id, error.outcome) == (ErrorCode.SERVER_LOST, "eu-1", 4, UNKNOWN)
    assert "may or may not have run" in error.message and "its agent stopped" in error.message


def test_error_for_states_an_outcome_only_when_given_one():
    """Errors for reads carry no outcome."""
    assert error_for(RequestTimeout("s", 5)).outcome is None


def test_answered_fills_in_what_an_older_agent_does_not_state():
    """No outcome from the agent: a response ran, an error may have; a stated one stays;
    replies to reads and bans_update are left alone."""
    response = CommandResponse(command="users", output="", server="s")
    failed = Error(message="m", code=ErrorCode.TIMEOUT, server="s")
    stated = Error(message="m", code=ErrorCode.TIMEOUT, server="s", outcome=NOT_RUN)
    container = ContainerResponse(action="stop", server="s", status="exited")
    assert answered(response, 1, states=True) == CommandResponse(
        command="users", output="", server="s", id=1, outcome=CommandOutcome.EXECUTED
    )
    assert answered(failed, None, states=True).outcome is UNKNOWN
    assert answered(stated, 2, states=True) == Error(
        message="m", code=ErrorCode.TIMEOUT, server="s", id=2, outcome=NOT_RUN
    )
    assert answered(container, None, states=True).outcome is CommandOutcome.EXECUTED
    assert answered(failed, None, states=False) is failed
    bans = BansUpdate(bans=[], server="s")
    assert answered(bans, None, states=True) is bans
    assert response.outcome is None and response.id is None  # never mutated
