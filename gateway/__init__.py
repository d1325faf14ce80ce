"""The gateway: the WebSocket edge in front of every server of a fleet.

A gateway keeps no state of its own: it learns the fleet from the agents' presence on the
bus, turns each client request into a bus request for one server, and fans server events
out to the clients watching them. Run as many replicas as you like behind a load balancer.

Endpoints
    ``/ws`` sees every server the client may see; ``/ws/<server>`` is pinned to one server:
    requests without ``server`` go to it, only its events arrive, and ``get_servers`` lists
    only it (so a client written against the seed works unchanged against one server of a
    fleet). On a pinned connection a request naming another server is ``unknown_server``.
    ``GET /healthz`` (alive) and ``GET /readyz`` (bus connected; 503 with the reason
    otherwise). ``GET /`` is the dashboard (:mod:`resofleet.gateway.dashboard`), a client
    of ``/ws`` like any other. Frames over 64 KiB close the connection with 1009.

Server selection
    ``server`` absent: the pinned server, else the one server online; none online is
    ``server_offline`` and several is ``ambiguous_server`` listing them. A malformed id, or
    one outside the client's scope, is ``unknown_server``. A well-formed id this replica
    has not seen still goes to the bus, which answers ``server_offline`` at once when no
    agent serves it (typically in about a millisecond).

Registry
    Servers come from the agents' announcements (every 2 s); a new gateway broadcasts
    ``discover`` and knows the fleet within a round trip. A server not announced for three
    intervals (or dropped from its agent's announcement) is listed ``online: false,
    status: "offline"`` in ``servers_update`` for ten minutes, then forgotten; it no longer
    counts when choosing the default server, and requests to it are answered
    ``server_offline`` at once by the gateway (an agent cut off by a partition may leave
    its queue at the broker for a while, where requests would only time out).

Requests and replies
    Requests run concurrently per connection (at most 32 in flight; past that the gateway
    stops reading that client's socket until one finishes). Replies carry the request's
    ``id`` and ``server``. ``ping``, ``get_servers``, ``subscribe`` and ``auth`` are
    answered by the gateway itself. Timeouts, counted by the agent from the request's
    arrival, are the agent's own per-command deadline plus 5 s, so the agent's ``timeout``
    (after it resynchronised the console) is the one a client sees: commands 15 s;
    ``startWorldURL``, ``startWorldTemplate``, ``importMinecraft`` 125 s; ``save``,
    ``restart``, ``shutdown``, ``import`` 65 s; ``close`` 35 s; ``get_status`` and
    ``get_worlds`` 15 s; ``get_output`` 5 s; ``container`` 120 s. A request made while a
    console is starting waits for it within its timeout (the agent does the waiting). An
    agent that dies with a request in flight is noticed at once (its queue disappears;
    about 0.2 s over RabbitMQ), or after three missed announcements when it is frozen:
    its requests are answered ``server_lost``. Replies to commands and container actions,
    and their errors, carry ``outcome``: ``executed``, ``not_executed`` or ``unknown``.

Bulk requests
    A ``command`` or ``container`` with ``servers`` (glob patterns, not with ``server``)
    runs on every server the patterns match within the client's scope
    (:mod:`resofleet.gateway.bulk`, :mod:`resofleet.gateway.bulkrun`): one reply or
    ``error`` per server (its ``server``, the request's ``id``), then ``bulk_done`` with
    every server's result; at most ``[gateway] bulk_concurrency`` (16) servers at once.
    Nothing matched is one ``error unknown_server``; more than 256 servers ``bad_request``.

Events
    ``container_output`` one line per message by default; after ``subscribe`` with
    ``"batch": true``, ``container_output_batch``. ``status_update``, ``worlds_update``
    and ``bans_update`` when they change. ``subscribe`` with ``"servers": "*"`` (the
    default) follows every server the client may see, including ones that appear later;
    a list follows exactly those ids (each must be well-formed and in scope). When a
    server is lost or comes back, its watchers get ``servers_update`` (and a
    ``status_update`` saying ``offline`` when lost). Each event is encoded once per form.

Slow clients
    A client whose unsent data exceeds 1 MiB (beyond the kernel's socket buffer) is
    closed with 1013 ("try again later") and counted; the others do not notice. After a
    reconnect, ``get_output`` with ``since`` (the last ``seq`` seen) and ``epoch`` returns
    the lines it missed.

Bad input
    Invalid JSON, a binary frame, a missing field, a wrong type or an integer beyond
    ±(2**53 - 1): ``error bad_request``; an unknown type: ``error unknown_type``; a command
    with a control character (CR, LF, NUL, ...): ``error bad_request``, and it never
    reaches a console; a ``world`` the server does not have: ``error unknown_world`` (from
    the agent), nothing run. The connection stays open in every case but an oversize frame.

Identity and security (:class:`Security`; default open mode)
    With a secret, a client presents a signed token (``Authorization: Bearer``, ``?token=``,
    the cookie ``GET /login?token=`` sets, or a first ``auth`` message); each session has a
    :class:`Principal` (who, role, server patterns), checked in one place
    (:mod:`resofleet.gateway.routing`). Handshake refusals are HTTP 401 (token refused), 403 (browser
    origin), 429 (connections per address); without a token the client must send ``auth``
    within 5 s, else close 4401; an expired token closes 4401, a revoked one 4403. Viewer,
    moderator and operator sessions are rate-limited (``error rate_limited``). Every
    refusal goes to the audit log. Open mode (no secret, loopback only): every session is
    an admin seeing all servers, and ``auth`` answers with that identity.

Shutdown
    On SIGTERM/SIGINT: stop accepting, close every session with 1001, wait for them
    (at most 7 s), stop the bus subscriptions; then the command closes the bus.
"""

from __future__ import annotations

from .app import Gateway
from .errors import (
    CLOSE_GOING_AWAY,
    CLOSE_REVOKED,
    CLOSE_TOO_SLOW,
    CLOSE_UNAUTHENTICATED,
    GatewayError,
)
from .identity import OPEN_ADMIN, Principal
from .routing import Timeouts
from .security import AUTH_TIMEOUT, Security
from .settings import DEFAULT_HOST, DEFAULT_PORT

__all__ = [
    "AUTH_TIMEOUT",
    "CLOSE_GOING_AWAY",
    "CLOSE_REVOKED",
    "CLOSE_TOO_SLOW",
    "CLOSE_UNAUTHENTICATED",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Gateway",
    "GatewayError",
    "OPEN_ADMIN",
    "Principal",
    "Security",
    "Timeouts",
]
