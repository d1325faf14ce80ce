"""Bulk requests: a ``command`` or ``container`` with ``servers`` becomes one bus request per
matched server. Pure.

Everything here is a function of its arguments (the request, the servers the registry
knows, the client's :class:`~resofleet.gateway.identity.Principal`, the pinned server):
no sockets, no clock, no bus. :mod:`resofleet.gateway.bulkrun` does the I/O around it.

Expansion (:func:`expand`). ``servers`` is a list of glob patterns
(:func:`fnmatch.fnmatchcase`: ``*``, ``?``, ``[a-z]``, ``[!a-z]``), matched against the
servers the client may see:

- a pattern with glob characters matches the servers the registry knows (online, or gone
  within its retention) that the client may see; servers outside the client's scope are
  not candidates at all, so ``"*"`` is "every server I may see";
- a plain name (no glob character) in the client's scope is taken as it is, known or not,
  as ``server`` is: a server no agent serves is answered ``server_offline`` by the bus;
  a plain name outside the scope (or not a server id) matches nothing, exactly as a name
  that does not exist (the session audits it as it does a ``server`` naming it);
- the matched servers are the union, each once, sorted. None at all is
  :class:`~resofleet.gateway.errors.NoMatch` (``unknown_server``), more than
  :data:`~resofleet.contracts.MAX_BULK_SERVERS` is
  :class:`~resofleet.gateway.errors.TooManyServers` (``bad_request``); either way nothing
  runs anywhere.

Plan (:func:`plan`). Each matched server gets the request as a one-server request would
(:func:`~resofleet.gateway.routing.route`): the role is checked per server, and a server
whose agent stopped announcing it is answered ``server_offline`` at once. Those the
gateway refuses itself are listed apart (:attr:`Plan.refused`) and never reach the bus.

Results (:func:`result_of`): a server's entry in ``bulk_done`` is ``ok`` for a reply,
else the ``error.code`` of its error.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from resofleet.contracts import (
    BusRequest,
    Command,
    Container,
    Error,
    ServerMessage,
    is_server_id,
)
from resofleet.contracts.client import MAX_BULK_SERVERS

from .errors import GatewayError, NoMatch, TooManyServers
from .identity import Principal
from .routing import Timeouts, in_scope, route

__all__ = ["GLOB_CHARACTERS", "OK", "Plan", "expand", "plan", "result_of", "single"]

#: Characters that make a pattern a glob (:mod:`fnmatch`); a pattern without any is a name.
GLOB_CHARACTERS: Final = frozenset("*?[")
#: A server's result in ``bulk_done`` when it answered without an error.
OK: Final = "ok"


@dataclass(frozen=True, slots=True)
class Plan:
    """What one bulk request does: every matched server, in order, and what each gets."""

    #: Every matched server, sorted: the keys of ``bulk_done``'s results.
    servers: tuple[str, ...]
    #: The bus requests to send, one per server the gateway does not refuse itself.
    requests: tuple[BusRequest, ...]
    #: Servers the gateway answers itself, with the refusal (forbidden, offline).
    refused: tuple[tuple[str, GatewayError], ...]
    #: Plain names outside the client's scope, or malformed: matched nothing (audited).
    hidden: tuple[str, ...] = ()


def _is_glob(pattern: str) -> bool:
    return not GLOB_CHARACTERS.isdisjoint(pattern)


def expand(
    patterns: Sequence[str],
    *,
    known: Iterable[str],
    pinned: str | None,
    principal: Principal,
    limit: int = MAX_BULK_SERVERS,
) -> tuple[list[str], list[str]]:
    """The servers ``patterns`` match (sorted) and the plain names outside the client's
    scope, or :class:`NoMatch` / :class:`TooManyServers` (see the module docstring)."""
    visible = [s for s in known if in_scope(s, pinned=pinned, principal=principal)]
    matched: set[str] = set()
    hidden: list[str] = []
    for pattern in dict.fromkeys(patterns):  # each once, in the order given
        if _is_glob(pattern):
            matched.update(s for s in visible if fnmatch.fnmatchcase(s, pattern))
        elif is_server_id(pattern) and in_scope(pattern, pinned=pinned, principal=principal):
            matched.add(pattern)
        else:
            hidden.append(pattern)
    if not matched:
        raise NoMatch(patterns, hidden=hidden)
    if len(matched) > limit:
        raise TooManyServers(len(matched), limit)
    return sorted(matched), hidden


def single(message: Command | Container, server: str) -> Command | Container:
    """The one-server request ``message`` is for ``server``."""
    return msgspec.structs.replace(message, server=server, servers=None)


def plan(
    message: Command | Container,
    *,
    known: Iterable[str],
    online: Iterable[str],
    principal: Principal,
    pinned: str | None = None,
    offline: Mapping[str, float] | None = None,
    timeouts: Timeouts = Timeouts(),
    client: str = "",
    limit: int = MAX_BULK_SERVERS,
) -> Plan:
    """The :class:`Plan` of a bulk request, or the :class:`GatewayError` that refuses it
    whole. ``known``: every server the registry lists; ``online`` and ``offline`` as
    :func:`~resofleet.gateway.routing.route` takes them."""
    assert message.servers is not None, "plan() takes bulk requests only"
    servers, hidden = expand(
        message.servers, known=known, pinned=pinned, principal=principal, limit=limit
    )
    online = tuple(online)
    requests: list[BusRequest] = []
    refused: list[tuple[str, GatewayError]] = []
    for server in servers:
        try:
            requests.append(
                route(
                    single(message, server), pinned=pinned, online=online, principal=principal,
                    offline=offline, timeouts=timeouts, client=client,
                )
            )
        except GatewayError as exc:
            refused.append((server, exc))
    return Plan(
        servers=tuple(servers), requests=tuple(requests), refused=tuple(refused),
        hidden=tuple(hidden),
    )


def result_of(reply: ServerMessage) -> str:
    """A server's entry in ``bulk_done``: ``ok``, or the code of the error it got."""
    return str(reply.code) if isinstance(reply, Error) else OK
