"""The docker runtime's attach reader thread, on a socket pair instead of an engine.

An event loop that falls behind (a burst of console output while the agent is busy) must
slow the headless's writes, as a full pipe does, and not queue its output in memory
without bound; once the loop catches up, every byte arrives, in order.
"""

from __future__ import annotations

import asyncio
import socket
import threading

from resofleet.agent.runtime import docker as docker_module
from resofleet.agent.runtime.docker import DockerRuntime

WAIT_S = 10.0
OFFERED = 64 * 1024 * 1024  # far past anything the reader may hold


class Listener:
    def __init__(self) -> None:
        self.received = bytearray()

    def output(self, data: bytes) -> None:
        self.received += data

    def started(self) -> None: ...

    def exited(self, reason: str) -> None: ...

    def state(self, state: str) -> None: ...


def _pattern(start: int, size: int) -> bytes:
    return bytes((start + i) % 251 for i in range(size))


def test_a_loop_that_falls_behind_holds_the_reader_back() -> None:
    loop = asyncio.new_event_loop()
    listener = Listener()
    runtime = DockerRuntime("dock", listener, container="unused")
    runtime._loop = loop  # the loop the reader hands to; not running yet: it "falls behind"
    ours, theirs = socket.socketpair()
    reader = threading.Thread(target=runtime._read, args=(ours, ours, runtime._gen, True), daemon=True)
    reader.start()
    chunk = _pattern(0, 251 * 256)  # whole periods, so every chunk continues the pattern
    theirs.settimeout(1.0)
    sent = 0
    try:
        while sent < OFFERED:
            sent += theirs.send(chunk)
    except TimeoutError:  # the reader stopped reading: our writes block, as on a full pipe
        pass
    kernel = sum(s.getsockopt(socket.SOL_SOCKET, opt) for s in (ours, theirs)
                 for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF))
    held = docker_module.PENDING_CHUNKS * docker_module.READ_CHUNK
    assert held <= sent <= held + docker_module.READ_CHUNK + kernel, (sent, held, kernel)
    assert listener.received == b""  # nothing reached the loop: it has not run

    # the loop catches up: the rest is sent while it runs, and every byte arrives in order
    total = sent + len(chunk) * 64
    rest = threading.Thread(target=lambda: theirs.sendall(chunk * 64), daemon=True)
    theirs.settimeout(WAIT_S)
    rest.start()

    async def all_of_it() -> None:
        while len(listener.received) < total:
            await asyncio.sleep(0.01)

    try:
        loop.run_until_complete(asyncio.wait_for(all_of_it(), WAIT_S))
        rest.join(WAIT_S)
        assert not rest.is_alive()
        assert len(listener.received) == total
        assert bytes(listener.received) == _pattern(0, 251 * 256) * (total // len(chunk))
    finally:
        runtime._closing = True  # no reconcile with an engine when the socket ends
        theirs.close()
        reader.join(WAIT_S)
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    assert not reader.is_alive()
