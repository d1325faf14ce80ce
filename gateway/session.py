"""One session per WebSocket connection.

A session reads frames one at a time and answers each:

- a binary frame, invalid JSON, a missing field or a wrong type: ``error bad_request``;
  an unknown ``type``: ``error unknown_type``; the connection stays open (a frame over the
  size limit is closed with 1009 by websockets before it gets here);
- ``ping``, ``get_servers``, ``subscribe`` and ``auth`` are answered by the gateway itself,
  in order;
- ``command``, ``get_status``, ``get_worlds``, ``get_output`` and ``container`` are routed
  (:mod:`gateway.routing`) and sent over the bus as tasks, so a slow command does not hold
  up a ``ping`` or a request to another server. Replies go out as they come, matched by the
  ``id`` the client gave. At most ``max_in_flight`` requests run per connection; past that
  the session stops reading until one finishes, so a client that floods only waits on
  itself (TCP backpressure), never grows the gateway's memory.

When the connection ends, its requests still in flight are cancelled (nobody is left to
read their replies; a command already taken by an agent still runs there).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from bus import Bus
from contracts import (
    Auth,
    Authenticated,
    BusRequest,
    ContractError,
    GetServers,
    Ping,
    Pong,
    RequestId,
    ServerMessage,
    ServersUpdate,
    Subscribe,
    Subscribed,
    Topology,
    decode_client,
    encode_server,
)

from .errors import CLOSE_TOO_SLOW, GatewayError, error_for
from .fanout import Fanout
from .identity import Principal
from .registry import Registry
from .routing import Timeouts, Watch, route, server_list, watch_for, with_id

__all__ = ["MAX_IN_FLIGHT", "Session"]

log = logging.getLogger(__name__)

#: Requests one connection may have waiting on servers at once. A person sends one at a
#: time; a dashboard polls a few servers in parallel; a bot that needs more should open
#: more connections. Bounds the tasks (and bus correlation entries) a client can create.
MAX_IN_FLIGHT: Final = 32


class Session:
    """One client connection (see the module docstring)."""

    def __init__(
        self,
        connection: ServerConnection,
        *,
        conn_id: str,
        bus: Bus,
        registry: Registry,
        fanout: Fanout,
        principal: Principal,
        pinned: str | None = None,
        timeouts: Timeouts = Timeouts(),
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._connection = connection
        self.conn_id = conn_id
        self.bus = bus
        self.registry = registry
        self.fanout = fanout
        self.principal = principal
        self.pinned = pinned
        self.timeouts = timeouts
        self.watch = (
            Watch(all=False, servers=frozenset({pinned})) if pinned is not None else Watch()
        )
        self.batch = False
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closer: asyncio.Task[None] | None = None
        address = connection.remote_address
        self.client = str(address[0]) if isinstance(address, tuple) and address else ""

    @property
    def connection(self) -> ServerConnection:
        return self._connection

    # -- for the fan-out -------------------------------------------------------------

    def watches(self, server: str) -> bool:
        return self.watch.covers(server, self.principal)

    def patterns(self) -> Iterable[str]:
        if self.watch.all:
            return ("#",)
        return [Topology.server_pattern(s) for s in self.watch.servers]

    def cut_off(self, reason: str) -> None:
        if self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(
                self._connection.close(CLOSE_TOO_SLOW, reason), name=f"cutoff:{self.conn_id}"
            )

    # -- the connection's life -------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes."""
        await self.fanout.add(self)
        try:
            async for frame in self._connection:
                await self._on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks)
            await self.fanout.remove(self)
            log.info(
                "conn=%s: closed (%s)", self.conn_id,
                self._connection.close_code if self._connection.close_code is not None else "-",
            )

    async def _on_frame(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.send(
                error_for(
                    ContractError(
                        "Binary frames are not accepted: send each request as one JSON text "
                        "frame."
                    )
                )
            )
            return
        try:
            message = decode_client(frame)
        except ContractError as exc:
            log.info("conn=%s: refused input: %s", self.conn_id, exc.message)
            await self.send(error_for(exc, conn=self.conn_id))
            return
        match message:
            case Ping(id=id):
                await self.send(Pong(id=id))
            case GetServers(id=id):
                infos = server_list(
                    self.registry.snapshot(), pinned=self.pinned, principal=self.principal
                )
                await self.send(ServersUpdate(servers=infos, id=id))
            case Subscribe():
                await self._subscribe(message)
            case Auth(id=id):
                # Open mode: the session is already an admin; a token changes nothing.
                p = self.principal
                await self.send(
                    Authenticated(sub=p.sub, role=p.role.label, expires=p.expires, id=id)
                )
            case _:
                try:
                    request = route(
                        message,
                        pinned=self.pinned,
                        online=self.registry.online(),
                        offline=self.registry.offline(),
                        principal=self.principal,
                        timeouts=self.timeouts,
                        client=self.client,
                    )
                except GatewayError as exc:
                    log.info("conn=%s: refused %s: %s", self.conn_id, message.__struct_config__.tag, exc)
                    await self.send(error_for(exc, id=message.id, conn=self.conn_id))
                    return
                except Exception as exc:  # a routing bug answers `internal`, the session lives
                    await self.send(error_for(exc, id=message.id, conn=self.conn_id))
                    return
                if not await self._take_slot():
                    return  # the connection closed while the client waited for a slot
                task = asyncio.create_task(
                    self._ask(request, message.id), name=f"ask:{self.conn_id}:{request.server}"
                )
                self._tasks.add(task)
                task.add_done_callback(self._done)

    async def _take_slot(self) -> bool:
        """Wait for a free in-flight slot, or for the connection to close (False)."""
        if not self._slots.locked():
            await self._slots.acquire()
            return True
        acquire = asyncio.ensure_future(self._slots.acquire())
        closed = asyncio.ensure_future(self._connection.wait_closed())
        try:
            await asyncio.wait({acquire, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not acquire.done():
                acquire.cancel()
        return acquire.done() and not acquire.cancelled()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _subscribe(self, message: Subscribe) -> None:
        try:
            watch = watch_for(message, pinned=self.pinned, principal=self.principal)
        except GatewayError as exc:
            await self.send(error_for(exc, id=message.id, conn=self.conn_id))
            return
        self.watch, self.batch = watch, message.batch
        await self.fanout.changed()
        await self.send(Subscribed(servers=watch.listed(), batch=message.batch, id=message.id))

    async def _ask(self, request: BusRequest, id: RequestId | None) -> None:
        log.debug(
            "conn=%s server=%s: %s", self.conn_id, request.server, type(request.body).__name__
        )
        reply: ServerMessage
        try:
            reply = with_id((await self.bus.request(request)).body, id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reply = error_for(exc, id=id, server=request.server, conn=self.conn_id)
            log.info("conn=%s server=%s: %s: %s", self.conn_id, request.server, reply.code, exc)
        await self.send(reply)

    async def send(self, message: ServerMessage) -> None:
        """Encode ``message`` once and send it; a closed connection is not an error."""
        try:
            await self._connection.send(encode_server(message), text=True)
        except ConnectionClosed:
            pass
