"""Routing: client requests -> bus requests, server selection and scope, without I/O."""

from __future__ import annotations

import pytest

from resofleet import gateway
from resofleet.bus import ReplyError, RequestTimeout, ServerBusy, ServerOffline
from resofleet.contracts import (
    BusRequest,
    Command,
    CommandResponse,
    Container,
    ContainerOutput,
    ContainerOutputBatch,
    ContainerRequest,
    ContractError,
    ErrorCode,
    GetOutput,
    GetStatus,
    GetWorlds,
    OutputLine,
    OutputRequest,
    Role,
    RunCommand,
    ServerInfo,
    StatusRequest,
    Subscribe,
    WorldsRequest,
)
from resofleet.gateway.errors import (
    INTERNAL_SENTENCE,
    AmbiguousServer,
    Forbidden,
    NoServer,
    ScopeRefusal,
    ServerGone,
    UnknownServer,
    error_for,
)
from resofleet.gateway.identity import OPEN_ADMIN, Principal
from resofleet.gateway.routing import (
    Timeouts,
    Watch,
    output_lines,
    pick_server,
    route,
    server_list,
    watch_for,
    with_id,
)
from resofleet.gateway.server import Target, parse_path

VIEWER_LAB = Principal(sub="ann", role=Role.VIEWER, servers=("lab-*",))


def test_public_names_are_pinned():
    """gateway exports exactly the names the command line and tests rely on."""
    assert set(gateway.__all__) == {
        "AUTH_TIMEOUT", "CLOSE_GOING_AWAY", "CLOSE_REVOKED", "CLOSE_TOO_SLOW",
        "CLOSE_UNAUTHENTICATED", "DEFAULT_HOST", "DEFAULT_PORT", "Gateway", "GatewayError",
        "OPEN_ADMIN", "Principal", "Security", "Timeouts",
    }
    for name in gateway.__all__:
        assert hasattr(gateway, name)


# -- server selection -------------------------------------------------------------------


def test_named_server_is_used_even_if_not_seen():
    """A well-formed id goes to the bus whether or not this replica has seen it."""
    assert pick_server("alpha", pinned=None, online=[], principal=OPEN_ADMIN) == "alpha"


def test_single_online_server_is_the_default():
    """Without `server`, the one server online is chosen."""
    assert pick_server(None, pinned=None, online=["solo"], principal=OPEN_ADMIN) == "solo"


def test_no_server_online_is_server_offline():
    """Without `server` and nothing online: server_offline with a sentence to act on."""
    with pytest.raises(NoServer) as info:
        pick_server(None, pinned=None, online=[], principal=OPEN_ADMIN)
    assert info.value.code == ErrorCode.SERVER_OFFLINE
    assert "No server is online" in info.value.message


def test_several_online_servers_are_ambiguous_and_listed():
    """Without `server` and several online: ambiguous_server naming them, sorted."""
    with pytest.raises(AmbiguousServer) as info:
        pick_server(None, pinned=None, online=["b", "a", "c"], principal=OPEN_ADMIN)
    assert info.value.code == ErrorCode.AMBIGUOUS_SERVER
    assert "(a, b, c)" in info.value.message


def test_pinned_server_is_the_default_whatever_is_online():
    """On /ws/<id>, requests without `server` go to the pinned server."""
    assert pick_server(None, pinned="p", online=["a", "b"], principal=OPEN_ADMIN) == "p"


def test_pinned_connection_refuses_other_servers():
    """On /ws/<id>, naming another server is unknown_server, pointing at /ws."""
    with pytest.raises(UnknownServer) as info:
        pick_server("other", pinned="p", online=["p", "other"], principal=OPEN_ADMIN)
    assert "/ws" in info.value.message
    assert (info.value.refused, info.value.reason) == ("other", ScopeRefusal.PINNED_ELSEWHERE)


