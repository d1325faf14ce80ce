"""Closed-loop clients for fault tests: each sends one tagged command at a time and waits
for its answer, over a real WebSocket, and keeps what happened to every tag.

A tag rides on a harmless read (``users <tag>``: the console ignores the argument), so the
agent's audit log and the console's echo on the stream (``<prompt>users <tag>``) can be
counted per tag. A client whose gateway goes away connects to the next URL of its list and
carries on; a command whose connection closed before its answer came is recorded as
*lost* (its outcome unknown to the client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

#: Seconds a client pauses after an error before its next command: a closed loop that is
#: refused at once would otherwise spin.
ERROR_PAUSE = 0.05
#: Seconds between a client's commands: keeps a handful of clients from taking the two
#: cores a CI machine has, while still sending tens of commands a second.
THINK = 0.01
#: Seconds a client has to open a WebSocket to a gateway.
CONNECT_TIMEOUT = 5.0

_ECHO = re.compile(r">users (\S+)$")


@dataclass
class Sent:
    """One tagged command and what became of it."""

    tag: str
    sent: float
    answered: float | None = None
    reply: dict[str, Any] | None = None
    lost: bool = False  # the connection closed before its answer

    @property
    def ok(self) -> bool:
        return self.reply is not None and self.reply["type"] == "command_response"


@dataclass
class LoopClient:
    """One closed-loop client (see the module docstring)."""

    name: str
    urls: list[str]
    server: str
    #: Seconds to wait for an answer: the gateway's own timeout plus a margin.
    timeout: float
    history: list[Sent] = field(default_factory=list)
    echoes: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    _index: int = 0
    _pending: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    async def _connect(self) -> tuple[ClientConnection, asyncio.Task[None]]:
        while True:
            url = self.urls[self._index]
            try:
                ws = await connect(url, open_timeout=CONNECT_TIMEOUT, max_size=16 * 1024 * 1024)
            except (OSError, InvalidHandshake, TimeoutError):
                self._index = (self._index + 1) % len(self.urls)
                await asyncio.sleep(ERROR_PAUSE)
                continue
            self.connections += 1
            return ws, asyncio.create_task(self._read(ws), name=f"loop-client:{self.name}")

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                message = json.loads(frame)
                future = self._pending.pop(str(message.get("id")), None)
                if future is not None and not future.done():
                    future.set_result(message)
                elif message.get("type") == "container_output":
                    if (echo := _ECHO.search(message["output"])) is not None:
                        self.echoes[echo.group(1)] += 1
        except ConnectionClosed:
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("the gateway went away"))
            self._pending.clear()

    async def run(self, stop: asyncio.Event) -> None:
        """Send tagged commands one at a time until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        ws, reader = await self._connect()
        try:
            n = 0
            while not stop.is_set():
                tag = f"{self.name}-{n}"
                n += 1
                entry = Sent(tag, loop.time())
                self.history.append(entry)
                future: asyncio.Future[dict[str, Any]] = loop.create_future()
                self._pending[tag] = future
                try:
                    await ws.send(json.dumps(
                        {"type": "command", "command": f"users {tag}", "server": self.server, "id": tag}
                    ))
                    async with asyncio.timeout(self.timeout):
                        entry.reply = await future
                    entry.answered = loop.time()
                except (ConnectionClosed, ConnectionError):
                    entry.lost = True
                    self._pending.pop(tag, None)
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
                    self._index = (self._index + 1) % len(self.urls)
                    ws, reader = await self._connect()
                    continue
                except TimeoutError:
                    self._pending.pop(tag, None)
                    raise AssertionError(f"{tag}: no answer within {self.timeout:g} s (hung)") from None
                await asyncio.sleep(THINK if entry.ok else ERROR_PAUSE)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await ws.close()

    def served_after(self, moment: float) -> float | None:
        """When the first command sent at or after ``moment`` was answered by its server."""
        return next((s.answered for s in self.history if s.sent >= moment and s.ok), None)

    def successes_after(self, moment: float) -> int:
        return sum(1 for s in self.history if s.sent >= moment and s.ok)


def audited(path: Path) -> Counter[str]:
    """How many times each tag appears in an agent's audit log, and with which outcomes."""
    counts: Counter[str] = Counter()
    if not path.exists():
        return counts
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        command = record.get("command") or ""
        if command.startswith("users "):
            counts[(command.split(" ", 1)[1], record["outcome"])] += 1  # type: ignore[index]
    return counts


async def until(check: Any, *, timeout: float, what: str, every: float = 0.05) -> None:
    """Wait until ``check()`` is true, polling, within ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"not within {timeout:g} s: {what}") from None


def check_at_most_once(clients: list[LoopClient], audit: Counter[Any]) -> dict[str, int]:
    """Nothing ran twice; everything answered as run ran exactly once; nothing answered as
    not run ran. Returns counts of each kind of ending, for the report."""
    runs: Counter[str] = Counter()
    for (tag, outcome), count in audit.items():
        if outcome == "ok":
            runs[tag] += count
    twice = {tag: n for tag, n in runs.items() if n > 1}
    assert not twice, f"run more than once: {twice}"
    kinds: Counter[str] = Counter()
    for client in clients:
        for sent in client.history:
            if sent.ok:
                kinds["executed"] += 1
                assert runs[sent.tag] == 1, (sent.tag, sent.reply)
            elif sent.lost:
                kinds["lost"] += 1
            elif sent.reply is not None:
                outcome = sent.reply.get("outcome", "?")
                kinds[f"{sent.reply['code']}/{outcome}"] += 1
                if outcome == "not_executed":
                    assert runs[sent.tag] == 0, (sent.tag, sent.reply)
        echoed_twice = {t: n for t, n in client.echoes.items() if n > 1}
        assert not echoed_twice, f"{client.name} saw echoes twice: {echoed_twice}"
    return dict(kinds)
