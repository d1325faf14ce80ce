"""Client protocol v1: the JSON messages between a client and a gateway.

Two tagged unions, one per direction, discriminated by the ``type`` field:
:data:`ClientMessage` (client -> gateway) and :data:`ServerMessage` (gateway -> client).
The seed's messages keep their names and fields exactly; everything added since is a new
optional field or a new message type, so a client written against the seed keeps working.

Schema evolution (msgspec's rule): a new field always has a default; a field's type never
changes. Optional reply fields (``id``, ``server`` on errors, ``reset``) are omitted from
the JSON when unset, as the seed omitted them.

Outcome. Every ``command_response`` and ``container_response``, and every ``error`` that
answers a ``command`` or ``container`` request, says whether the command or action ran
(:class:`CommandOutcome`), stated by whoever knows: the gateway for what it refused before
the bus (``not_executed``) and for what it lost track of after handing it over
(``unknown``: a timeout, a lost agent, the broker link dropping mid-flight); the agent for
what it answers (``executed``; ``not_executed`` when it refused before writing a byte to the
console; ``unknown`` when the console took the line and then failed to answer). Replies to
reads (status, worlds, output) have none: a read changes nothing. The field is omitted when
unset, so clients written against the seed see nothing new unless they look.

Bulk requests. A ``command`` or ``container`` may name many servers at once with
``servers``, a list of glob patterns (``["eu-*", "lab"]``) instead of ``server``; the two
are exclusive. The gateway answers one reply (or ``error``) per matched server, each with
its ``server`` and the request's ``id``, then one :class:`BulkDone` with every matched
server's result. A request with neither field goes to one server, as the seed's did.

Decoding is the gateway's edge: :func:`decode_client` turns one text frame into a typed
request or raises :class:`~resofleet.contracts.errors.ContractError` with a code and a sentence.
"""

from __future__ import annotations

import enum
import itertools
import re
from array import array
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct

from .errors import ContractError, ErrorCode
from .patterns import MAX_BULK_PATTERNS, MAX_BULK_SERVERS, SERVER_PATTERN, check_patterns
from .payloads import Ban, OutputLine, ServerInfo, Status, User, World

__all__ = [
    "Auth",
    "Authenticated",
    "Ban",
    "BansUpdate",
    "BulkDone",
    "ClientMessage",
    "Command",
    "CommandOutcome",
    "CommandResponse",
    "Container",
    "ContainerAction",
    "ContainerOutput",
    "ContainerOutputBatch",
    "ContainerResponse",
    "Error",
    "GetOutput",
    "GetServers",
    "GetStatus",
    "GetWorlds",
    "MAX_BULK_PATTERNS",
    "MAX_BULK_SERVERS",
    "MAX_COMMAND_LENGTH",
    "MAX_OUTPUT_BYTES",
    "MAX_SAFE_INTEGER",
    "MAX_SUBSCRIBE_SERVERS",
    "OutputHistory",
    "OutputLine",
    "Ping",
    "Pong",
    "RequestId",
    "SERVER_PATTERN",
    "ServerInfo",
    "ServerMessage",
    "ScheduleRun",
    "ServersUpdate",
    "Status",
    "StatusUpdate",
    "Subscribe",
    "Subscribed",
    "User",
    "World",
    "WorldsUpdate",
    "CONTROL_CHARACTERS",
    "check_command_text",
    "check_world_text",
    "decode_client",
    "encode_server",
]

#: Largest integer a client may send (and, negated, the smallest ``id``): 2**53 - 1,
#: JavaScript's ``Number.MAX_SAFE_INTEGER``. Every integer of the protocol (a request
#: ``id``, ``since``, ``limit``, a world index) is one a browser client holds exactly, and
#: fits the 64 bits msgpack carries on the bus. A frame with a larger one is
#: ``bad_request`` naming the field, and nothing of it is sent on.
MAX_SAFE_INTEGER: Final = 2**53 - 1

#: A ``seq`` (``since``) or a world index: counted from 0, within :data:`MAX_SAFE_INTEGER`.
_Count = Annotated[int, Meta(ge=0, le=MAX_SAFE_INTEGER)]

