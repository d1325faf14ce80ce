"""Routing: a decoded client request becomes a bus request for one server. Pure.

Everything here is a function of its arguments (the request, the pinned server, the
servers the registry sees online, the client's :class:`~resofleet.gateway.identity.Principal`):
no sockets, no clock, no bus. The session does the I/O around it.

Server selection (client protocol v1):

- ``server`` given: it must be a well-formed id the client may see, else
  ``unknown_server`` (a client never learns that a server outside its scope exists). On a
  pinned connection (``/ws/<id>``) only the pinned id is in scope. A well-formed id that
  the registry has not seen still goes to the bus, which answers ``server_offline`` at once
  when no agent serves it: another gateway replica may know it, and agents come and go.
- ``server`` absent: the pinned server; else the one server online in the client's scope;
  none -> ``server_offline``; several -> ``ambiguous_server`` listing them.
- A server whose agent stopped announcing it (three missed announcements) is answered
  ``server_offline`` at once, without asking the bus: an agent cut off by a network
  partition may leave its queue at the broker until the broker's heartbeat gives up on it,
  and requests sent there would only time out.

``get_output`` with ``since`` and no ``epoch`` gets the epoch of the last
``output_history`` the connection received for that server (``epochs``), so the agent
reads ``since`` in the epoch the client last saw an answer from: the same epoch continues
after ``since``, another one (the agent restarted) is a ``reset``. With none known the
request goes as it came and the agent answers ``reset`` (see
:meth:`resofleet.agent.output.OutputLog.history`).

Replies: an ``output_history`` passes on at most
:data:`~resofleet.contracts.client.MAX_OUTPUT_BYTES` of lines (:func:`page`): agents bound
their own, and the gateway bounds what it forwards whatever agent answered.

Authorisation is checked here too, in :func:`authorize`, and nowhere else.

Views: what a reply shows depends on who reads it (:func:`viewed`). Below
:data:`HOSTS_ROLE` a client sees no agent host name or agent name (``servers_update``), no
process id and no host memory total (``status_update``); below :data:`MACHINE_IDS_ROLE` no
machine ids of bans (``bans_update``). The fields stay, emptied: the published messages
keep their shape.

Outcome: replies to the requests that change something (:data:`STATING_TYPES`, commands
and container actions) say whether they ran. An agent states it in its replies;
:func:`answered` fills it in for an agent from before the field (its ``command_response``
or ``container_response`` ran; its ``error`` may have come after the console took the
line, so ``unknown``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, TypeVar

import msgspec

from resofleet.contracts import (
    CONTAINER_ROLE,
    BansUpdate,
    BusRequest,
    ClientMessage,
    Command,
    CommandOutcome,
    CommandResponse,
    Container,
    ContainerOutput,
    ContainerOutputBatch,
    ContainerRequest,
    ContainerResponse,
    Error,
    GetOutput,
    GetStatus,
    GetWorlds,
    OutputHistory,
    OutputRequest,
    RequestBody,
    RequestId,
    Role,
    RunCommand,
    ServerInfo,
    ServersUpdate,
    StatusRequest,
    StatusUpdate,
    Subscribe,
    WorldsRequest,
    command_name,
    is_server_id,
    required_role,
)

from resofleet.contracts.client import MAX_OUTPUT_BYTES
from resofleet.contracts.deadlines import COMMAND_DEADLINE, LONG_COMMAND_DEADLINES

from .errors import (
    AmbiguousServer,
    Forbidden,
    NoServer,
    ScopeRefusal,
    ServerGone,
    UnknownServer,
)
from .identity import Principal

__all__ = [
    "BUS_TYPES",
    "CONTAINER_TIMEOUT",
    "FULL_VIEW",
    "HOSTS_ROLE",
    "MACHINE_IDS_ROLE",
    "View",
    "COMMAND_TIMEOUT",
    "OUTPUT_TIMEOUT",
    "QUERY_TIMEOUT",
    "LONG_COMMAND_TIMEOUTS",
    "STATING_TYPES",
    "TIMEOUT_MARGIN",
    "Timeouts",
    "Watch",
    "answered",
    "authorize",
    "check_server",
    "in_scope",
    "output_lines",
    "page",
    "pick_server",
    "route",
    "server_list",
    "states_outcome",
    "view_of",
    "viewed",
    "viewed_as",
    "visible_servers",
    "watch_for",
    "with_id",
]

M = TypeVar("M", bound=msgspec.Struct)

#: Seconds beyond the agent's own deadline for a command before the gateway gives up: the
#: trip over the bus both ways and the agent resynchronising the console before it
#: answers ``timeout`` itself (its answer says more than the gateway's would).
TIMEOUT_MARGIN: Final = 5.0
#: Seconds an ordinary console command may take, end to end: the agent's deadline
#: (:mod:`resofleet.contracts.deadlines`, shared with the agent) plus the margin. A request that
#: finds the console still starting waits within this.
COMMAND_TIMEOUT: Final = COMMAND_DEADLINE + TIMEOUT_MARGIN
#: Seconds for the commands that legitimately run long, by lowercase name: the agent's
#: deadline for each plus the margin.
LONG_COMMAND_TIMEOUTS: Final[Mapping[str, float]] = MappingProxyType(
    {name: seconds + TIMEOUT_MARGIN for name, seconds in LONG_COMMAND_DEADLINES.items()}
)
#: Seconds for ``get_status`` and ``get_worlds``: a fresh stats sample or a few console
#: queries (``worlds`` then ``users`` per world), answered live, never from a cache.
QUERY_TIMEOUT: Final = 15.0
#: Seconds for ``get_output``: the agent's ring buffer, no console involved.
OUTPUT_TIMEOUT: Final = 5.0
#: Seconds for a container start/stop/restart: Docker waits 10 s for a clean stop before
#: killing, then the headless takes a while to boot; two minutes covers a slow host.
CONTAINER_TIMEOUT: Final = 120.0

#: Request types that travel to an agent (the rest the gateway answers itself).
BUS_TYPES: Final = (Command, GetStatus, GetWorlds, GetOutput, Container)
#: Request types whose replies and errors state a :class:`~resofleet.contracts.CommandOutcome`:
#: the ones that change something (a read has nothing to state).
STATING_TYPES: Final = (Command, Container)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-kind request timeouts in seconds (see the module constants for the reasons)."""

    command: float = COMMAND_TIMEOUT
    long_commands: Mapping[str, float] = field(default_factory=lambda: LONG_COMMAND_TIMEOUTS)
    query: float = QUERY_TIMEOUT
    output: float = OUTPUT_TIMEOUT
    container: float = CONTAINER_TIMEOUT

    def for_command(self, command: str) -> float:
        return self.long_commands.get(command_name(command), self.command)


