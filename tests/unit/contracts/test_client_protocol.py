"""The client protocol's JSON: the seed's shapes exactly, and one clear error for bad input."""

from __future__ import annotations

import json

import msgspec
import pytest

from resofleet import contracts
from resofleet.contracts.client import MAX_NESTING
from resofleet.contracts import (
    Ban,
    BansUpdate,
    Command,
    CommandResponse,
    ContainerOutput,
    ContractError,
    Error,
    ErrorCode,
    GetStatus,
    GetWorlds,
    Status,
    StatusUpdate,
    User,
    World,
    WorldsUpdate,
    decode_client,
    Subscribe,
    encode_server,
)


def as_json(message) -> dict:
    return json.loads(encode_server(message))


def test_public_names_are_pinned():
    """contracts exports exactly the names third-party clients may rely on."""
    assert sorted(contracts.__all__, key=str.lower) == contracts.__all__
    assert set(contracts.__all__) == {
        "Announce", "AuditSink", "AuditValue", "Auth", "Authenticated", "COMMAND_DEADLINE", "deadline_for", "LONG_COMMAND_DEADLINES", "Ban", "BansUpdate", "BulkDone", "BUS_VERSION", "BusEvent",
        "BusReply", "BusRequest", "check_command_text", "check_world_text", "ClientMessage", "Command",
        "CommandOutcome",
        "COMMAND_ROLES", "CONTROL_CHARACTERS", "command_name", "CommandResponse", "Container", "ContainerAction",
        "ContainerOutput", "ContainerOutputBatch", "ContainerRequest", "ContainerResponse",
        "CONTAINER_ROLE", "ContractError", "decode_client", "decode_event", "decode_presence",
        "decode_reply", "decode_request", "Discover", "encode_bus", "encode_server", "Error",
        "ErrorCode", "EVENT_KINDS", "EventKind", "GetOutput", "GetServers", "GetStatus",
        "GetWorlds", "is_server_id", "MAX_COMMAND_LENGTH", "MAX_SAFE_INTEGER", "MISSED_ANNOUNCEMENTS", "OutputHistory", "OutputLine",
        "OutputRequest", "Ping", "Pong", "PresenceMessage", "RECORD_KEYS", "ReplyBody", "RequestBody",
        "RequestId", "required_role", "Revoke", "Role", "RunCommand", "SERVER_ID_PATTERN",
        "ScheduleRun", "ServerInfo", "ServerMessage", "ServerPresence", "ServersUpdate", "ServerState",
        "Status", "StatusRequest", "StatusUpdate", "Subscribe", "Subscribed", "Topology",
        "User", "World", "WorldsRequest", "WorldsUpdate",
    }
    for name in contracts.__all__:
        assert hasattr(contracts, name)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"type": "command", "command": "worlds"}, Command(command="worlds")),
        ({"type": "get_status"}, GetStatus()),
        ({"type": "get_worlds"}, GetWorlds()),
        (
            {"type": "command", "command": "kick Bob", "server": "eu-1", "world": 2, "id": "r1"},
            Command(command="kick Bob", server="eu-1", world=2, id="r1"),
        ),
    ],
)
def test_seed_requests_decode(frame, expected):
    """The seed's requests (and the optional additions) decode to their structs."""
    assert decode_client(json.dumps(frame)) == expected
    assert decode_client(json.dumps(frame).encode()) == expected


def test_command_response_shape():
    """command_response has exactly command, output, server (and id when asked)."""
    msg = CommandResponse(command="users", output="a\nb", server="demo")
    assert as_json(msg) == {"type": "command_response", "command": "users", "output": "a\nb", "server": "demo"}
    msg.id = 7
    assert as_json(msg)["id"] == 7


def test_bans_update_shape():
    msg = BansUpdate(bans=[Ban(username="SpamBot", userId="U-SpamBot01", machineIds=["4q8w", "x"])], server="demo")
    assert as_json(msg) == {
        "type": "bans_update",
        "bans": [{"username": "SpamBot", "userId": "U-SpamBot01", "machineIds": ["4q8w", "x"]}],
        "server": "demo",
    }