@pytest.mark.parametrize("bad", ["", "UPPER", "-dash", "a" * 64, "a.b", "a b", "*", "é"])
def test_malformed_server_id_is_unknown_server(bad):
    """A malformed id is unknown_server, refused as malformed."""
    with pytest.raises(UnknownServer) as info:
        pick_server(bad, pinned=None, online=[], principal=OPEN_ADMIN)
    assert (info.value.refused, info.value.reason) == (bad, ScopeRefusal.MALFORMED)


def test_out_of_scope_server_is_unknown_not_forbidden():
    """A client never learns that a server outside its scope exists."""
    with pytest.raises(UnknownServer) as info:
        pick_server("prod-1", pinned=None, online=["prod-1"], principal=VIEWER_LAB)
    assert info.value.code == ErrorCode.UNKNOWN_SERVER
    assert "There is no server 'prod-1'" in info.value.message
    assert (info.value.refused, info.value.reason) == ("prod-1", ScopeRefusal.OUT_OF_SCOPE)


def test_pinned_server_out_of_scope_is_answered_as_absent():
    """/ws/<id> outside the token's scope reads exactly like /ws/<id> of no server."""
    answers = []
    for server in ("prod-1", "zz-9"):
        with pytest.raises(UnknownServer) as info:
            pick_server(None, pinned=server, online=["prod-1", "lab-1"], principal=VIEWER_LAB)
        answers.append(info.value.message.replace(server, "X"))
        assert (info.value.refused, info.value.reason) == (server, ScopeRefusal.OUT_OF_SCOPE)
    assert answers[0] == answers[1] == "There is no server 'X' (send get_servers for the list)."


def test_default_server_counts_only_servers_in_scope():
    """Servers outside the scope do not make the default ambiguous."""
    assert pick_server(None, pinned=None, online=["prod-1", "lab-1"], principal=VIEWER_LAB) == "lab-1"


# -- authorisation ---------------------------------------------------------------------


def test_viewer_may_read_but_not_kick():
    """The role check uses the command table of contracts; forbidden names the roles."""
    route(Command(command="users"), pinned=None, online=["lab-1"], principal=VIEWER_LAB)
    with pytest.raises(Forbidden) as info:
        route(Command(command="kick Mira"), pinned=None, online=["lab-1"], principal=VIEWER_LAB)
    assert info.value.code == ErrorCode.FORBIDDEN
    assert "viewer" in info.value.message and "moderator" in info.value.message
    assert (info.value.needed, info.value.held, info.value.server) == (Role.MODERATOR, Role.VIEWER, "lab-1")


def test_container_actions_need_admin():
    """Starting or stopping a container is an admin action."""
    with pytest.raises(Forbidden) as info:
        route(Container(action="stop"), pinned=None, online=["lab-1"], principal=VIEWER_LAB)
    assert (info.value.needed, info.value.held, info.value.server) == (Role.ADMIN, Role.VIEWER, "lab-1")


def test_subscribe_names_the_first_server_it_may_not_see():
    """A subscribe naming servers outside the scope is refused for the first of them, saying why."""
    with pytest.raises(UnknownServer) as info:
        watch_for(Subscribe(servers=["lab-1", "prod-1", "Bad Id"]), pinned=None, principal=VIEWER_LAB)
    assert (info.value.refused, info.value.reason) == ("prod-1", ScopeRefusal.OUT_OF_SCOPE)
    with pytest.raises(UnknownServer) as info:
        watch_for(Subscribe(servers=["lab-1", "lab-2"]), pinned="lab-1", principal=VIEWER_LAB)
    assert (info.value.refused, info.value.reason) == ("lab-2", ScopeRefusal.PINNED_ELSEWHERE)


