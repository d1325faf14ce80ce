"""One session per WebSocket connection.

A session reads frames one at a time and answers each:

- a binary frame, invalid JSON, a missing field or a wrong type: ``error bad_request``;
  an unknown ``type``: ``error unknown_type``; the connection stays open (a frame over the
  size limit is closed with 1009 by websockets before it gets here);
- ``ping``, ``get_servers``, ``subscribe`` and ``auth`` are answered by the gateway itself,
  in order;
- a ``command`` or ``container`` with ``servers`` (bulk) is run by
  :mod:`resofleet.gateway.bulkrun`, as one request in flight;
- ``command``, ``get_status``, ``get_worlds``, ``get_output`` and ``container`` are routed
  (:mod:`resofleet.gateway.routing`) and sent over the bus as tasks, so a slow command does not hold
  up a ``ping`` or a request to another server. Replies go out as they come, matched by the
  ``id`` the client gave. At most ``max_in_flight`` requests run per connection; past that
  the session stops reading until one finishes, so a client that floods only waits on
  itself (TCP backpressure), never grows the gateway's memory.

Outcome. Every reply and error for a ``command`` or ``container`` request says whether it
ran (``outcome``): the session states ``not_executed`` for what it refuses itself, and
for a failure on the bus asks :func:`~resofleet.gateway.errors.outcome_for`, telling it
whether the request had been handed over (the bus was connected when it was sent); an
agent's reply states its own, and :func:`~resofleet.gateway.routing.answered` fills one in for
an agent from before the field.

Requests travel through :class:`~resofleet.gateway.liveness.Liveness`, which fails them at
once with ``server_lost`` when their server's agent is lost. A session also sends its
client an unrequested ``servers_update`` when a server it watches comes online or goes
(:meth:`Session.servers_changed`, called by the fan-out).

When the connection ends, its requests still in flight are cancelled (nobody is left to
read their replies; a command already taken by an agent still runs there).

Output epochs. The session remembers, per server, the epoch of the last
``output_history`` it passed on, and a ``get_output`` with ``since`` but no ``epoch`` is
sent with that one (:func:`~resofleet.gateway.routing.route`): a client that never sends
``epoch`` continues where its last answer ended, and gets ``reset`` once the agent has
restarted. Only answers count, not the live stream: a ``since`` is read in an epoch this
connection answered for, never guessed from lines that may belong to a later epoch than
the one the client counts in. At most one entry per server that answered.

Backpressure (:mod:`resofleet.gateway.backpressure`): a client that does not read has no
more requests read, and no more replies written (1013), past its bound of unsent bytes.

Identity. A session starts with the :class:`~resofleet.gateway.identity.Principal` its handshake
established, or with none (the gateway has a secret and the client presented no token):

- without a principal only ``auth`` and ``ping`` are answered; every other request gets
  ``error unauthenticated`` (with its id), no event is sent, and without a valid ``auth``
  within the auth timeout the connection is closed with 4401 "authentication required";
- ``auth`` checks the token (signature, expiry, revocation) and answers ``authenticated
  {sub, role, expires}``; a refused one is ``error unauthenticated`` saying why, and the
  session keeps the principal it had. A new ``auth`` renews (or changes) the identity in
  band: the new principal replaces the old, with its own scope;
- when the principal's token expires without renewal the connection is closed with 4401
  "token expired"; when it is revoked, with 4403 "token revoked" (by the gateway).

Rate limit. Sessions of a viewer, moderator or operator have a token bucket
(:mod:`resofleet.gateway.ratelimit`); sessions not authenticated yet have their own, smaller
one (``pre_auth_rate``/``pre_auth_burst``), replaced by the principal's at the first good
``auth``. Every frame spends one, ``auth`` included (a long ``subscribe``
more: :func:`~resofleet.gateway.ratelimit.cost`); an empty bucket answers ``error
rate_limited`` saying the limit and when to retry. Nothing is dropped silently: every
request gets its reply or an error.

Before authentication frames are small (the edge sets ``pre_auth_frame``; a good ``auth``
lifts it to 64 KiB), and refusals are audited per client address with a prefix of the
text (:meth:`~resofleet.gateway.guard.Guard.refuse_unauthenticated`).

Audit. Every refused attempt is recorded through the :class:`~resofleet.gateway.guard.Guard`:
unauthenticated requests, forbidden ones, requests naming a server outside the client's
scope (``out_of_scope``, though the client reads ``unknown_server``), rate-limited ones,
and rejected input (bad JSON, unknown types, control characters, binary frames, and a
frame over 64 KiB, which websockets closes with 1009).
"""

