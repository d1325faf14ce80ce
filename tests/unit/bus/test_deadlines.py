"""Request deadlines: stamped by the requester's bus, honoured by the serving side, with
the clock skew counted against running late, never for it. No I/O."""

from __future__ import annotations

import msgspec
import pytest

from resofleet.bus import MAX_CLOCK_SKEW, serve_deadline, stamp
from resofleet.contracts import BusRequest, RunCommand, decode_request, encode_bus

WALL = 1.8e9  # the requester's wall clock when it sends
LOOP = 500.0  # the agent's loop clock when the request arrives


def request(timeout: float = 15.0) -> BusRequest:
    return BusRequest(server="eu-1", body=RunCommand(command="save"), timeout=timeout)


def test_a_sent_request_carries_its_absolute_deadline_once():
    """The requester's bus writes now + timeout; a request stamped already keeps its own."""
    sent = stamp(request(), now=WALL)
    assert sent.deadline == WALL + 15.0
    assert stamp(sent, now=WALL + 100).deadline == WALL + 15.0


def test_the_deadline_travels_and_older_peers_are_understood():
    """The field round trips; a request from a requester that predates it decodes with no
    deadline, and one carrying it decodes in a build that ignores unknown fields."""
    sent = stamp(request(), now=WALL)
    assert decode_request(encode_bus(sent)) == sent
    old = msgspec.msgpack.encode({"server": "eu-1", "body": {"op": "status"}, "timeout": 5, "v": 1})
    assert decode_request(old).deadline is None


def test_a_request_arriving_at_once_keeps_its_timeout_less_the_skew():
    """Clocks agreeing and no delay: the handler has the timeout less the skew."""
    deadline = serve_deadline(stamp(request(), now=WALL), arrived=LOOP, now=LOOP, wall=WALL)
    assert deadline == pytest.approx(LOOP + 15.0 - MAX_CLOCK_SKEW)


def test_a_request_the_broker_held_past_its_deadline_has_no_time_left():
    """Delivered 20 s after it was sent with a 15 s timeout: its deadline has passed on
    arrival, although the relative bound alone (arrival + 15 s) would have run it."""
    deadline = serve_deadline(stamp(request(), now=WALL), arrived=LOOP, now=LOOP, wall=WALL + 20)
    assert deadline < LOOP


@pytest.mark.parametrize("agent_behind", [0.0, 0.5, MAX_CLOCK_SKEW])
def test_an_agent_clock_behind_by_up_to_the_skew_never_starts_late(agent_behind):
    """However late within the timeout the request arrives, the agent's deadline, read on
    the gateway's clock, falls before the gateway's: nothing starts after `timeout`."""
    gateway_deadline = WALL + 15.0
    for delay in (0.0, 5.0, 12.9, 14.9):
        arrived_gateway_wall = WALL + delay
        agent_wall = arrived_gateway_wall - agent_behind
        deadline = serve_deadline(stamp(request(), now=WALL), arrived=LOOP, now=LOOP, wall=agent_wall)
        last_start_gateway_wall = arrived_gateway_wall + (deadline - LOOP)
        assert last_start_gateway_wall <= gateway_deadline + 1e-9


def test_the_relative_bound_still_applies_and_older_requests_use_it_alone():
    """A request queued at the agent is bounded by its arrival plus its timeout too; one
    without a deadline by that alone."""
    ahead = serve_deadline(stamp(request(), now=WALL), arrived=LOOP, now=LOOP, wall=WALL - 100)
    assert ahead == LOOP + 15.0
    assert serve_deadline(request(), arrived=LOOP, now=LOOP + 3, wall=WALL + 50) == LOOP + 15.0


def test_the_skew_never_takes_more_than_half_of_a_short_timeout():
    deadline = serve_deadline(stamp(request(timeout=1.0), now=WALL), arrived=LOOP, now=LOOP, wall=WALL)
    assert deadline == pytest.approx(LOOP + 0.5)
