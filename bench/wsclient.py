"""A minimal WebSocket client for thousands of connections per process.

The benchmarks measure the gateway, so the clients must cost as little as possible on a
machine whose two cores they share with it. The ``websockets`` client is correct and
general; this one does only what the benchmarks need, as an :class:`asyncio.Protocol`:

- the opening handshake (``Authorization: Bearer`` header), checked for ``101``;
- unfragmented text frames in (the gateway never fragments its messages), pings answered
  with pongs, a close frame recorded (its code) and the TCP connection dropped;
- text frames out, masked with an all-zero key: legal framing (RFC 6455 asks for an
  unpredictable key to protect proxies, and there are none here) that costs no XOR.

No compression is offered, so the server sends plain frames.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable
from typing import Final

__all__ = ["HANDSHAKE_TIMEOUT", "RawClient", "connect"]

#: Seconds a handshake may take; thousands at once on two cores can take a while.
HANDSHAKE_TIMEOUT: Final = 60.0
_ZERO_MASK: Final = b"\x00\x00\x00\x00"


def _header(opcode: int, length: int) -> bytes:
    if length < 126:
        return struct.pack("!BB", 0x80 | opcode, 0x80 | length) + _ZERO_MASK
    if length < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length) + _ZERO_MASK
    return struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length) + _ZERO_MASK


class RawClient(asyncio.Protocol):
    """One connection. ``on_message(payload)`` gets every text frame's bytes."""

    def __init__(self, on_message: Callable[[bytes], None] | None = None) -> None:
        self.on_message = on_message or (lambda _: None)
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.received = 0
        self._buffer = bytearray()
        self._open = False

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[:end]).split(b"\r\n", 1)[0]
            del buffer[: end + 4]
            if b" 101 " not in status + b" ":
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(status.decode("latin-1")))
                self.transport.close()  # type: ignore[union-attr]
                return
            self._open = True
            if not self.opened.done():
                self.opened.set_result(None)
        self._frames()

    def _frames(self) -> None:
        buffer = self._buffer
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, start)
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            if size - start < length:
                break
            payload = bytes(buffer[start : start + length])
            pos = start + length
            opcode = b0 & 0x0F
            if opcode == 1:
                self.received += 1
                self.on_message(payload)
            elif opcode == 9:
                self._write(10, payload)
            elif opcode == 8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self._write(8, payload[:2])
                self.transport.close()  # type: ignore[union-attr]
        if pos:
            del buffer[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    # -- sending ---------------------------------------------------------------------

    def _write(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_header(opcode, len(payload)) + payload)

    def send(self, text: bytes) -> None:
        """Send one text frame (UTF-8 JSON bytes)."""
        self._write(1, text)

    @property
    def is_open(self) -> bool:
        return self._open and not self.closed.done()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def connect(
    host: str,
    port: int,
    *,
    path: str = "/ws",
    token: str | None = None,
    on_message: Callable[[bytes], None] | None = None,
) -> RawClient:
    """Open a connection and complete the handshake (raises on refusal)."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: RawClient(on_message), host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    client.transport.write(  # type: ignore[union-attr]
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{auth}\r\n"
        ).encode()
    )
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            await client.opened
    except BaseException:
        client.abort()
        raise
    return client