from __future__ import annotations

import asyncio
import logging
import time
from time import perf_counter
from collections.abc import Iterable
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import OPEN

from resofleet.bus import Bus
from resofleet.contracts import (
    Auth,
    Authenticated,
    BusRequest,
    ClientMessage,
    Command,
    CommandOutcome,
    Container,
    ContractError,
    ErrorCode,
    GetServers,
    OutputHistory,
    Ping,
    Pong,
    RequestId,
    ServerInfo,
    ServerMessage,
    ServersUpdate,
    Subscribe,
    Subscribed,
    Topology,
    decode_client,
    encode_server,
)

from . import bulkrun
from .backpressure import close, room, unsent
from .errors import (
    CLOSE_TOO_SLOW,
    CLOSE_UNAUTHENTICATED,
    Forbidden,
    GatewayError,
    RateLimited,
    Unauthenticated,
    UnknownServer,
    error_for,
    outcome_for,
)
from .fanout import SUBSCRIBE_BIND_WAIT, Fanout
from .guard import Guard, Outcome
from .identity import Principal
from .inflight import InFlight
from .liveness import Liveness
from .metrics import INVALID_TYPE, Asked
from .ratelimit import TokenBucket, cost
from .refusals import SCOPE_AUDIT, not_run, refused_outcome, refused_what, what_of
from .registry import Registry
from .rounds import text_frame
from .routing import Timeouts, Watch, answered, in_scope, page, route, server_list, states_outcome
from .routing import View, view_of, viewed, watch_for
from .server import MAX_FRAME
from .settings import DEFAULT_BULK_CONCURRENCY
from .tokens import TokenError

__all__ = ["MAX_IN_FLIGHT", "Session"]

log = logging.getLogger(__name__)

#: Requests one connection may have waiting on servers at once. A person sends one at a
#: time; a dashboard polls a few servers in parallel; a bot that needs more should open
#: more connections. Bounds the tasks (and bus correlation entries) a client can create.
MAX_IN_FLIGHT: Final = 32


#: Reasons of the 4401 closes (clients and tests read them).
AUTH_REQUIRED: Final = "authentication required"
TOKEN_EXPIRED: Final = "token expired"

