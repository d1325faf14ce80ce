"""Bulk requests without I/O: decoding `servers`, expanding patterns, planning, results."""

from __future__ import annotations

import asyncio
import json

import pytest

from resofleet.contracts import (
    BulkDone,
    BusRequest,
    Command,
    CommandResponse,
    Container,
    ContainerRequest,
    ContractError,
    Error,
    ErrorCode,
    Role,
    RunCommand,
    decode_client,
    encode_server,
)
from resofleet.contracts.client import MAX_BULK_PATTERNS, MAX_BULK_SERVERS
from resofleet.gateway import bulkrun
from resofleet.gateway.bulk import OK, expand, plan, result_of
from resofleet.gateway.errors import Forbidden, NoMatch, ServerGone, TooManyServers, error_for
from resofleet.gateway.identity import OPEN_ADMIN, Principal
from resofleet.gateway.ratelimit import TokenBucket, bulk_cost
from resofleet.gateway.routing import CONTAINER_TIMEOUT, LONG_COMMAND_TIMEOUTS, Timeouts

FLEET = ["eu-1", "eu-2", "eu-10", "us-1", "us-2", "lab"]
EU_OPERATOR = Principal(sub="eve", role=Role.OPERATOR, servers=("eu-*",))
VIEWER = Principal(sub="vic", role=Role.VIEWER)


def decoded(frame: dict) -> object:
    return decode_client(json.dumps(frame))


def refusal(frame: dict) -> ContractError:
    with pytest.raises(ContractError) as caught:
        decoded(frame)
    return caught.value


# -- decoding -------------------------------------------------------------------------


def test_servers_decode_on_command_and_container():
    """`servers` is an optional list of patterns on command and container."""
    assert decoded({"type": "command", "command": "save", "servers": ["eu-*", "lab"], "id": 7}) == Command(
        command="save", servers=["eu-*", "lab"], id=7
    )
    assert decoded({"type": "container", "action": "restart", "servers": ["*"]}) == Container(
        action="restart", servers=["*"]
    )


def test_a_request_without_servers_is_the_seeds():
    """Without `servers` nothing changes: not a bulk request, nothing added to the JSON."""
    message = decoded({"type": "command", "command": "users"})
    assert message == Command(command="users") and message.servers is None


@pytest.mark.parametrize("kind", [{"type": "command", "command": "save"}, {"type": "container", "action": "stop"}])
def test_server_and_servers_together_are_bad_request(kind):
    """`server` and `servers` are exclusive: both is bad_request with the id, nothing runs."""
    exc = refusal({**kind, "server": "eu-1", "servers": ["eu-*"], "id": "b1"})
    assert (exc.code, exc.id, exc.request_type) == (ErrorCode.BAD_REQUEST, "b1", kind["type"])
    assert "either `server`" in exc.message


def test_an_empty_servers_list_is_bad_request():
    """`servers: []` names no server: bad_request saying what to give."""
    exc = refusal({"type": "command", "command": "save", "servers": [], "id": 2})
    assert exc.code is ErrorCode.BAD_REQUEST and exc.id == 2 and "empty" in exc.message


@pytest.mark.parametrize("pattern", ["EU-*", "eu 1", "eu/1", "", "a" * 65, "eu-1\n"])
def test_a_malformed_pattern_is_bad_request_naming_it(pattern):
    """Patterns use the server-id characters and * ? [ ] !; anything else is named."""
    exc = refusal({"type": "command", "command": "save", "servers": ["eu-*", pattern], "id": 3})
    assert exc.code is ErrorCode.BAD_REQUEST and exc.id == 3
    assert repr(pattern[:80]) in exc.message


def test_more_patterns_than_the_bound_is_bad_request():
    """At most MAX_BULK_PATTERNS patterns per request."""
    ok = [f"s{i}" for i in range(MAX_BULK_PATTERNS)]
    assert decoded({"type": "command", "command": "save", "servers": ok}).servers == ok
    exc = refusal({"type": "command", "command": "save", "servers": [*ok, "one-more"], "id": 4})
    assert exc.code is ErrorCode.BAD_REQUEST and exc.id == 4 and "servers" in exc.message


