"""A webhook receiver on 127.0.0.1:<free port> for the notifier's tests (aiohttp.web).

It records every POST (path, headers, body, arrival time) and answers what the test
sets: ``fail_first`` answers ``fail_status`` to the first N POSTs of a path, ``status``
answers every POST of a path with a fixed status, ``delay`` holds each answer.
:meth:`Receiver.wait_for` waits, with a timeout, until a path has a number of POSTs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

#: Seconds a test waits for POSTs it expects.
WAIT = 10.0


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.perf_counter() on arrival

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def delivery(self) -> str:
        return self.headers["X-Resofleet-Delivery"]


@dataclass
class Receiver:
    posts: dict[str, list[Post]] = field(default_factory=lambda: defaultdict(list))
    fail_first: dict[str, int] = field(default_factory=dict)
    fail_status: int = 503
    status: dict[str, int] = field(default_factory=dict)
    #: The body of the answer, per path (default: none).
    body: dict[str, bytes] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    port: int = 0
    _runner: web.AppRunner | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path}", self._post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _post(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        post = Post(path, dict(request.headers), body, time.perf_counter())
        async with self._changed:
            self.posts[path].append(post)
            self._changed.notify_all()
        if path in self.delay:
            await asyncio.sleep(self.delay[path])
        if self.fail_first.get(path, 0) > 0:
            self.fail_first[path] -= 1
            return web.Response(status=self.fail_status, text="try again")
        status = self.status.get(path, 204)
        return web.Response(status=status, body=self.body.get(path) if status != 204 else None)

    async def wait_for(self, path: str, count: int, *, timeout: float = WAIT) -> list[Post]:
        """The POSTs to ``path`` once there are at least ``count``."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.posts[path]) >= count)
        return list(self.posts[path])
