"""Bus messages: what gateways and agents exchange over RabbitMQ or the in-process bus.

Encoded as msgpack; every envelope carries ``v`` (:data:`BUS_VERSION`). A peer that
receives a version it does not know answers or logs an error instead of guessing.
Replies and events carry client protocol messages (:mod:`resofleet.contracts.client`) as their
body, so the agent builds the message a client receives and the gateway only adds the
request ``id`` before encoding it as JSON once.

A request carries what the client sent within the client protocol's own bounds (the
command's length, a world name's length, every integer within
:data:`~resofleet.contracts.client.MAX_SAFE_INTEGER`): the gateway has checked them, and the
decoder checks them again, so no peer on the bus can hand an agent more.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import Meta, Struct

from .client import (
    BansUpdate,
    CommandResponse,
    ContainerAction,
    ContainerOutputBatch,
    ContainerResponse,
    Error,
    MAX_COMMAND_LENGTH,
    OutputHistory,
    ScheduleRun,
    StatusUpdate,
    WorldsUpdate,
    _Count,
    _Epoch,
    _Limit,
    _WorldRef,
)
from .errors import ContractError
from .topology import EventKind

#: Seconds a request may wait, or between two announcements, at most: a day. Finite and
#: positive, so a peer cannot hand a timer NaN or infinity.
_Seconds = Annotated[float, Meta(gt=0, le=86_400)]
#: Epoch seconds (wall clock), finite: up to the year 2096.
_EpochSeconds = Annotated[float, Meta(ge=0, le=4e9)]

__all__ = [
    "Announce",
    "BUS_VERSION",
    "MISSED_ANNOUNCEMENTS",
    "BusRequest",
    "BusEvent",
    "BusReply",
    "ContainerRequest",
    "Discover",
    "OutputRequest",
    "PresenceMessage",
    "ReplyBody",
    "RequestBody",
    "Revoke",
    "RunCommand",
    "ServerPresence",
    "ServerState",
    "StatusRequest",
    "WorldsRequest",
    "decode_event",
    "decode_presence",
    "decode_reply",
    "decode_request",
    "encode_bus",
]

BUS_VERSION: Final = 1


class _Tagged(Struct, tag_field="op", forbid_unknown_fields=False, array_like=False):
    pass


# --------------------------------------------------------------------------------------
# requests (gateway -> agent, on the commands exchange)


class RunCommand(_Tagged, tag="command"):
    command: Annotated[str, Meta(max_length=MAX_COMMAND_LENGTH)]
    world: _WorldRef | None = None


class StatusRequest(_Tagged, tag="status"):
    pass


class WorldsRequest(_Tagged, tag="worlds"):
    pass


class OutputRequest(_Tagged, tag="output"):
    """``get_output``; the agent's rule for ``since`` without ``epoch`` is
    :meth:`resofleet.agent.output.OutputLog.history`'s."""

    since: _Count | None = None
    epoch: _Epoch | None = None
    limit: _Limit | None = None


class ContainerRequest(_Tagged, tag="container"):
    action: ContainerAction


RequestBody = RunCommand | StatusRequest | WorldsRequest | OutputRequest | ContainerRequest


class BusRequest(Struct, forbid_unknown_fields=False):
    """One request for one server. ``timeout`` (seconds) is how long the requester waits;
    the agent counts it from the request's arrival, so no clocks are compared.
    ``deadline`` (epoch seconds, wall clock) is when the requester stops waiting, stamped
    by the requester's bus as it sends: the agent also drops a request whose deadline has
    passed (less a bounded clock skew), so a request the broker held back is never run
    after its requester was told ``timeout``. Requesters that predate the field send
    none (``None``: only the relative timeout applies); agents that predate it ignore it.
    ``sub``/``role``/``client`` say who asked, for the audit log."""

    server: str
    body: RequestBody
    timeout: _Seconds
    sub: str = ""
    role: str = ""
    client: str = ""
    v: int = BUS_VERSION
    deadline: _EpochSeconds | None = None