class Session:
    """One client connection (see the module docstring).

    ``guard`` checks tokens, holds the limits and records refusals; it is required, so
    open mode (a guard whose :class:`~resofleet.gateway.security.Security` has no keyring) is always
    the caller's explicit choice, never what a forgotten argument falls back to.
    """

    def __init__(
        self,
        connection: ServerConnection,
        *,
        conn_id: str,
        bus: Bus,
        registry: Registry,
        fanout: Fanout,
        liveness: Liveness,
        principal: Principal | None,
        guard: Guard,
        client: str | None = None,
        pinned: str | None = None,
        timeouts: Timeouts = Timeouts(),
        max_in_flight: int = MAX_IN_FLIGHT,
        bulk_concurrency: int = DEFAULT_BULK_CONCURRENCY,
    ) -> None:
        self._connection = connection
        self.conn_id = conn_id
        self.bus = bus
        self.registry = registry
        self.fanout = fanout
        self.liveness = liveness
        self.guard = guard
        self.principal = principal
        self.pinned = pinned
        self.timeouts = timeouts
        self.bulk_concurrency = bulk_concurrency
        self.watch = (
            Watch(all=False, servers=frozenset({pinned})) if pinned is not None else Watch()
        )
        self.batch = False
        #: Requests waiting on servers (:mod:`resofleet.gateway.inflight`), bulk ones too.
        self.inflight = InFlight(max_in_flight, closed=connection.wait_closed)
        #: Sends the unrequested ``servers_update``: one at a time, the latest news kept
        #: for the next one (a client that reads slowly holds one, not one per change).
        self._push: asyncio.Task[None] | None = None
        self._push_next: list[ServerInfo] | None = None
        self._closer: asyncio.Task[None] | None = None
        if client is None:
            address = connection.remote_address
            client = str(address[0]) if isinstance(address, tuple) and address else ""
        self.client = client
        self._bucket: TokenBucket | None = None
        self._pre_auth = False  # the bucket is the pre-authentication one
        self._limit()
        #: Per server, the epoch of the last output_history sent (see the module docstring).
        self._epochs: dict[str, str] = {}
        #: Set whenever the principal changes, so the identity watchdog re-arms.
        self._identity = asyncio.Event()

    @property
    def connection(self) -> ServerConnection:
        return self._connection

    # -- for the fan-out -------------------------------------------------------------

    @property
    def view(self) -> View:
        return view_of(self.principal)

    def watches(self, server: str) -> bool:
        return self.principal is not None and self.watch.covers(server, self.principal)

    def patterns(self) -> Iterable[str]:
        if self.principal is None:
            return ()
        if self.watch.all:
            return ("#",)
        return [Topology.server_pattern(s) for s in self.watch.servers]

    def cut_off(self, reason: str) -> None:
        self.end(CLOSE_TOO_SLOW, reason)

    def servers_changed(self, infos: list[ServerInfo]) -> None:
        """Send a ``servers_update`` of what this client may see of ``infos`` (every known
        server), after the one being sent if any."""
        if self.principal is None or self._closer is not None:
            return
        self._push_next = infos
        if self._push is None:
            self._push = asyncio.get_running_loop().create_task(
                self._push_servers(), name=f"push:{self.conn_id}"
            )

    async def _push_servers(self) -> None:
        try:
            while self._push_next is not None and self.principal is not None:
                infos, self._push_next = self._push_next, None
                listed = server_list(infos, pinned=self.pinned, principal=self.principal)
                await self.send(viewed(ServersUpdate(servers=listed), self.principal))
        finally:
            self._push = None

    def end(self, code: int, reason: str) -> None:
        """Close the connection with ``code`` (once), without waiting for it."""
        if self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(
                close(self._connection, code, reason), name=f"close:{self.conn_id}"
            )

    # -- identity --------------------------------------------------------------------

    def _limit(self) -> None:
        """Give the session a token bucket when its principal is rate-limited. A renewal
        keeps the bucket it had: re-authenticating must not refill it."""
        limits = self.guard.security.limits
        if self.principal is None:  # before authentication (only at the start): a small one
            self._bucket, self._pre_auth = TokenBucket(limits.pre_auth_rate, limits.pre_auth_burst), True
        elif not self.principal.rate_limited:
            self._bucket, self._pre_auth = None, False
        elif self._bucket is None or self._pre_auth:
            self._bucket, self._pre_auth = TokenBucket(limits.command_rate, limits.command_burst), False

    def _refuse(
        self,
        outcome: str,
        reason: str,
        *,
        command: str | None = None,
        server: str | None = None,
        detail: str | None = None,
        coalesce: bool = False,
    ) -> None:
        """Audit a refusal; ``coalesce``: alike ones (same outcome on this connection) share
        a record per :data:`~resofleet.gateway.guard.AUDIT_WINDOW` (a flood of rate-limited requests)."""
        if self.principal is None:  # anyone: alike refusals per address, a prefix of the text
            return self.guard.refuse_unauthenticated(
                outcome, client=self.client, reason=reason, server=server, command=command,
                conn=self.conn_id, detail=detail)
        self.guard.refuse(
            outcome, client=self.client, reason=reason, principal=self.principal,
            server=server, command=command, conn=self.conn_id, detail=detail,
            coalesce=self.conn_id if coalesce else None,
        )

    async def _watch_identity(self) -> None:
        """Close the connection when it stays unauthenticated too long, or when its token
        expires without renewal (both 4401)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.guard.security.auth_timeout
        while True:
            self._identity.clear()
            principal = self.principal
            if principal is None:
                delay: float | None = deadline - loop.time()
            elif principal.expires is None:
                delay = None
            else:
                delay = principal.expires - time.time()
            try:
                async with asyncio.timeout(delay):
                    await self._identity.wait()
                continue
            except TimeoutError:
                pass
            if self.principal is not principal:
                continue
            if principal is None:
                reason = AUTH_REQUIRED
                self._refuse(
                    Outcome.UNAUTHENTICATED,
                    f"no token within {self.guard.security.auth_timeout:g} s",
                )
            elif principal.expires is not None and time.time() < principal.expires:
                continue  # the wall clock moved back: wait again
            else:
                reason = TOKEN_EXPIRED
            log.info("conn=%s server=%s: closing: %s", self.conn_id, self.pinned or "*", reason)
            self.guard.metrics.cut_off["auth_timeout" if principal is None else "token_expired"].inc()
            self.end(CLOSE_UNAUTHENTICATED, reason)
            return

    async def _auth(self, message: Auth, asked: Asked) -> None:
        if self.guard.open:  # open mode: the session is an admin already; tokens are ignored
            p = self.principal
            assert p is not None
            reply = Authenticated(sub=p.sub, role=p.role.label, expires=p.expires, id=message.id)
            return await self.send(reply, asked=asked)
        try:
            principal = self.guard.check(message.token)
        except TokenError as exc:
            log.info("conn=%s: auth refused: %s", self.conn_id, exc.reason)
            self._refuse(Outcome.UNAUTHENTICATED, exc.reason, command="auth")
            return await self.send(error_for(exc, id=message.id, conn=self.conn_id), asked=asked)
        renewed = self.principal is not None
        await self.send(
            Authenticated(
                sub=principal.sub, role=principal.role.label, expires=principal.expires,
                id=message.id,
            ),
            asked=asked,
        )
        # Reply first, then switch: the client sees `authenticated` before any event.
        self.principal = principal
        self._connection.protocol.max_message_size = MAX_FRAME
        self._limit()
        self._identity.set()
        await self.fanout.changed(self)
        log.info(
            "conn=%s server=%s: %s as %s (%s)", self.conn_id, self.pinned or "*",
            "renewed" if renewed else "authenticated", principal.sub, principal.role.label,
        )

    async def limited(
        self, id: RequestId | None, what: str | None, outcome: CommandOutcome | None = None,
        *, cost: float = 1.0, asked: Asked | None = None,
    ) -> bool:
        """Spend ``cost`` tokens from the bucket; False if allowed, else answer rate_limited
        (with ``outcome``, for a request that states one)."""
        if self._bucket is None:
            return False
        retry = self._bucket.take(cost)
        if retry <= 0.0:
            return False
        self._refuse(Outcome.RATE_LIMITED, "over the request rate", command=what, coalesce=True)
        await self.send(
            error_for(RateLimited(self._bucket.describe(retry)), id=id, outcome=outcome),
            asked=asked,
        )
        return True

    # -- the connection's life -------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes."""
        watchdog = asyncio.create_task(self._watch_identity(), name=f"identity:{self.conn_id}")
        self.fanout.add(self)  # at once: the broker's bindings follow in the background
        try:
            while True:  # past its bound unsent, a client has no more requests read
                if (over := await room(self._connection, self.fanout.slow_client_buffer)) > 0:
                    self.fanout.cut(self, over)
                frame = await self._connection.recv()
                if self._closer is None:  # closing: what still arrives is not answered
                    await self._on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            self.fanout.remove(self)  # first: whatever happens below, nothing stays bound
            watchdog.cancel()
            if self._push is not None:
                self._push.cancel()
            await self.inflight.cancel()
            sent = self._connection.protocol.close_sent
            if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
                self._refuse(Outcome.REJECTED_INPUT, "frame too big")
            log.info(
                "conn=%s: closed (%s)", self.conn_id,
                self._connection.close_code if self._connection.close_code is not None else "-",
            )

    async def _on_frame(self, frame: str | bytes) -> None:
        started = perf_counter()
        if isinstance(frame, bytes):
            asked: Asked = (INVALID_TYPE, started)
            if await self.limited(None, None, asked=asked):
                return
            self._refuse(Outcome.REJECTED_INPUT, "binary frame")
            return await self.send(
                error_for(
                    ContractError(
                        "Binary frames are not accepted: send each request as one JSON text "
                        "frame."
                    )
                ),
                asked=asked,
            )
        try:
            message = decode_client(frame)
        except ContractError as exc:
            what = refused_what(exc)
            asked = (exc.request_type or INVALID_TYPE, started)  # bounded where counted
            if await self.limited(exc.id, what, refused_outcome(exc), asked=asked):
                return
            log.info("conn=%s: refused input: %s", self.conn_id, exc.message)
            self._refuse(Outcome.REJECTED_INPUT, exc.code.value, command=what, detail=exc.message)
            reply = error_for(exc, conn=self.conn_id, outcome=refused_outcome(exc))
            return await self.send(reply, asked=asked)
        asked = (message.__struct_config__.tag, started)  # type: ignore[assignment]
        if self._bucket is not None and await self.limited(  # admins and open mode: none
            message.id, what_of(message), not_run(message), cost=cost(message), asked=asked
        ):
            return  # `auth` too: bad tokens cost a bucket like any frame
        if isinstance(message, Auth):
            await self._auth(message, asked)
            return
        principal = self.principal
        if principal is None:
            if isinstance(message, Ping):
                return await self.send(Pong(id=message.id), asked=asked)
            self._refuse(Outcome.UNAUTHENTICATED, "no token", command=what_of(message))
            return await self.send(
                error_for(
                    Unauthenticated(
                        'Authenticate first: send {"type": "auth", "token": "..."} (or connect '
                        "with an Authorization: Bearer header or ?token=)."
                    ),
                    id=message.id,
                    outcome=not_run(message),
                ),
                asked=asked,
            )
        match message:
            case Ping(id=id):
                await self.send(Pong(id=id), asked=asked)
            case GetServers(id=id):
                infos = server_list(
                    self.registry.snapshot(), pinned=self.pinned, principal=principal
                )
                await self.send(viewed(ServersUpdate(servers=infos, id=id), principal), asked=asked)
            case Subscribe():
                await self._subscribe(message, principal, asked)
            case Command(servers=list()) | Container(servers=list()):  # bulk: its own module
                await bulkrun.start(self, message, principal, asked)
            case _:
                online, offline = self.registry.for_route(getattr(message, "server", None) or self.pinned)
                try:
                    request = route(
                        message,
                        pinned=self.pinned,
                        online=online,
                        offline=offline,
                        epochs=self._epochs,
                        principal=principal,
                        timeouts=self.timeouts,
                        client=self.client,
                    )
                except GatewayError as exc:
                    log.info(
                        "conn=%s server=%s: refused %s: %s", self.conn_id,
                        getattr(message, "server", None) or self.pinned or "-",
                        message.__struct_config__.tag, exc,
                    )
                    self.audit_refusal(exc, message)
                    return await self.send(
                        error_for(exc, id=message.id, conn=self.conn_id, outcome=not_run(message)),
                        asked=asked,
                    )
                except Exception as exc:  # a routing bug answers `internal`, the session lives
                    return await self.send(
                        error_for(exc, id=message.id, conn=self.conn_id, outcome=not_run(message)),
                        asked=asked,
                    )
                await self.inflight.spawn(
                    self.ask(request, message.id, states=states_outcome(message), asked=asked),
                    name=f"ask:{self.conn_id}:{request.server}",
                )

    def audit_refusal(self, exc: GatewayError, message: ClientMessage) -> None:
        """Audit a routing refusal that is a security event (the others are not), from what
        routing decided: the role needed, the server refused and why."""
        if isinstance(exc, Forbidden):
            self._refuse(
                Outcome.FORBIDDEN, f"needs {exc.needed.label}", command=what_of(message),
                server=exc.server, detail=exc.message,
            )
        elif isinstance(exc, UnknownServer):
            outcome, reason = SCOPE_AUDIT[exc.reason]
            self._refuse(outcome, reason, command=what_of(message), server=exc.refused)

    async def _subscribe(self, message: Subscribe, principal: Principal, asked: Asked) -> None:
        try:
            watch = watch_for(message, pinned=self.pinned, principal=principal)
        except GatewayError as exc:
            self.audit_refusal(exc, message)
            return await self.send(error_for(exc, id=message.id, conn=self.conn_id), asked=asked)
        self.watch, self.batch = watch, message.batch
        self.fanout.update(self)
        await self.fanout.settled(SUBSCRIBE_BIND_WAIT)  # a slow broker: this reply only
        reply = Subscribed(servers=watch.listed(), batch=message.batch, id=message.id)
        await self.send(reply, asked=asked)

    async def ask(
        self, request: BusRequest, id: RequestId | None, *, states: bool, asked: Asked
    ) -> ServerMessage | None:
        """Send ``request`` over the bus and its reply to the client, and return the reply
        (None: dropped, out of scope); ``states``: its replies say whether it ran."""
        log.debug(
            "conn=%s server=%s: %s", self.conn_id, request.server, type(request.body).__name__
        )
        reply: ServerMessage
        # A bus that is down refuses before sending (not_executed); one that goes down after
        # this may have delivered the request (unknown).
        handed = self.bus.connected
        try:
            reply = answered((await self.liveness.request(request)).body, id, states=states)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            outcome = outcome_for(exc, handed=handed) if states else None
            reply = error_for(exc, id=id, server=request.server, conn=self.conn_id, outcome=outcome)
            log.info("conn=%s server=%s: %s: %s", self.conn_id, request.server, reply.code, exc)
        principal = self.principal  # an `auth` since the request may have narrowed it
        if principal is None or not in_scope(request.server, pinned=self.pinned, principal=principal):
            log.info("conn=%s server=%s: reply dropped: out of scope", self.conn_id, request.server)
            self.guard.metrics.request(asked[0], ErrorCode.UNKNOWN_SERVER, asked[1])
            return None
        if isinstance(reply, OutputHistory):
            self._epochs[request.server] = reply.epoch
            reply = page(reply)  # an agent from before the bound may answer more
        await self.send(viewed(reply, principal), asked=asked)
        return reply

    async def send(self, message: ServerMessage, *, asked: Asked | None = None) -> None:
        """Encode ``message`` once and send it; a closed connection is not an error, and
        one with more than its bound unsent is cut off instead (see Backpressure).
        ``asked``: the request this answers, counted in the metrics (its outcome: ``ok``,
        or the error's code), whether or not the answer could be written."""
        if asked is not None:
            self.guard.metrics.answered(asked, message)
        if self._closer is not None:
            return
        waiting = unsent(self._connection)
        if waiting > self.fanout.slow_client_buffer:
            self.fanout.cut(self, waiting)  # closes it with 1013 (cut_off)
            return
        data = encode_server(message)
        connection = self._connection
        protocol = connection.protocol
        if (protocol.state is OPEN and not protocol.extensions
                and connection.send_in_progress is None and not connection.transport.is_closing()):
            # the frame websockets would write, written as the fan-out writes rounds: without
            # its send machinery (a context manager, a drain), about 5 us a reply; a reader
            # that falls behind is cut off above, never waited for
            connection.transport.write(text_frame(data))
        else:  # compression, a closing connection: websockets knows what to do
            try:
                await connection.send(data, text=True)
            except ConnectionClosed:
                return
        self.guard.metrics.sent_bytes.inc(len(data))