def test_bulk_done_shape():
    """bulk_done carries the id and one result per server."""
    done = BulkDone(results={"eu-1": "ok", "eu-2": "server_offline"}, id=7)
    assert json.loads(encode_server(done)) == {
        "type": "bulk_done", "results": {"eu-1": "ok", "eu-2": "server_offline"}, "id": 7,
    }


# -- expansion ------------------------------------------------------------------------


def test_globs_match_the_servers_the_client_may_see_each_once_sorted():
    """A glob matches known servers in scope; overlapping patterns give each server once."""
    servers, hidden = expand(["eu-*", "*-1", "eu-?"], known=FLEET, pinned=None, principal=OPEN_ADMIN)
    assert servers == ["eu-1", "eu-10", "eu-2", "us-1"] and hidden == []
    servers, _ = expand(["*"], known=FLEET, pinned=None, principal=EU_OPERATOR)
    assert servers == ["eu-1", "eu-10", "eu-2"]
    servers, _ = expand(["eu-[!1]", "[l]ab"], known=FLEET, pinned=None, principal=OPEN_ADMIN)
    assert servers == ["eu-2", "lab"]


def test_a_plain_name_in_scope_is_taken_known_or_not():
    """A name without glob characters goes to the bus as `server` would (offline there)."""
    servers, hidden = expand(["eu-1", "eu-9"], known=FLEET, pinned=None, principal=EU_OPERATOR)
    assert servers == ["eu-1", "eu-9"] and hidden == []


def test_a_plain_name_outside_the_scope_matches_nothing_and_is_reported_hidden():
    """Outside the scope a name is as one that does not exist; the session audits it."""
    servers, hidden = expand(["eu-1", "us-1"], known=FLEET, pinned=None, principal=EU_OPERATOR)
    assert servers == ["eu-1"] and hidden == ["us-1"]


def test_patterns_matching_nothing_read_alike_whether_out_of_scope_or_absent():
    """Nothing matched is NoMatch (unknown_server), worded only from what was sent."""
    with pytest.raises(NoMatch) as out_of_scope:
        expand(["us-*"], known=FLEET, pinned=None, principal=EU_OPERATOR)
    with pytest.raises(NoMatch) as absent:
        expand(["us-*"], known=["eu-1"], pinned=None, principal=EU_OPERATOR)
    assert out_of_scope.value.message == absent.value.message
    assert error_for(out_of_scope.value, id=1).code is ErrorCode.UNKNOWN_SERVER
    with pytest.raises(NoMatch) as named:
        expand(["us-1"], known=FLEET, pinned=None, principal=EU_OPERATOR)
    assert named.value.hidden == ("us-1",) and out_of_scope.value.hidden == ()


def test_a_pinned_connection_reaches_its_server_only():
    """On /ws/<id> only the pinned server is in scope."""
    servers, hidden = expand(["*", "eu-2"], known=FLEET, pinned="eu-1", principal=OPEN_ADMIN)
    assert servers == ["eu-1"] and hidden == ["eu-2"]


def test_more_servers_than_the_bound_is_refused_whole():
    """Past MAX_BULK_SERVERS matched servers: TooManyServers (bad_request), nothing planned."""
    known = [f"s{i}" for i in range(MAX_BULK_SERVERS + 1)]
    assert len(expand(["s*"], known=known[:-1], pinned=None, principal=OPEN_ADMIN)[0]) == MAX_BULK_SERVERS
    with pytest.raises(TooManyServers) as caught:
        expand(["s*"], known=known, pinned=None, principal=OPEN_ADMIN)
    assert error_for(caught.value).code is ErrorCode.BAD_REQUEST
    assert f"{MAX_BULK_SERVERS + 1} servers" in caught.value.message


# -- plan -----------------------------------------------------------------------------