def test_status_update_numbers_are_numbers():
    """cpu_usage and memory_percent are JSON numbers (clients call .toFixed on them)."""
    status = Status(
        status="running", name="resonite-headless", id="abc123", cpu_usage=12.5, memory_percent=40.1,
        memory_used="4.2GB", memory_total="10.0GB", uptime="2 hours", restarts=0,
        memory_used_bytes=4_200_000_000, memory_total_bytes=10_000_000_000,
    )
    data = as_json(StatusUpdate(status=status, server="demo"))
    assert data["type"] == "status_update" and data["server"] == "demo"
    assert isinstance(data["status"]["cpu_usage"], float)
    assert isinstance(data["status"]["memory_percent"], float)
    assert data["status"]["memory_used"] == "4.2GB"
    assert set(data["status"]) >= {"status", "name", "id", "cpu_usage", "memory_percent", "memory_used", "memory_total", "uptime", "restarts"}


def test_worlds_update_shape():
    """A World has the seed's fields with their JSON types, plus index, role, uptime_raw."""
    host = User(username="HarborHost", userId="U-1a2B", present=False, ping=0, fps=60.00012, silenced=False, role="Admin")
    world = World(
        name="Harbor Lounge", sessionId="S-3f2a", users=1, present=0, maxUsers=16,
        uptime="1 day 2 hours 3 minutes", accessLevel="Anyone", hidden=False, mobileFriendly=True,
        description="A quiet place", tags="chill, music", users_list=[host], index=0,
        uptime_raw="1.02:03:04.5060708",
    )
    data = as_json(WorldsUpdate(output=[world], server="demo"))
    w = data["output"][0]
    assert data["type"] == "worlds_update"
    assert list(w) == [
        "name", "sessionId", "users", "present", "maxUsers", "uptime", "accessLevel", "hidden",
        "mobileFriendly", "description", "tags", "users_list", "index", "uptime_raw",
    ]
    assert (type(w["users"]), type(w["present"]), type(w["maxUsers"]), type(w["hidden"])) == (int, int, int, bool)
    assert w["users_list"][0] == {
        "username": "HarborHost", "userId": "U-1a2B", "present": False, "ping": 0,
        "fps": 60.00012, "silenced": False, "role": "Admin",
    }


def test_container_output_shape():
    data = as_json(ContainerOutput(output="World running...", server="demo", seq=12, epoch="e1"))
    assert data == {"type": "container_output", "output": "World running...", "server": "demo", "seq": 12, "epoch": "e1"}


def test_error_shape_and_closed_codes():
    """error has message and code (one of the documented set); id/server only when known."""
    assert as_json(Error(message="No.", code=ErrorCode.FORBIDDEN)) == {"type": "error", "message": "No.", "code": "forbidden"}
    assert {c.value for c in ErrorCode} == {
        "bad_request", "unknown_type", "unknown_server", "ambiguous_server", "forbidden",
        "unauthenticated", "server_offline", "server_lost", "timeout", "rate_limited",
        "bus_unavailable", "internal", "unknown_world",
    }
    unknown_world = Error(message="No such world.", code=ErrorCode.UNKNOWN_WORLD, server="s", id=1)
    assert as_json(unknown_world)["code"] == "unknown_world"
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"type":"error","message":"x","code":"made_up"}', type=Error)


def test_outcome_is_omitted_until_someone_states_it():
    """command_response, container_response and error name an outcome only when one was
    stated, so a seed client sees the seed's shapes; the three values are closed."""
    assert "outcome" not in as_json(CommandResponse(command="c", output="o", server="s"))
    assert "outcome" not in as_json(Error(message="m", code=ErrorCode.TIMEOUT))
    stated = [
        CommandResponse(command="c", output="o", server="s", outcome=contracts.CommandOutcome.EXECUTED),
        contracts.ContainerResponse(
            action="stop", server="s", status="exited", outcome=contracts.CommandOutcome.EXECUTED
        ),
        Error(message="m", code=ErrorCode.SERVER_LOST, outcome=contracts.CommandOutcome.UNKNOWN),
        Error(message="m", code=ErrorCode.FORBIDDEN, outcome=contracts.CommandOutcome.NOT_EXECUTED),
    ]
    assert [as_json(m)["outcome"] for m in stated] == ["executed", "executed", "unknown", "not_executed"]
    assert {o.value for o in contracts.CommandOutcome} == {"executed", "not_executed", "unknown"}
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"type":"error","message":"x","code":"timeout","outcome":"maybe"}', type=Error)
    reply = contracts.decode_reply(contracts.encode_bus(contracts.BusReply(body=stated[2])))
    assert reply.body == stated[2]  # the agent's statement crosses the bus unchanged


