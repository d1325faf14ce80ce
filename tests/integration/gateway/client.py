"""A small test client over a real websockets connection: every wait has a timeout."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

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
        await self.ws.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, message: Message | str | bytes) -> None:
        await self.ws.send(json.dumps(message) if isinstance(message, dict) else message)

    async def recv(self, timeout: float = WAIT) -> Message:
        async with asyncio.timeout(timeout):
            return json.loads(await self.ws.recv())

    async def expect(self, match: Callable[[Message], bool], timeout: float = WAIT) -> Message:
        """The first message for which ``match`` is true; others are kept in ``skipped``."""
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                if match(message):
                    return message
                self.skipped.append(message)

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


async def http_get(port: int, path: str, timeout: float = WAIT) -> tuple[int, str]:
    """A plain HTTP/1.1 GET on 127.0.0.1: (status, body)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body
