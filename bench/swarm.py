"""A process of many WebSocket clients (``python -m bench.swarm --spec JSON``).

Connects ``clients`` connections to the gateway (``concurrency`` handshakes at a time),
optionally sends each one ``subscribe`` as soon as it is open, prints ``READY {json}`` with the time it took,
then obeys lines on stdin:

- ``start``: forget everything counted so far (the measured window begins);
- ``stop``: print ``RESULT {json}``: the window's length as this process saw it (a busy
  swarm reads ``stop`` late), console lines and frames received in the window, lines
  lost (gaps in ``seq``, per client and server), per server the first ``seq`` seen and the
  last one (lowest and highest over the clients: how far the slowest client lags), and
  the close codes of clients the gateway cut off;
- end of input: close everything and exit.

Counting costs one msgspec decode per frame, into a struct that keeps only the type, the
server and the ``seq`` numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from typing import Any

import msgspec

from .node import raise_fd_limit
from .wsclient import RawClient, connect

__all__ = ["main"]


class _Seq(msgspec.Struct):
    seq: int


class _Msg(msgspec.Struct):
    type: str
    server: str = ""
    seq: int = 0
    lines: list[_Seq] = []


_decode = msgspec.json.Decoder(_Msg).decode


class Tally:
    """What one client received in the window: per server [first, last, count] seq."""

    __slots__ = ("servers", "frames", "lines", "bytes")

    def __init__(self) -> None:
        self.servers: dict[str, list[int]] = {}
        self.frames = 0
        self.lines = 0
        self.bytes = 0

    def on_message(self, payload: bytes) -> None:
        self.frames += 1
        self.bytes += len(payload)
        msg = _decode(payload)
        if msg.type == "container_output_batch":
            seqs = [line.seq for line in msg.lines]
        elif msg.type == "container_output":
            seqs = [msg.seq]
        else:
            return
        self.lines += len(seqs)
        span = self.servers.get(msg.server)
        if span is None:
            self.servers[msg.server] = [seqs[0], seqs[-1], len(seqs)]
        else:
            span[2] += len(seqs)
            if seqs[-1] > span[1]:
                span[1] = seqs[-1]

    def lost(self) -> int:
        return sum(last - first + 1 - count for first, last, count in self.servers.values())


async def _run(spec: dict[str, Any]) -> None:
    n = int(spec["clients"])
    tallies = [Tally() for _ in range(n)]
    clients: list[RawClient | None] = [None] * n
    gate = asyncio.Semaphore(int(spec.get("concurrency", 100)))
    failed = 0

    subscribe = spec.get("subscribe")
    subscribe_frame = (
        msgspec.json.encode({"type": "subscribe", **subscribe}) if subscribe is not None else None
    )

    async def open_one(i: int) -> None:
        nonlocal failed
        async with gate:
            try:
                clients[i] = client = await connect(
                    spec.get("host", "127.0.0.1"), int(spec["port"]), token=spec.get("token"),
                    on_message=lambda payload, i=i: tallies[i].on_message(payload),
                )
                # Subscribe at once, as a real client does: a client left in the default
                # per-line mode while hundreds of others connect would take every line as
                # its own message and fall behind before the measurement starts.
                if subscribe_frame is not None:
                    client.send(subscribe_frame)
            except Exception as exc:
                failed += 1
                if failed <= 3:
                    print(f"swarm: a connection failed: {exc!r}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    await asyncio.gather(*(open_one(i) for i in range(n)))
    connect_seconds = time.perf_counter() - started
    if subscribe_frame is not None:
        await asyncio.sleep(0.5)  # the last replies; events after it count from `start` anyway
    print("READY " + json.dumps({"connected": n - failed, "failed": failed,
                                 "seconds": connect_seconds}), flush=True)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    window_start = time.perf_counter()
    while True:
        line = (await reader.readline()).strip()
        if not line:
            break
        if line == b"start":
            for t in tallies:
                t.__init__()
            window_start = time.perf_counter()
            print("STARTED", flush=True)
        elif line == b"stop":
            spans: dict[str, list[int]] = {}  # server: [lowest first, lowest last, highest last]
            for t in tallies:
                for server, (first, seq, _) in t.servers.items():
                    span = spans.setdefault(server, [first, seq, seq])
                    span[0] = min(span[0], first)
                    span[1] = min(span[1], seq)
                    span[2] = max(span[2], seq)
            closes = collections.Counter(
                str(c.close_code) for c in clients if c is not None and not c.is_open
            )
            result = {
                "elapsed": time.perf_counter() - window_start,
                "lines": sum(t.lines for t in tallies),
                "frames": sum(t.frames for t in tallies),
                "bytes": sum(t.bytes for t in tallies),
                "lost": sum(t.lost() for t in tallies),
                "spans": spans,
                "closed": dict(closes),
                "silent": sum(1 for t in tallies if t.lines == 0),
            }
            print("RESULT " + json.dumps(result), flush=True)
    for c in clients:
        if c is not None:
            c.abort()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.swarm")
    parser.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    raise_fd_limit()
    asyncio.run(_run(json.loads(args.spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