@dataclass(frozen=True, slots=True)
class Watch:
    """Which servers' events a session receives: all it may see, or a fixed set."""

    all: bool = True
    servers: frozenset[str] = field(default_factory=frozenset)

    def covers(self, server: str, principal: Principal) -> bool:
        if not principal.may_see(server):
            return False
        return self.all or server in self.servers

    def listed(self) -> list[str]:
        """As a ``subscribed`` reply names it."""
        return ["*"] if self.all else sorted(self.servers)


# --------------------------------------------------------------------------------------
# server selection and scope


def _in_scope(server: str, *, pinned: str | None, principal: Principal) -> bool:
    return (pinned is None or server == pinned) and principal.may_see(server)


def visible_servers(
    online: Iterable[str], *, pinned: str | None, principal: Principal
) -> list[str]:
    """The online servers this client may see, sorted."""
    return sorted(s for s in online if _in_scope(s, pinned=pinned, principal=principal))


def check_server(server: str, *, pinned: str | None, principal: Principal) -> str:
    """``server`` if it is well-formed and in scope, else :class:`UnknownServer` saying
    which of the two it is not."""
    if not is_server_id(server):
        raise UnknownServer(server, ScopeRefusal.MALFORMED)
    if not _in_scope(server, pinned=pinned, principal=principal):
        if pinned is not None and principal.may_see(server):
            raise UnknownServer(server, ScopeRefusal.PINNED_ELSEWHERE, pinned=pinned)
        raise UnknownServer(server, ScopeRefusal.OUT_OF_SCOPE)
    return server