#: A request id is echoed back as the client sent it: a string of up to 128 characters or
#: an integer within +/- :data:`MAX_SAFE_INTEGER`.
RequestId = (
    Annotated[str, Meta(max_length=128)]
    | Annotated[int, Meta(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
)

#: Longest console command accepted, in characters. Real commands are short (the longest
#: useful ones carry a world URL or a description); anything past this is a mistake or an
#: attack, and would only sit in the console's input buffer.
MAX_COMMAND_LENGTH: Final = 4096

#: Bytes of console text (UTF-8, plus a few bytes per line for the JSON around it) one
#: ``output_history`` carries at most, whatever its ``limit``: 1 MiB, a few thousand lines,
#: what a browser takes in one message without a hitch. Past it the reply is a page,
#: ``complete: false``, and the client asks again with ``since`` set to its last ``seq``.
#: The agent bounds its replies and the gateway bounds what it passes on, so one request
#: never makes either hold more (a client asking 32 times for 10,000 4 KB lines once made
#: a gateway hold 1.3 GiB).
MAX_OUTPUT_BYTES: Final = 1024 * 1024
#: Server ids one ``subscribe`` may list. A dashboard watching a subset names a few dozen;
#: ``"*"`` covers everything in scope at no cost per id. Each listed id is checked and
#: counted on every subscribe (and costs rate-limit tokens), so the bound keeps one frame's
#: work small: 256 (it was 1,024).
MAX_SUBSCRIBE_SERVERS: Final = 256

#: Longest server id or world name accepted inside a request, in characters.
_MAX_NAME = 256
#: Longest ``epoch`` accepted, in characters (agents draw 12 hex digits).
_MAX_EPOCH = 64
#: Most lines one ``get_output`` may ask for: ten rings' worth, so any ``limit`` a client
#: needs fits; one reply stays within :data:`MAX_OUTPUT_BYTES` whatever the limit.
_MAX_LIMIT = 100_000

#: Deepest nesting of arrays and objects a frame may have. Every request is an object whose
#: values are at most one list deep (2); 32 leaves room for any later field and is refused
#: before the decoder sees it, so a frame of thousands of brackets costs one scan.
MAX_NESTING: Final = 32

ServerId = Annotated[str, Meta(max_length=_MAX_NAME)]
#: ``servers`` of a bulk request: glob patterns (their grammar, :mod:`.patterns`, is
#: checked by :func:`decode_client`, which names the bad one).
_Patterns = Annotated[
    list[Annotated[str, Meta(max_length=_MAX_NAME)]], Meta(max_length=MAX_BULK_PATTERNS)
]
#: ``world`` in a request: a name, or an index counted from 0 (shared with the bus).
_WorldRef = Annotated[str, Meta(max_length=_MAX_NAME)] | _Count
_Epoch = Annotated[str, Meta(max_length=_MAX_EPOCH)]
_Limit = Annotated[int, Meta(ge=1, le=_MAX_LIMIT)]
ContainerAction = Literal["start", "stop", "restart"]


class _Message(Struct, tag_field="type", omit_defaults=True, forbid_unknown_fields=False):
    """Base of every client protocol message (unknown fields are ignored, for evolution)."""


# --------------------------------------------------------------------------------------
# client -> gateway


class Command(_Message, tag="command"):
    """Run one console command. ``world`` (index or name) focuses that world first, as one
    step nothing interleaves with; the focus the user had is put back afterwards. A world
    the server does not have (no such name, an index past its last world) is answered
    ``error unknown_world``, and nothing runs."""

    command: Annotated[str, Meta(max_length=MAX_COMMAND_LENGTH)]
    server: ServerId | None = None
    world: _WorldRef | None = None
    id: RequestId | None = None
    #: Run on every server these glob patterns match (a bulk request; not with ``server``).
    servers: _Patterns | None = None


class GetStatus(_Message, tag="get_status"):
    server: ServerId | None = None
    id: RequestId | None = None


class GetWorlds(_Message, tag="get_worlds"):
    server: ServerId | None = None
    id: RequestId | None = None


class GetServers(_Message, tag="get_servers"):
    id: RequestId | None = None


class GetOutput(_Message, tag="get_output"):
    """Lines of the console's ring buffer after ``since`` (a ``seq``) in ``epoch``.

    The answer continues from ``since`` only when it is known to count in the server's
    current epoch; otherwise it is the whole ring (oldest line first) with ``reset: true``,
    and the client should replace what it shows. ``since`` counts in ``epoch`` when the
    client sends it (every line carries its epoch: send it); without one, in the epoch of
    the last ``output_history`` this connection received for that server; before any,
    in no known epoch, so ``reset: true`` (``since: 0`` excepted: everything comes after 0).
    A client that never sends ``epoch`` thus gets the ring once, then exactly what follows,
    and the ring again with ``reset: true`` after the agent restarted.

    One answer carries at most :data:`MAX_OUTPUT_BYTES` of lines (at least one line): a
    longer one is a page, ``complete: false``; ask again with ``since`` its last ``seq``.
    """

    server: ServerId | None = None
    since: _Count | None = None
    epoch: _Epoch | None = None
    limit: _Limit | None = None
    id: RequestId | None = None


class Subscribe(_Message, tag="subscribe"):
    """Choose which servers' events arrive (``"*"`` or a list of at most
    :data:`MAX_SUBSCRIBE_SERVERS` ids) and whether output comes one line per message (the
    seed's way) or batched."""

    servers: Literal["*"] | Annotated[list[ServerId], Meta(max_length=MAX_SUBSCRIBE_SERVERS)] = "*"
    batch: bool = False
    id: RequestId | None = None


class Container(_Message, tag="container"):
    action: ContainerAction
    server: ServerId | None = None
    id: RequestId | None = None
    #: Act on every server these glob patterns match (a bulk request; not with ``server``).
    servers: _Patterns | None = None


class Ping(_Message, tag="ping"):
    id: RequestId | None = None


class Auth(_Message, tag="auth"):
    """Present (or renew) a token in band."""

    token: Annotated[str, Meta(max_length=8192)]
    id: RequestId | None = None


ClientMessage = (
    Command | GetStatus | GetWorlds | GetServers | GetOutput | Subscribe | Container | Ping | Auth
)


# --------------------------------------------------------------------------------------
# gateway -> client: messages


class CommandOutcome(enum.StrEnum):
    """Whether a command or container action ran, as far as whoever answered knows.

    A client may send a ``not_executed`` request again as it is; after ``unknown`` it should
    look (``get_status``, ``get_worlds``, ``get_output``) before repeating anything that is
    not safe to run twice (a ban is, a ``save`` costs time, a ``restart`` is not)."""

    #: It ran: the console answered it, or the runtime carried out the action.
    EXECUTED = "executed"
    #: It did not run: refused by the gateway (bad input, no permission, rate limit, an
    #: unknown or offline server, the broker link down before sending) or by the agent
    #: before a byte reached the console (the headless stopped, its console busy or still
    #: starting past the deadline).
    NOT_EXECUTED = "not_executed"
    #: It may or may not have run: handed over and then no answer came (``timeout``,
    #: ``server_lost``, the broker link dropped mid-flight), or the console took the line
    #: and died or fell silent before answering.
    UNKNOWN = "unknown"


class CommandResponse(_Message, tag="command_response"):
    command: str
    output: str
    server: str
    id: RequestId | None = None
    outcome: CommandOutcome | None = None


class BansUpdate(_Message, tag="bans_update"):
    bans: list[Ban]
    server: str
    id: RequestId | None = None


class StatusUpdate(_Message, tag="status_update"):
    status: Status
    server: str
    id: RequestId | None = None


class WorldsUpdate(_Message, tag="worlds_update"):
    output: list[World]
    server: str
    id: RequestId | None = None


class ContainerOutput(_Message, tag="container_output"):
    """One console line; ``seq`` counts lines per server, ``epoch`` changes when the agent
    restarts (a gap in ``seq`` or a new epoch: ask ``get_output``)."""

    output: str
    server: str
    seq: int
    epoch: str


class ContainerOutputBatch(_Message, tag="container_output_batch"):
    server: str
    epoch: str
    lines: list[OutputLine]


class ServersUpdate(_Message, tag="servers_update"):
    servers: list[ServerInfo]
    id: RequestId | None = None


class OutputHistory(_Message, tag="output_history"):
    server: str
    epoch: str
    lines: list[OutputLine]
    complete: bool
    reset: bool = False
    id: RequestId | None = None


class Subscribed(_Message, tag="subscribed"):
    servers: list[str]
    batch: bool
    id: RequestId | None = None


class ContainerResponse(_Message, tag="container_response"):
    action: str
    server: str
    status: str
    id: RequestId | None = None
    outcome: CommandOutcome | None = None


class ScheduleRun(_Message, tag="schedule_run"):
    """A configured schedule ran (or was skipped) on a server: pushed to clients watching
    the server, and consumed by notifiers. ``slot`` is the slot's time (Unix seconds) that
    the run belongs to; ``outcome`` is ``ok``, ``failed`` or ``skipped``."""

    server: str
    schedule: str
    action: str
    slot: float
    outcome: str
    detail: str = ""


class BulkDone(_Message, tag="bulk_done"):
    """The last reply to a bulk ``command`` or ``container`` request, after one reply per
    matched server: ``results`` maps each server to ``ok`` or the ``error.code`` its reply
    carried (``server_offline``, ``forbidden``, ``timeout``...)."""

    results: dict[str, str]
    id: RequestId | None = None


class Pong(_Message, tag="pong"):
    id: RequestId | None = None


class Authenticated(_Message, tag="authenticated"):
    sub: str
    role: str
    expires: float | None = None
    id: RequestId | None = None


class Error(_Message, tag="error"):
    """``outcome``: set when the error answers a ``command`` or ``container`` request."""

    message: str
    code: ErrorCode
    id: RequestId | None = None
    server: str | None = None
    outcome: CommandOutcome | None = None


ServerMessage = (
    CommandResponse
    | BansUpdate
    | StatusUpdate
    | WorldsUpdate
    | ContainerOutput
    | ContainerOutputBatch
    | ServersUpdate
    | OutputHistory
    | Subscribed
    | ContainerResponse
    | ScheduleRun
    | BulkDone
    | Pong
    | Authenticated
    | Error
)

# --------------------------------------------------------------------------------------
# codec: built once, reused

_decoder: Final = msgspec.json.Decoder(ClientMessage)
_encoder: Final = msgspec.json.Encoder()


class _Probe(Struct, forbid_unknown_fields=False):
    """What can still be read from a frame that failed validation: each field as it came,
    checked one by one, so a bad ``id`` does not hide a good ``type``."""

    type: Any = None
    id: Any = None
    command: Any = None


_probe_decoder: Final = msgspec.json.Decoder(_Probe)
_CLIENT_TYPES: Final = frozenset(
    cls.__struct_config__.tag for cls in ClientMessage.__args__  # type: ignore[attr-defined]
)

#: Characters that would let one message become two console commands or rewrite the
#: terminal: every C0/C1 control (CR, LF, NUL, ESC, ...), DEL, and the Unicode line and
#: paragraph separators (Unicode categories Cc, Zl and Zp, exactly). TAB is a control too
#: and has no use in a command. The agent's console driver refuses them with this too.
CONTROL_CHARACTERS: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _check_one_line(text: str, what: str, empty: str) -> None:
    if not text.strip():
        raise ContractError(f"The {what} is empty: {empty}.")
    found = CONTROL_CHARACTERS.search(text)
    if found is not None:
        raise ContractError(
            f"The {what} contains the control character U+{ord(found.group()):04X} at "
            f"position {found.start()}: a {what} must be one line of printable text."
        )


def check_command_text(command: str) -> None:
    """Raise :class:`ContractError` when ``command`` could not be sent as one console line."""
    _check_one_line(command, "command", "send the console command as text")


def check_world_text(world: str) -> None:
    """Raise :class:`ContractError` when a ``world`` name could not be sent as part of one
    console line (it becomes ``focus <world>``: a line break there would be a second,
    unchecked command)."""
    _check_one_line(world, "world name", "give its index or its name")


def decode_client(frame: bytes | str) -> ClientMessage:
    """Decode one client frame into a request, or raise :class:`ContractError`.

    Errors carry ``unknown_type`` when the frame is a JSON object whose ``type`` is not a
    request type, else ``bad_request``; the message names the offending field. A frame
    nested deeper than :data:`MAX_NESTING` is refused before it is decoded.
    """
    if _nesting(frame) > MAX_NESTING:
        raise ContractError(f"The message is nested too deeply (at most {MAX_NESTING} levels).")
    try:
        message = _decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise _explain(frame, exc) from None
    except msgspec.DecodeError as exc:
        raise ContractError(f"The message is not valid JSON ({exc}).") from None
    except UnicodeDecodeError:
        raise ContractError("The message is not valid UTF-8 text.") from None
    except RecursionError:
        raise ContractError("The message is nested too deeply.") from None
    if isinstance(message, Command):
        try:
            check_command_text(message.command)
            if isinstance(message.world, str):
                check_world_text(message.world)
            _check_servers(message)
        except ContractError as exc:
            exc.id, exc.request_type, exc.command = message.id, "command", message.command
            raise
    elif isinstance(message, Container):
        try:
            _check_servers(message)
        except ContractError as exc:
            exc.id, exc.request_type = message.id, "container"
            raise
    return message


def _check_servers(message: Command | Container) -> None:
    """A bulk request's ``servers``: not with ``server``, not empty, each a pattern."""
    if message.servers is None:
        return
    if message.server is not None:
        raise ContractError(
            "Give either `server` (one server) or `servers` (patterns of several), not both."
        )
    check_patterns(message.servers)


#: A JSON string (escapes included): brackets inside one do not nest.
_JSON_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
#: Everything but brackets, to delete.
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")
#: More consecutive opening brackets than :data:`MAX_NESTING` (what a flood looks like).
_DEEP_RUN: Final = re.compile(r"[\[{]{%d}" % (MAX_NESTING + 1))
#: Brackets as signed bytes: an opening one +1, a closing one -1.
_DEPTH_STEP: Final = str.maketrans({"[": "\x01", "{": "\x01", "]": "\xff", "}": "\xff"})


def _nesting(frame: bytes | str) -> int:
    """How deep ``frame``'s arrays and objects nest (at most; a cheap scan, no decoding):
    brackets outside strings are summed in C (``itertools.accumulate`` over signed bytes)."""
    text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return 0  # cannot nest deeper: the common case costs two counts
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if _DEEP_RUN.search(brackets):
        return MAX_NESTING + 1  # a run of openers alone is too deep: no need to sum
    steps = array("b", brackets.translate(_DEPTH_STEP).encode("latin-1"))
    return max(itertools.accumulate(steps), default=0)


def _explain(frame: bytes | str, exc: msgspec.ValidationError) -> ContractError:
    """The :class:`ContractError` for a frame that is JSON but not a request, with what
    can still be read of it (``id``, ``type``, ``command``)."""
    try:
        probe = _probe_decoder.decode(frame)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return ContractError(
            "The message must be a JSON object with a string field `type`."
            if "$.type" in str(exc) or "Expected `object`" in str(exc)
            else f"The message does not fit the protocol: {exc}."
        )
    id = _readable_id(probe.id)
    kind = probe.type if isinstance(probe.type, str) else None
    command = probe.command if kind == "command" and isinstance(probe.command, str) else None
    if probe.type is None:
        return ContractError("The message has no `type` field.", id=id)
    if kind is None:
        return ContractError("The message must be a JSON object with a string field `type`.", id=id)
    if kind not in _CLIENT_TYPES:
        known = ", ".join(sorted(_CLIENT_TYPES))
        return ContractError(
            f"Unknown message type {kind[:64]!r}; known types: {known}.",
            code=ErrorCode.UNKNOWN_TYPE,
            id=id,
            request_type=kind,
        )
    return ContractError(
        f"Invalid {kind} message: {exc}.", id=id, request_type=kind, command=command
    )


def _readable_id(value: object) -> RequestId | None:
    """``value`` if it is a valid request id (so an error reply may echo it), else None."""
    try:
        return msgspec.convert(value, RequestId | None)  # type: ignore[arg-type]
    except msgspec.ValidationError:
        return None


def encode_server(message: ServerMessage) -> bytes:
    """Encode one gateway -> client message as JSON (UTF-8 bytes)."""
    return _encoder.encode(message)