def test_every_server_message_round_trips():
    """Every gateway -> client message decodes back to itself."""
    decoder = msgspec.json.Decoder(contracts.ServerMessage)
    samples = [
        CommandResponse(command="c", output="o", server="s", id="x"),
        BansUpdate(bans=[], server="s"),
        ContainerOutput(output="o", server="s", seq=1, epoch="e"),
        Error(message="m", code=ErrorCode.TIMEOUT, server="s", id=3),
        contracts.Pong(id=1),
        contracts.OutputHistory(server="s", epoch="e", lines=[contracts.OutputLine(seq=1, output="o")], complete=True, reset=True),
        contracts.ServersUpdate(servers=[contracts.ServerInfo(server="s", host="h", status="running")]),
    ]
    for message in samples:
        assert decoder.decode(encode_server(message)) == message


BAD = [
    ("not json", b"{nope", ErrorCode.BAD_REQUEST),
    ("invalid utf-8", b'{"type":"command","command":"\xff\xfe"}', ErrorCode.BAD_REQUEST),
    ("not an object", b"[1,2]", ErrorCode.BAD_REQUEST),
    ("no type", b'{"command":"worlds"}', ErrorCode.BAD_REQUEST),
    ("missing field", b'{"type":"command"}', ErrorCode.BAD_REQUEST),
    ("wrong type", b'{"type":"command","command":42}', ErrorCode.BAD_REQUEST),
    ("unknown type", b'{"type":"format_disk"}', ErrorCode.UNKNOWN_TYPE),
    ("deep nesting", b'{"type":"ping","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", ErrorCode.BAD_REQUEST),
    ("1 MiB string", b'{"type":"command","command":"' + b"a" * (1 << 20) + b'"}', ErrorCode.BAD_REQUEST),
    ("newline in command", b'{"type":"command","command":"worlds\\nshutdown"}', ErrorCode.BAD_REQUEST),
    ("CR in command", b'{"type":"command","command":"worlds\\rshutdown"}', ErrorCode.BAD_REQUEST),
    ("NUL in command", b'{"type":"command","command":"worlds\\u0000"}', ErrorCode.BAD_REQUEST),
    ("ANSI escape", b'{"type":"command","command":"\\u001b[2Jworlds"}', ErrorCode.BAD_REQUEST),
    ("line separator", b'{"type":"command","command":"worlds\\u2028shutdown"}', ErrorCode.BAD_REQUEST),
    ("empty command", b'{"type":"command","command":"  "}', ErrorCode.BAD_REQUEST),
    ("newline in world", b'{"type":"command","command":"users","world":"Lounge\\nshutdown"}', ErrorCode.BAD_REQUEST),
    ("CR in world", b'{"type":"command","command":"users","world":"Lounge\\rname x"}', ErrorCode.BAD_REQUEST),
    ("separator in world", b'{"type":"command","command":"users","world":"a\\u2029b"}', ErrorCode.BAD_REQUEST),
    ("ESC in world", b'{"type":"command","command":"users","world":"\\u001b[2J"}', ErrorCode.BAD_REQUEST),
    ("empty world", b'{"type":"command","command":"users","world":" "}', ErrorCode.BAD_REQUEST),
    ("bad action", b'{"type":"container","action":"explode"}', ErrorCode.BAD_REQUEST),
    ("id past 2**53", b'{"type":"ping","id":9007199254740992}', ErrorCode.BAD_REQUEST),
    ("id below -2**53", b'{"type":"ping","id":-9007199254740992}', ErrorCode.BAD_REQUEST),
    ("id of 2**70", b'{"type":"get_status","id":1180591620717411303424}', ErrorCode.BAD_REQUEST),
    ("since past 2**53", b'{"type":"get_output","since":9007199254740992}', ErrorCode.BAD_REQUEST),
    ("since of 2**70", b'{"type":"get_output","since":1180591620717411303424}', ErrorCode.BAD_REQUEST),
    ("limit of 2**70", b'{"type":"get_output","limit":1180591620717411303424}', ErrorCode.BAD_REQUEST),
    ("world index of 2**70", b'{"type":"command","command":"users","world":1180591620717411303424}', ErrorCode.BAD_REQUEST),
    ("negative world index", b'{"type":"command","command":"users","world":-1}', ErrorCode.BAD_REQUEST),
]


@pytest.mark.parametrize(("frame", "code"), [(f, c) for _, f, c in BAD], ids=[n for n, _, _ in BAD])
def test_malformed_input_raises_one_contract_error(frame, code):
    """Every malformed frame raises ContractError with a code and a readable sentence."""
    with pytest.raises(ContractError) as info:
        decode_client(frame)
    assert info.value.code == code
    assert info.value.message.endswith(".") and len(info.value.message) < 400


def test_error_keeps_the_request_id_when_readable():
    """A rejected request's id is still known, so the error reply can echo it."""
    with pytest.raises(ContractError) as info:
        decode_client(b'{"type":"command","command":"a\\nb","id":"req-9"}')
    assert info.value.id == "req-9"
    with pytest.raises(ContractError) as info:
        decode_client(b'{"type":"teleport","id":4}')
    assert info.value.id == 4 and info.value.code == ErrorCode.UNKNOWN_TYPE


@pytest.mark.parametrize(
    ("frame", "request_type", "command"),
    [
        (b'{"type":"command","command":"kick Mira\\nshutdown"}', "command", "kick Mira\nshutdown"),
        (b'{"type":"command","command":"users","world":"a\\rb"}', "command", "users"),
        (b'{"type":"command","command":"ban Mira","id":["not","an","id"]}', "command", "ban Mira"),
        (b'{"type":"command","command":42}', "command", None),
        (b'{"type":"container","action":"explode"}', "container", None),
        (b'{"type":"teleport","command":"x"}', "teleport", None),
        (b'{"type":5}', None, None),
        (b"[1,2]", None, None),
        (b"{nope", None, None),
    ],
)
def test_error_says_what_was_refused_when_readable(frame, request_type, command):
    """A rejected request's type and command text are still known, so the refusal can be
    recorded without decoding the input again."""
    with pytest.raises(ContractError) as info:
        decode_client(frame)
    assert (info.value.request_type, info.value.command) == (request_type, command)


@pytest.mark.parametrize(
    ("frame", "field", "id"),
    [
        (b'{"type":"ping","id":1180591620717411303424}', "$.id", None),
        (b'{"type":"get_output","since":1180591620717411303424,"id":"a"}', "$.since", "a"),
        (b'{"type":"get_output","limit":1180591620717411303424,"id":2}', "$.limit", 2),
        (b'{"type":"command","command":"users","world":1180591620717411303424,"id":"c"}', "$.world", "c"),
    ],
)
def test_an_integer_past_the_bound_is_named_and_never_echoed(frame, field, id):
    """The error names the field; an id past the bound is not echoed, a good one is."""
    with pytest.raises(ContractError) as info:
        decode_client(frame)
    assert field in info.value.message and "1180591620717411303424" not in info.value.message
    assert info.value.id == id


def test_integers_at_the_bound_decode():
    """2**53 - 1 (JavaScript's largest safe integer) and its negative are accepted."""
    top = contracts.MAX_SAFE_INTEGER
    assert top == 2**53 - 1
    assert decode_client(f'{{"type":"ping","id":{-top}}}').id == -top
    message = decode_client(f'{{"type":"get_output","since":{top},"id":{top}}}')
    assert (message.since, message.id) == (top, top)
    assert decode_client(f'{{"type":"command","command":"users","world":{top}}}').world == top


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"ping","x":' + "[" * 40 + "]" * 40 + "}",
        '{"type":"ping","x":' + '{"a":' * 40 + "1" + "}" * 40 + "}",
        "[" * 60_000,  # never closed: refused on depth alone
        '{"type":"subscribe","servers":' + "[" * 5_000 + '"a"' + "]" * 5_000 + "}",
    ],
    ids=["arrays", "objects", "unclosed", "in-a-field"],
)
def test_frames_nested_past_the_bound_are_refused_before_decoding(frame):
    """A frame nested deeper than MAX_NESTING is bad_request, saying so, whatever it holds."""
    with pytest.raises(ContractError) as info:
        decode_client(frame)
    assert info.value.code == ErrorCode.BAD_REQUEST
    assert f"at most {MAX_NESTING} levels" in info.value.message


def test_brackets_inside_strings_do_not_count_as_nesting():
    """Brackets inside a string (a command, an escaped quote before them) are text, not depth."""
    command = 'say "[[[[' + "[" * 100 + '\\"' + "{" * 100
    message = decode_client(json.dumps({"type": "command", "command": command, "server": "eu-1"}))
    assert isinstance(message, Command) and message.command == command
    nested = {"type": "subscribe", "servers": ["a", "b"]}
    assert decode_client(json.dumps(nested)) == Subscribe(servers=["a", "b"])