def pick_server(
    requested: str | None,
    *,
    pinned: str | None,
    online: Iterable[str],
    principal: Principal,
) -> str:
    """The server a request is for (see the module docstring for the rules)."""
    if requested is not None:
        return check_server(requested, pinned=pinned, principal=principal)
    if pinned is not None:  # /ws/<id> out of scope is answered as if <id> did not exist
        return check_server(pinned, pinned=pinned, principal=principal)
    visible = visible_servers(online, pinned=None, principal=principal)
    if len(visible) == 1:
        return visible[0]
    if not visible:
        raise NoServer()
    raise AmbiguousServer(visible)


def authorize(principal: Principal, message: ClientMessage, server: str) -> None:
    """Raise :class:`Forbidden` when ``principal`` may not send ``message`` to ``server``."""
    if isinstance(message, Command):
        needed = required_role(message.command)
        what = f"the console command {command_name(message.command)!r}"
    elif isinstance(message, Container):
        needed = CONTAINER_ROLE
        what = f"container {message.action}"
    else:
        needed = Role.VIEWER
        what = "this request"
    if not principal.may(needed):
        raise Forbidden(what, needed=needed, held=principal.role, server=server)


# --------------------------------------------------------------------------------------
# translation


def _body(message: ClientMessage) -> tuple[RequestBody, Literal["command", "query", "output", "container"]]:
    match message:
        case Command(command=command, world=world):
            return RunCommand(command=command, world=world), "command"
        case GetStatus():
            return StatusRequest(), "query"
        case GetWorlds():
            return WorldsRequest(), "query"
        case GetOutput(since=since, epoch=epoch, limit=limit):
            return OutputRequest(since=since, epoch=epoch, limit=limit), "output"
        case Container(action=action):
            return ContainerRequest(action=action), "container"
    raise TypeError(f"{type(message).__name__} does not travel over the bus")


def route(
    message: ClientMessage,
    *,
    pinned: str | None,
    online: Iterable[str],
    principal: Principal,
    offline: Mapping[str, float] | None = None,
    epochs: Mapping[str, str] | None = None,
    timeouts: Timeouts = Timeouts(),
    client: str = "",
) -> BusRequest:
    """The bus request for a request of :data:`BUS_TYPES`, or a :class:`GatewayError`.

    ``offline``: servers whose agents stopped announcing them, with the seconds since.
    ``epochs``: per server, the epoch of the last ``output_history`` this connection
    received, for a ``get_output`` with ``since`` and no ``epoch`` (see the module
    docstring).
    """
    server = pick_server(
        getattr(message, "server", None), pinned=pinned, online=online, principal=principal
    )
    authorize(principal, message, server)
    if offline and server in offline:
        raise ServerGone(server, offline[server])
    body, kind = _body(message)
    if isinstance(body, OutputRequest) and body.since is not None and body.epoch is None:
        known = epochs.get(server) if epochs else None
        if known is not None:
            body = msgspec.structs.replace(body, epoch=known)
    if kind == "command":
        assert isinstance(message, Command)
        timeout = timeouts.for_command(message.command)
    else:
        timeout = getattr(timeouts, kind)
    return BusRequest(
        server=server,
        body=body,
        timeout=timeout,
        sub=principal.sub,
        role=principal.role.label,
        client=client,
    )


def watch_for(
    message: Subscribe, *, pinned: str | None, principal: Principal
) -> Watch:
    """The :class:`Watch` a ``subscribe`` asks for; every named server must be in scope."""
    if message.servers == "*":
        return Watch(all=pinned is None, servers=frozenset({pinned}) if pinned else frozenset())
    named = [check_server(s, pinned=pinned, principal=principal) for s in message.servers]
    return Watch(all=False, servers=frozenset(named))


def with_id(body: M, id: RequestId | None) -> M:
    """``body`` with the request's ``id``; a copy, since bus messages may be shared."""
    if id is None or getattr(body, "id", None) == id:
        return body
    return msgspec.structs.replace(body, id=id)


def states_outcome(message: ClientMessage | None) -> bool:
    """Whether the replies to ``message`` state an outcome (see :data:`STATING_TYPES`)."""
    return isinstance(message, STATING_TYPES)


