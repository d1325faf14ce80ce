"""Bus messages: msgpack round trips, the version field, topology names, permissions."""

from __future__ import annotations

import msgspec
import pytest

from resofleet.contracts import (
    BUS_VERSION,
    COMMAND_ROLES,
    Announce,
    BusEvent,
    BusReply,
    BusRequest,
    CommandResponse,
    ContractError,
    OutputRequest,
    Revoke,
    Role,
    ServerPresence,
    ServerState,
    Topology,
    decode_event,
    decode_presence,
    decode_reply,
    decode_request,
    encode_bus,
    is_server_id,
    required_role,
)


def test_messages_round_trip_with_a_version():
    req = BusRequest(server="eu-1", body=OutputRequest(since=5, epoch="e"), timeout=2.5, sub="alice", role="admin")
    assert decode_request(encode_bus(req)) == req
    assert msgspec.msgpack.decode(encode_bus(req))["v"] == BUS_VERSION
    reply = BusReply(body=CommandResponse(command="c", output="o", server="eu-1"))
    assert decode_reply(encode_bus(reply)) == reply
    event = BusEvent(server="eu-1", kind="state", body=ServerState(server="eu-1", state="ready"))
    assert decode_event(encode_bus(event)) == event
    for msg in (Announce(agent="a", host="h", servers=[ServerPresence(server="eu-1", status="running")], interval=2), Revoke(jti="j", until=1.0)):
        assert decode_presence(encode_bus(msg)) == msg


def test_unknown_version_is_refused():
    """A peer speaking another bus version is refused, not guessed at."""
    data = msgspec.msgpack.encode({"server": "s", "body": {"op": "command", "command": "x"}, "timeout": 1, "v": 99})
    with pytest.raises(ContractError, match="version 99"):
        decode_request(data)
    with pytest.raises(ContractError):
        decode_request(b"\xc1garbage")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"op": "command", "command": "users", "world": 2**63}, "$.body.world"),
        ({"op": "command", "command": "users", "world": -1}, "$.body.world"),
        ({"op": "command", "command": "x" * 5000}, "$.body.command"),
        ({"op": "command", "command": "users", "world": "w" * 300}, "$.body.world"),
        ({"op": "output", "since": 2**64 - 1}, "$.body.since"),
        ({"op": "output", "limit": 2**63}, "$.body.limit"),
        ({"op": "output", "epoch": "e" * 65}, "$.body.epoch"),
    ],
)
def test_a_request_past_the_client_bounds_is_refused(body, field):
    """No peer can hand an agent an integer (or a text) the client protocol would refuse."""
    data = msgspec.msgpack.encode({"server": "s", "body": body, "timeout": 1.0, "v": BUS_VERSION})
    with pytest.raises(ContractError, match=field.replace("$", r"\$")):
        decode_request(data)


def test_topology_names_are_prefixed():
    t = Topology(prefix="t1.")
    assert (t.commands, t.events, t.presence) == ("t1.resofleet.requests", "t1.resofleet.events", "t1.resofleet.presence")
    assert Topology().event_key("eu-1", "output") == "eu-1.output"


@pytest.mark.parametrize("good", ["a", "eu-1", "demo", "x" * 63, "0abc"])
def test_server_ids_accepted(good):
    assert is_server_id(good)


@pytest.mark.parametrize("bad", ["", "-a", "A", "eu_1", "x" * 64, "a.b", "a*", "a b", 5, None])
def test_server_ids_refused(bad):
    assert not is_server_id(bad)


def test_every_console_command_has_a_role():
    """All 55 commands of the console's help list (and help) are classified."""
    help_list = """saveConfig login logout message invite friendRequests acceptFriendRequest
    sendFriendRequest removeFriend worlds focus startWorldURL startWorldTemplate status
    enableResoniteLink sessionUrl sessionID copySessionURL copySessionID users close save restart
    kick silence unsilence ban unban listbans banByName unbanByName banByID unbanByID respawn role
    name accessLevel hideFromListing description maxUsers awayKickInterval import importMinecraft
    dynamicImpulse dynamicImpulseString dynamicImpulseInt dynamicImpulseFloat spawn gc crash
    debugWorldState version shutdown tickRate log""".split()
    assert len(help_list) == 55
    assert set(COMMAND_ROLES) == {c.lower() for c in help_list} | {"help"}


def test_roles_by_class():
    assert required_role("worlds") is Role.VIEWER
    assert required_role("KICK Bob") is Role.MODERATOR
    assert required_role("save") is Role.OPERATOR
    assert required_role("shutdown") is Role.ADMIN
    assert required_role("someNewCommand x") is Role.ADMIN  # unknown needs admin
    assert Role.VIEWER < Role.MODERATOR < Role.OPERATOR < Role.ADMIN


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 0.0, 86_401.0])
def test_a_peer_cannot_hand_a_timer_nan_infinity_or_a_nonsense_span(bad):
    """Times that become timers (a request's timeout, an announcement's interval) must be
    finite, positive and at most a day; epoch times (a deadline, a revocation's end)
    finite: a peer on the bus cannot make a gateway, an agent or a notifier spin or wait
    for ever."""
    request = BusRequest(server="eu-1", body=OutputRequest(limit=1), timeout=bad)
    with pytest.raises(ContractError, match="timeout"):
        decode_request(encode_bus(request))
    announce = Announce(agent="a", host="h", servers=[], interval=bad)
    with pytest.raises(ContractError, match="interval"):
        decode_presence(encode_bus(announce))
    if bad != bad or bad in (float("inf"), -1.0):
        with pytest.raises(ContractError, match="deadline"):
            decode_request(encode_bus(BusRequest(server="eu-1", body=OutputRequest(limit=1), timeout=5, deadline=bad)))
        with pytest.raises(ContractError, match="until"):
            decode_presence(encode_bus(Revoke(jti="j", until=bad)))
