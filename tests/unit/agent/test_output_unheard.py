"""OutputLog batching while nobody listens: slower batches, no line lost. No I/O."""

from __future__ import annotations

import asyncio

from resofleet.agent.output import UNHEARD_BATCH_DELAY, OutputLog
from resofleet.contracts import ContainerOutputBatch
from tests.support.timing import AT_ONCE


class _Bus:
    """Publishes into a queue, with the time, and says whether anyone took it."""

    def __init__(self) -> None:
        self.batches: asyncio.Queue[tuple[float, ContainerOutputBatch]] = asyncio.Queue()
        self.taken = False

    async def publish(self, batch: ContainerOutputBatch) -> bool:
        await self.batches.put((asyncio.get_running_loop().time(), batch))
        return self.taken

    async def next(self) -> tuple[float, list[str]]:
        at, batch = await asyncio.wait_for(self.batches.get(), AT_ONCE)
        return at, [line.output for line in batch.lines]


async def test_batches_nobody_takes_go_out_less_often_and_lose_no_line():
    """After a batch that reached nobody, the next waits UNHEARD_BATCH_DELAY, and carries
    every line printed meanwhile; one that reached someone brings the usual pace back."""
    bus = _Bus()
    log = OutputLog("s", bus.publish)
    log.start()
    try:
        loop = asyncio.get_running_loop()
        log.add("first")
        assert (await bus.next())[1] == ["first"]
        assert log.heard is False  # nobody took it

        added = loop.time()
        log.add("second")
        log.add("third")
        at, lines = await bus.next()
        assert lines == ["second", "third"]
        assert at - added >= UNHEARD_BATCH_DELAY - 0.01  # held back, not dropped

        bus.taken = True  # a watcher appeared: the next batch reaches it
        log.add("fourth")
        assert (await bus.next())[1] == ["fourth"]
        assert log.heard is True
    finally:
        await log.close()


async def test_a_publisher_that_says_nothing_keeps_the_usual_pace():
    """``publish`` returning None (no answer) counts as heard."""
    published: list[ContainerOutputBatch] = []
    done = asyncio.Event()

    async def publish(batch: ContainerOutputBatch) -> None:
        published.append(batch)
        done.set()

    log = OutputLog("s", publish)
    log.start()
    try:
        log.add("line")
        await asyncio.wait_for(done.wait(), AT_ONCE)
        assert log.heard is True
    finally:
        await log.close()