# -- translation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "body", "timeout"),
    [
        (Command(command="users", world=1), RunCommand(command="users", world=1), 15.0),
        (Command(command="startWorldURL x"), RunCommand(command="startWorldURL x"), 125.0),
        (Command(command="SAVE"), RunCommand(command="SAVE"), 65.0),
        (Command(command="close"), RunCommand(command="close"), 35.0),
        (GetStatus(), StatusRequest(), 15.0),
        (GetWorlds(), WorldsRequest(), 15.0),
        (GetOutput(since=5, epoch="e", limit=10), OutputRequest(since=5, epoch="e", limit=10), 5.0),
        (Container(action="restart"), ContainerRequest(action="restart"), 120.0),
    ],
)
def test_requests_become_bus_requests(message, body, timeout):
    """Each bus-bound request type maps to its bus body with its timeout."""
    request = route(message, pinned=None, online=["s1"], principal=OPEN_ADMIN, client="10.0.0.1")
    assert request == BusRequest(
        server="s1", body=body, timeout=timeout, sub="local", role="admin", client="10.0.0.1"
    )


def test_a_server_its_agent_stopped_announcing_is_offline_at_once():
    """Known offline: server_offline from the gateway, saying for how long; others go to the bus."""
    with pytest.raises(ServerGone) as info:
        route(Command(command="users", server="gone"), pinned=None, online=[], offline={"gone": 7.2},
              principal=OPEN_ADMIN)
    assert info.value.code == ErrorCode.SERVER_OFFLINE and info.value.server == "gone"
    assert "for 7 s" in info.value.message
    assert route(Command(command="users", server="new"), pinned=None, online=[], offline={"gone": 7.2},
                 principal=OPEN_ADMIN).server == "new"


@pytest.mark.parametrize(
    ("message", "epochs", "sent"),
    [
        (GetOutput(since=5), {"s1": "e1"}, OutputRequest(since=5, epoch="e1")),
        (GetOutput(since=5, epoch="mine"), {"s1": "e1"}, OutputRequest(since=5, epoch="mine")),
        (GetOutput(since=5), {"other": "e2"}, OutputRequest(since=5)),
        (GetOutput(since=5), None, OutputRequest(since=5)),
        (GetOutput(), {"s1": "e1"}, OutputRequest()),
        (GetOutput(limit=3), {"s1": "e1"}, OutputRequest(limit=3)),
    ],
)
def test_since_without_epoch_gets_the_epoch_of_the_last_answer(message, epochs, sent):
    """`since` alone is sent with the epoch this connection last had an answer in, for that
    server only; an epoch the client gave, or a request without `since`, goes as it came."""
    assert route(message, pinned=None, online=["s1"], principal=OPEN_ADMIN, epochs=epochs).body == sent


def test_timeouts_are_configurable():
    """Tests and deployments can shorten or lengthen every kind of timeout."""
    fast = Timeouts(command=1.0, long_commands={"save": 2.0})
    assert route(Command(command="users"), pinned="s", online=[], principal=OPEN_ADMIN, timeouts=fast).timeout == 1.0
    assert route(Command(command="save"), pinned="s", online=[], principal=OPEN_ADMIN, timeouts=fast).timeout == 2.0


def test_with_id_copies_and_never_mutates():
    """The id is set on a copy: bus replies may be shared between sessions (LocalBus)."""
    body = CommandResponse(command="users", output="x", server="s")
    stamped = with_id(body, "r1")
    assert stamped.id == "r1" and body.id is None
    assert with_id(body, None) is body


def test_output_batch_splits_into_one_message_per_line():
    """container_output is one line per message, carrying seq and epoch."""
    batch = ContainerOutputBatch(
        server="s", epoch="e1", lines=[OutputLine(seq=7, output="a"), OutputLine(seq=8, output="b")]
    )
    assert output_lines(batch) == [
        ContainerOutput(output="a", server="s", seq=7, epoch="e1"),
        ContainerOutput(output="b", server="s", seq=8, epoch="e1"),
    ]


# -- subscriptions and lists -----------------------------------------------------------


