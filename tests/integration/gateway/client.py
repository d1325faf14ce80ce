"""A small test client over a real websockets connection: every wait has a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

Message = dict[str, Any]

#: Seconds a test waits for one expected message before failing.
WAIT: float = 10.0


class Client:
    """Sends JSON requests and waits for the message it expects; keeps what it skipped."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.skipped: list[Message] = []
        self._ids = itertools.count(1)

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> Client:
        kwargs.setdefault("max_size", 16 * 1024 * 1024)
        kwargs.setdefault("open_timeout", WAIT)
        return cls(await connect(url, **kwargs))

    async def close(self) -> None:
        """Close, reading (and dropping) what still arrives meanwhile: a client that stops
        reading stops websockets reading its socket, so the gateway's close frame would
        never be seen and closing would wait out the whole close timeout."""

        async def drain() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for _ in self.ws:
                    pass

        drainer = asyncio.create_task(drain())
        try:
            await self.ws.close()
        finally:
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drainer

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, message: Message | str | bytes) -> None:
        await self.ws.send(json.dumps(message) if isinstance(message, dict) else message)

    async def _frame(self) -> str | bytes:
        """The next raw frame (subclasses may read them elsewhere first)."""
        return await self.ws.recv()

    async def recv(self, timeout: float = WAIT) -> Message:
        async with asyncio.timeout(timeout):
            return json.loads(await self._frame())

    async def expect(self, match: Callable[[Message], bool], timeout: float = WAIT) -> Message:
        """The first message for which ``match`` is true; others are kept in ``skipped``."""
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self._frame())
                if match(message):
                    return message
                self.skipped.append(message)

    async def expect_kept(self, match: Callable[[Message], bool], timeout: float = WAIT) -> Message:
        """Like :meth:`expect`, but a matching message set aside earlier (while waiting
        for a reply, say) counts too: a command's output may be streamed before its
        reply arrives."""
        for i, message in enumerate(self.skipped):
            if match(message):
                del self.skipped[i]
                return message
        return await self.expect(match, timeout)

    async def request(self, message: Message, timeout: float = WAIT) -> Message:
        """Send ``message`` with a fresh id (unless it has one) and return its reply."""
        message = dict(message)
        message.setdefault("id", f"r{next(self._ids)}")
        await self.send(message)
        return await self.expect(lambda m: m.get("id") == message["id"], timeout)

    async def requests(self, messages: list[Message], timeout: float = WAIT) -> list[Message]:
        """Send every message at once (fresh ids), then return their replies in order."""
        ids = []
        for message in messages:
            message = dict(message)
            message.setdefault("id", f"r{next(self._ids)}")
            ids.append(message["id"])
            await self.send(message)
        replies: dict[Any, Message] = {}
        async with asyncio.timeout(timeout):
            while len(replies) < len(ids):
                reply = await self.expect(lambda m: m.get("id") in ids and m["id"] not in replies)
                replies[reply["id"]] = reply
        return [replies[i] for i in ids]

    async def closed(self, timeout: float = WAIT) -> int | None:
        """Wait until the gateway closes the connection; the close code it sent.

        Messages that arrive meanwhile are kept in ``skipped``.
        """
        async with asyncio.timeout(timeout):
            while True:
                try:
                    self.skipped.append(json.loads(await self._frame()))
                except ConnectionClosed as exc:
                    return exc.rcvd.code if exc.rcvd is not None else None


class RecordingClient(Client):
    """A :class:`Client` that reads every frame as it arrives and keeps it raw in
    ``frames``, so a test can check everything the gateway ever sent it (and the
    connection never backs up, so closing it is quick)."""

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__(ws)
        self.frames: list[str | bytes] = []
        self._queue: asyncio.Queue[str | bytes | ConnectionClosed] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="recording-client")

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.frames.append(frame)
                self._queue.put_nowait(frame)
        except ConnectionClosed:
            pass
        finally:
            self._queue.put_nowait(self.ws.protocol.close_exc)

    async def _frame(self) -> str | bytes:
        item = await self._queue.get()
        if isinstance(item, ConnectionClosed):
            self._queue.put_nowait(item)  # every later read sees the end too
            raise item
        return item

    def received(self, match: Callable[[Message], bool]) -> list[Message]:
        """Every message received so far (read or not) for which ``match`` is true."""
        return [m for m in map(json.loads, self.frames) if match(m)]

    async def seen(self, match: Callable[[Message], bool], timeout: float = WAIT) -> Message:
        """The first message received, now or within ``timeout``, for which ``match`` is true
        (whether or not ``expect`` or ``request`` already read past it)."""
        found = await wait_until(lambda: self.received(match), timeout=timeout, what="a message")
        return found[0]

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


async def handshake_status(url: str, timeout: float = WAIT, **kwargs: Any) -> int:
    """The HTTP status of a WebSocket handshake the gateway refuses (fails if it accepts)."""
    kwargs.setdefault("open_timeout", timeout)
    try:
        ws = await connect(url, **kwargs)
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    raise AssertionError(f"the handshake to {url} was accepted")


async def wait_until(check: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, within ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(0.02)


async def http_get(
    port: int, path: str, timeout: float = WAIT, *, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """A plain HTTP/1.1 GET on 127.0.0.1: (status, body). ``headers`` are sent as given,
    ``Host`` included (default ``127.0.0.1:<port>``)."""
    sent = {"Host": f"127.0.0.1:{port}", "Connection": "close", **(headers or {})}
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = "".join(f"{name}: {value}\r\n" for name, value in sent.items())
        writer.write(f"GET {path} HTTP/1.1\r\n{head}\r\n".encode())
        await writer.drain()
        status = int((await reader.readuntil(b"\r\n\r\n")).split()[1])
        # an accepted WebSocket handshake (101) stays open: its body is the connection
        body = b"" if status == 101 else await reader.read()
        writer.close()
    return status, body.decode()