def test_plan_routes_each_server_as_a_one_server_request():
    """Each matched server gets the request routed alone: its timeout, its world, who."""
    message = Command(command="save", servers=["eu-*"], world=1, id=7)
    planned = plan(message, known=FLEET, online=FLEET, principal=EU_OPERATOR, client="10.0.0.1")
    assert planned.servers == ("eu-1", "eu-10", "eu-2") and planned.refused == ()
    assert [r.server for r in planned.requests] == list(planned.servers)
    first = planned.requests[0]
    assert isinstance(first, BusRequest) and first.body == RunCommand(command="save", world=1)
    assert (first.sub, first.role, first.client) == ("eve", "operator", "10.0.0.1")
    assert first.timeout == LONG_COMMAND_TIMEOUTS["save"]
    container = plan(Container(action="restart", servers=["lab"]), known=FLEET, online=FLEET, principal=OPEN_ADMIN)
    assert container.requests[0].body == ContainerRequest(action="restart")
    assert container.requests[0].timeout == Timeouts().container == CONTAINER_TIMEOUT


def test_the_role_is_checked_per_server():
    """A viewer's `save` is forbidden on every matched server, each refusal naming it."""
    planned = plan(Command(command="save", servers=["us-*"]), known=FLEET, online=FLEET, principal=VIEWER)
    assert planned.requests == ()
    assert [(s, type(e), e.server) for s, e in planned.refused] == [
        ("us-1", Forbidden, "us-1"), ("us-2", Forbidden, "us-2"),
    ]
    allowed = plan(Command(command="users", servers=["us-*"]), known=FLEET, online=FLEET, principal=VIEWER)
    assert len(allowed.requests) == 2 and allowed.refused == ()


def test_a_server_gone_offline_is_refused_at_once_and_the_rest_planned():
    """A server whose agent stopped announcing it is answered offline without the bus."""
    planned = plan(
        Command(command="save", servers=["eu-*"]), known=FLEET, online=["eu-1", "eu-10"],
        offline={"eu-2": 7.0}, principal=OPEN_ADMIN,
    )
    assert [r.server for r in planned.requests] == ["eu-1", "eu-10"]
    [(server, exc)] = planned.refused
    assert server == "eu-2" and isinstance(exc, ServerGone)
    assert error_for(exc).code is ErrorCode.SERVER_OFFLINE


def test_results_are_ok_or_the_error_code():
    assert result_of(CommandResponse(command="save", output="", server="eu-1")) == OK
    assert result_of(Error(message="x", code=ErrorCode.TIMEOUT, server="eu-1")) == "timeout"


def test_a_bulk_request_costs_a_token_per_server_reached_at_most_the_burst():
    """The frame paid one; the rest is one per further server, the whole capped at the
    burst so that the largest bulk request passes once the bucket is full."""
    assert (bulk_cost(1, burst=50), bulk_cost(10, burst=50), bulk_cost(256, burst=50)) == (0.0, 9.0, 49.0)
    now = [0.0]
    bucket = TokenBucket(20.0, 50, clock=lambda: now[0])
    assert bucket.take(1.0) == 0.0 and bucket.take(bulk_cost(10, burst=50)) == 0.0
    assert bucket.take(bulk_cost(42, burst=50)) == pytest.approx(1 / 20.0)  # 41 of the 40 left: wait
    now[0] = 10.0  # full again
    assert bucket.take(1.0) == 0.0 and bucket.take(bulk_cost(MAX_BULK_SERVERS, burst=50)) == 0.0


# -- running a plan (no sockets: a session stand-in records what it is asked) -----------