ReplyBody = (
    CommandResponse
    | BansUpdate
    | StatusUpdate
    | WorldsUpdate
    | OutputHistory
    | ContainerResponse
    | Error
)


class BusReply(Struct, forbid_unknown_fields=False):
    """The agent's answer: a client message for the gateway to forward (with the id)."""

    body: ReplyBody
    v: int = BUS_VERSION


# --------------------------------------------------------------------------------------
# events (agent -> gateways, on the events exchange, key <server>.<kind>)


class ServerState(msgspec.Struct, tag="server_state", tag_field="type", forbid_unknown_fields=False):
    """A server's lifecycle: created, starting, ready, running, exited, restarting,
    crashloop (the agent stopped restarting it); and its console's health: unhealthy (it
    missed several polls in a row), healthy (it answers again)."""

    server: str
    state: str
    detail: str = ""


EventBody = (
    ContainerOutputBatch | StatusUpdate | WorldsUpdate | BansUpdate | ServerState | ScheduleRun
)


class BusEvent(Struct, forbid_unknown_fields=False):
    server: str
    kind: EventKind
    body: EventBody
    v: int = BUS_VERSION


# --------------------------------------------------------------------------------------
# presence (fanout): agents announce, gateways ask, revocations travel


class ServerPresence(Struct, forbid_unknown_fields=False):
    server: str
    status: str
    worlds: int = 0
    users: int = 0
    runtime: str = ""


#: Announcement intervals a server may miss before whoever listens (a gateway's registry,
#: a notifier) takes its agent for gone. One missed announcement is a hiccup (a busy
#: broker, a GC pause); three is an agent that is gone.
MISSED_ANNOUNCEMENTS: Final = 3


class Announce(_Tagged, tag="announce"):
    """An agent's servers. Sent every ``interval`` seconds and in answer to ``discover``;
    a listener takes the agent for gone after :data:`MISSED_ANNOUNCEMENTS` missed ones."""

    agent: str
    host: str
    servers: list[ServerPresence]
    interval: _Seconds
    v: int = BUS_VERSION


class Discover(_Tagged, tag="discover"):
    gateway: str
    v: int = BUS_VERSION


class Revoke(_Tagged, tag="revoke"):
    """A token id that every gateway must refuse from now on (until ``until``, epoch s)."""

    jti: str
    until: _EpochSeconds
    v: int = BUS_VERSION


PresenceMessage = Announce | Discover | Revoke

# --------------------------------------------------------------------------------------
# codec

_encoder: Final = msgspec.msgpack.Encoder()
_request_decoder: Final = msgspec.msgpack.Decoder(BusRequest)
_reply_decoder: Final = msgspec.msgpack.Decoder(BusReply)
_event_decoder: Final = msgspec.msgpack.Decoder(BusEvent)
_presence_decoder: Final = msgspec.msgpack.Decoder(PresenceMessage)


def encode_bus(message: BusRequest | BusReply | BusEvent | PresenceMessage) -> bytes:
    return _encoder.encode(message)


def _decode(decoder: msgspec.msgpack.Decoder, data: bytes, what: str):  # type: ignore[no-untyped-def]
    try:
        message = decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ContractError(f"Undecodable bus {what}: {exc}.") from None
    if message.v != BUS_VERSION:
        raise ContractError(f"Bus {what} has version {message.v}; this build speaks {BUS_VERSION}.")
    return message


def decode_request(data: bytes) -> BusRequest:
    return _decode(_request_decoder, data, "request")


def decode_reply(data: bytes) -> BusReply:
    return _decode(_reply_decoder, data, "reply")


def decode_event(data: bytes) -> BusEvent:
    return _decode(_event_decoder, data, "event")


def decode_presence(data: bytes) -> PresenceMessage:
    return _decode(_presence_decoder, data, "presence message")
