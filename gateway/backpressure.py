"""Backpressure on replies: what a client has not read bounds what a session does for it.

The fan-out cuts off a connection whose unsent events pass the per-client bound
(``slow_client_buffer``). A session applies the same bound to everything else it writes:

- a reply (or any message a session sends) that finds more than the bound unsent is not
  written; the connection is cut off with 1013, as a slow event reader is;
- before reading the next request, a session waits while more than the bound is unsent
  (:func:`room`): a client that does not read its replies gets no more of its requests
  read, at most :data:`SLOW_CLIENT_WAIT`, then it is cut off.

With replies bounded in size too (``output_history`` pages of at most
``MAX_OUTPUT_BYTES``), a connection holds at most the bound plus one reply in the
gateway's memory, however many requests it sends without reading.
"""

from __future__ import annotations

import asyncio
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.protocol import CLOSED

__all__ = ["CLOSE_WAIT", "ROOM_POLL", "SLOW_CLIENT_WAIT", "close", "room", "unsent"]

#: Seconds a connection with more than its bound unsent may take to read it down before
#: it is cut off (1013), while none of its requests are read: a client on a slow link
#: catches up within this; one that stopped reading does not (the keepalive would drop it
#: within 40 s anyway).
SLOW_CLIENT_WAIT: Final = 20.0
#: Seconds between two looks at a backed-up connection's unsent bytes while it catches up:
#: a fraction of what a person notices, a negligible cost for the rare connection waiting.
ROOM_POLL: Final = 0.05
#: Seconds a close may wait for the client to take what is buffered ahead of the close
#: frame before the TCP connection is dropped. websockets' own close timeout starts once
#: the close frame is out, and a client that never reads never lets it out: without this a
#: cut-off client would keep its buffer until the keepalive gave up (40 s).
CLOSE_WAIT: Final = 5.0


def unsent(connection: ServerConnection) -> int:
    """Bytes written to ``connection`` that the client has not taken yet (beyond what the
    kernel's socket buffer holds)."""
    transport = connection.transport
    return transport.get_write_buffer_size() if transport is not None else 0


async def room(
    connection: ServerConnection, bound: int, *, wait: float = SLOW_CLIENT_WAIT
) -> int:
    """Wait until at most ``bound`` bytes are unsent to ``connection`` (or it closed): 0;
    or, after ``wait`` seconds still over it, the bytes unsent (cut it off)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while (waiting := unsent(connection)) > bound:
        if connection.protocol.state is CLOSED:
            return 0  # reading will say so
        if loop.time() >= deadline:
            return waiting
        await asyncio.sleep(ROOM_POLL)
    return 0


async def close(connection: ServerConnection, code: int, reason: str, *, wait: float = CLOSE_WAIT) -> None:
    """Close ``connection`` with ``code``; drop it if that takes over ``wait`` seconds."""
    try:
        async with asyncio.timeout(wait):
            await connection.close(code, reason)
    except TimeoutError:
        connection.transport.abort()