class Recorder:
    """The parts of a session :func:`bulkrun.run` uses; `ask` waits until released."""

    conn_id, client, pinned, registry, timeouts, inflight, guard = "c1", "", None, None, Timeouts(), None, None

    def __init__(self, principal: Principal, concurrency: int) -> None:
        self.principal = principal
        self.bulk_concurrency = concurrency
        self.sent: list[object] = []
        self.running = 0
        self.most = 0
        self.gate = asyncio.Event()
        self.audited: list[str | None] = []

    async def send(self, message, *, asked=None) -> None:
        self.sent.append(message)

    async def ask(self, request, id, *, states, asked):
        self.running += 1
        self.most = max(self.most, self.running)
        await self.gate.wait()
        self.running -= 1
        if request.server == "eu-3":
            reply = Error(message="gone", code=ErrorCode.SERVER_LOST, server="eu-3", id=id)
        else:
            reply = CommandResponse(command="save", output="saved", server=request.server, id=id)
        self.sent.append(reply)
        return reply

    def audit_refusal(self, exc, message) -> None:
        self.audited.append(getattr(exc, "server", None))


async def test_run_keeps_at_most_the_concurrency_in_flight_and_ends_with_bulk_done():
    """Refusals first, at most N asked at once, then bulk_done with every result."""
    known = [f"eu-{i}" for i in range(1, 8)]
    planned = plan(Command(command="save", servers=["eu-*"], id=9), known=known, online=known[:-1],
                   offline={"eu-7": 9.0}, principal=OPEN_ADMIN)
    session = Recorder(OPEN_ADMIN, concurrency=2)
    task = asyncio.create_task(bulkrun.run(session, planned, Command(command="save", servers=["eu-*"], id=9), ("command", 0.0)))
    async with asyncio.timeout(5):
        while session.running < 2:
            await asyncio.sleep(0)
    offline = session.sent[0]
    assert isinstance(offline, Error) and (offline.server, offline.code, offline.id) == ("eu-7", ErrorCode.SERVER_OFFLINE, 9)
    assert offline.outcome == "not_executed"
    session.gate.set()
    await asyncio.wait_for(task, 5)
    assert session.most == 2
    done = session.sent[-1]
    assert isinstance(done, BulkDone) and done.id == 9
    assert done.results == {**{f"eu-{i}": "ok" for i in (1, 2, 4, 5, 6)}, "eu-3": "server_lost", "eu-7": "server_offline"}
    assert list(done.results) == sorted(done.results)


async def test_run_leaves_out_of_bulk_done_what_left_the_scope():
    """A server out of scope by the end (an auth narrowed it) has no entry in bulk_done."""
    planned = plan(Command(command="save", servers=["*"]), known=["eu-1", "us-1"], online=["eu-1", "us-1"],
                   principal=OPEN_ADMIN)
    session = Recorder(OPEN_ADMIN, concurrency=16)
    session.gate.set()
    session.principal = EU_OPERATOR
    await bulkrun.run(session, planned, Command(command="save", servers=["*"]), ("command", 0.0))
    assert session.sent[-1] == BulkDone(results={"eu-1": "ok"})


async def test_a_failure_past_the_bus_for_one_server_still_ends_with_bulk_done():
    """A bug while asking one server answers it `internal` (outcome unknown); the other
    servers are still asked and bulk_done still comes, so a client never waits it out."""

    class Failing(Recorder):
        async def ask(self, request, id, *, states, asked):
            if request.server == "eu-2":
                raise RuntimeError("a bug after the reply")
            return await super().ask(request, id, states=states, asked=asked)

    known = ["eu-1", "eu-2", "eu-4"]
    message = Command(command="save", servers=["eu-*"], id=3)
    planned = plan(message, known=known, online=known, principal=OPEN_ADMIN)
    session = Failing(OPEN_ADMIN, concurrency=1)
    session.gate.set()
    await asyncio.wait_for(bulkrun.run(session, planned, message, ("command", 0.0)), 5)
    failed = [m for m in session.sent if isinstance(m, Error)]
    assert [(e.server, e.code, e.outcome) for e in failed] == [("eu-2", ErrorCode.INTERNAL, "unknown")]
    assert session.sent[-1] == BulkDone(results={"eu-1": "ok", "eu-2": "internal", "eu-4": "ok"}, id=3)