def test_subscribe_star_follows_everything_in_scope():
    """`"*"` watches every server the client may see, including later ones."""
    watch = watch_for(Subscribe(servers="*"), pinned=None, principal=VIEWER_LAB)
    assert watch == Watch(all=True)
    assert watch.covers("lab-9", VIEWER_LAB) and not watch.covers("prod-1", VIEWER_LAB)
    assert watch.listed() == ["*"]


def test_subscribe_list_and_pinned():
    """A list watches exactly those ids; on a pinned connection `*` is the pinned one."""
    assert watch_for(Subscribe(servers=["b", "a"]), pinned=None, principal=OPEN_ADMIN).listed() == ["a", "b"]
    assert watch_for(Subscribe(servers="*"), pinned="p", principal=OPEN_ADMIN).listed() == ["p"]
    with pytest.raises(UnknownServer):
        watch_for(Subscribe(servers=["q"]), pinned="p", principal=OPEN_ADMIN)
    with pytest.raises(UnknownServer):
        watch_for(Subscribe(servers=["prod-1"]), pinned=None, principal=VIEWER_LAB)


def test_server_list_is_filtered_by_scope_and_pin():
    """get_servers lists only what the client may see, and only the pinned server on /ws/<id>."""
    infos = [ServerInfo(server=s, host="h", status="running") for s in ("lab-1", "prod-1")]
    assert [i.server for i in server_list(infos, pinned=None, principal=VIEWER_LAB)] == ["lab-1"]
    assert [i.server for i in server_list(infos, pinned="prod-1", principal=OPEN_ADMIN)] == ["prod-1"]


# -- errors and paths ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ServerOffline("s"), ErrorCode.SERVER_OFFLINE),
        (RequestTimeout("s", 3), ErrorCode.TIMEOUT),
        (ServerBusy("s"), ErrorCode.RATE_LIMITED),
        (ContractError("bad", id=4), ErrorCode.BAD_REQUEST),
        (NoServer(), ErrorCode.SERVER_OFFLINE),
        (RuntimeError("secret detail"), ErrorCode.INTERNAL),
    ],
)
def test_every_failure_maps_to_one_error_code(exc, code):
    """Failures become error replies in one place, with the id echoed."""
    error = error_for(exc, id=4, server="s")
    assert error.code == code and error.id == 4
    assert "secret detail" not in error.message


def test_an_unexpected_failure_reads_as_a_fixed_sentence_with_a_logged_reference(caplog):
    """A gateway bug answers `internal` with a fixed sentence and a reference that finds
    the traceback in the log; nothing of the exception reaches the client."""
    error = error_for(RuntimeError("secret path /etc/x"), id=4, server="s", conn="c9")
    assert error.code == ErrorCode.INTERNAL and "/etc/x" not in error.message
    assert error.message.startswith(INTERNAL_SENTENCE.removesuffix("."))
    reference = error.message.rsplit("(reference ", 1)[1].removesuffix(").")
    [logged] = [r for r in caplog.records if reference in r.getMessage()]
    assert "conn=c9" in logged.getMessage() and "secret path /etc/x" in str(logged.exc_info[1])


def test_a_reply_errors_detail_never_reaches_the_client():
    """A ReplyError is answered with its sentence; its detail is for the log only."""
    failure = ReplyError("The runtime failed.", detail="docker at unix:///run/secret.sock refused")
    error = error_for(failure, server="s")
    assert (error.code, error.message) == (ErrorCode.INTERNAL, "The runtime failed.")


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/ws", Target(None)),
        ("/ws/", Target(None)),
        ("/ws?token=x", Target(None)),
        ("/ws/main", Target("main")),
        ("/ws/main/?token=x", Target("main")),
        ("/ws/Main", None),
        ("/ws/a/b", None),
        ("/", None),
        ("/wsx", None),
    ],
)
def test_paths(path, target):
    """/ws and /ws/<server> are the WebSocket endpoints; anything else is not."""
    assert parse_path(path) == target