def answered(body: M, id: RequestId | None, *, states: bool) -> M:
    """An agent's reply as the client receives it: with the request's ``id`` and, when the
    request ``states`` an outcome, one (an agent from before the field omits it: its
    command or container response ran, its error may have come after the console took the
    line). A copy when anything changes: bus messages may be shared."""
    if states and getattr(body, "outcome", False) is None:
        outcome = (
            CommandOutcome.UNKNOWN if isinstance(body, Error) else CommandOutcome.EXECUTED
        )
        changes: dict[str, object] = {"outcome": outcome}
        if id is not None:
            changes["id"] = id
        assert isinstance(body, (CommandResponse, ContainerResponse, Error))
        return msgspec.structs.replace(body, **changes)  # type: ignore[return-value]
    return with_id(body, id)


#: Bytes of JSON around one line of ``output_history`` (``{"seq":123456,"output":""},``),
#: counted with its text against the reply bound (the agent counts the same way).
LINE_JSON: Final = 32


def page(reply: OutputHistory, max_bytes: int = MAX_OUTPUT_BYTES) -> OutputHistory:
    """``reply`` cut to the lines, from the first, whose UTF-8 text (plus :data:`LINE_JSON`
    each) fits in ``max_bytes``, ``complete`` false when any were left (the client asks
    again ``since`` the last one); at least one line. ``reply`` itself when it fits."""
    total = 0
    for n, line in enumerate(reply.lines):
        total += len(line.output.encode("utf-8", "surrogatepass")) + LINE_JSON
        if total > max_bytes:
            return msgspec.structs.replace(reply, lines=reply.lines[: max(n, 1)], complete=False)
    return reply


def output_lines(batch: ContainerOutputBatch) -> list[ContainerOutput]:
    """One ``container_output`` per console line, as the seed's clients expect."""
    return [
        ContainerOutput(output=line.output, server=batch.server, seq=line.seq, epoch=batch.epoch)
        for line in batch.lines
    ]


def server_list(
    infos: Sequence[ServerInfo], *, pinned: str | None, principal: Principal
) -> list[ServerInfo]:
    """The entries of ``servers_update`` this client may see."""
    return [i for i in infos if _in_scope(i.server, pinned=pinned, principal=principal)]


# --------------------------------------------------------------------------------------
# views


#: Least role that sees where servers run: host and agent names, process ids, host memory
#: totals (operators run the hosts; a viewer of a hosting provider is a tenant).
HOSTS_ROLE: Final = Role.OPERATOR
#: Least role that sees the machine ids of bans (moderators ban and unban by them).
MACHINE_IDS_ROLE: Final = Role.MODERATOR


def in_scope(server: str, *, pinned: str | None, principal: Principal) -> bool:
    """Whether this client may see ``server`` (its scope and its pinned server)."""
    return _in_scope(server, pinned=pinned, principal=principal)


#: What a client may see of host details: (hosts, pids and host memory; ban machine ids).
View = tuple[bool, bool]
#: The view of operators and admins: nothing hidden.
FULL_VIEW: Final[View] = (True, True)


def view_of(principal: Principal | None) -> View:
    """What ``principal`` may see (nothing of either without a principal)."""
    if principal is None:
        return (False, False)
    return (principal.may(HOSTS_ROLE), principal.may(MACHINE_IDS_ROLE))


def viewed(message: M, principal: Principal) -> M:
    """``message`` as ``principal`` may see it (see *Views* above): the same object when
    nothing is hidden from it, else a copy with the hidden fields emptied."""
    return viewed_as(message, view_of(principal))


def viewed_as(message: M, view: View) -> M:
    """``message`` as a client with ``view`` may see it (see :func:`viewed`)."""
    hosts, machine_ids = view
    if isinstance(message, ServersUpdate):
        if hosts:
            return message
        return msgspec.structs.replace(  # type: ignore[return-value]
            message, servers=[_hide_host(i) for i in message.servers]
        )
    if isinstance(message, StatusUpdate):
        if hosts:
            return message
        status = msgspec.structs.replace(
            message.status, id="", memory_total="", memory_total_bytes=0
        )
        return msgspec.structs.replace(message, status=status)  # type: ignore[return-value]
    if isinstance(message, BansUpdate):
        if machine_ids or not any(b.machineIds for b in message.bans):
            return message
        bans = [msgspec.structs.replace(b, machineIds=[]) for b in message.bans]
        return msgspec.structs.replace(message, bans=bans)  # type: ignore[return-value]
    return message


def _hide_host(info: ServerInfo) -> ServerInfo:
    if not info.host and not info.agent:
        return info
    return msgspec.structs.replace(info, host="", agent="")
