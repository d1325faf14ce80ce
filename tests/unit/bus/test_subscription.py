"""Subscription: a bounded, drop-oldest stream that several tasks may read at once."""

from __future__ import annotations

import asyncio

import pytest

from resofleet.bus.base import Subscription


async def test_each_item_wakes_one_of_several_waiting_readers():
    """Four readers wait; four items arrive: each reader gets one (none is left waiting)."""
    sub: Subscription[int] = Subscription(16)
    readers = [asyncio.create_task(sub.get()) for _ in range(4)]
    await asyncio.sleep(0)  # every reader is waiting
    for i in range(4):
        sub.push(i)
    async with asyncio.timeout(1):
        got = await asyncio.gather(*readers)
    assert sorted(got) == [0, 1, 2, 3]


async def test_a_reader_cancelled_after_its_wakeup_passes_the_item_on():
    """A reader woken for an item and cancelled before it took it leaves the item to the
    next reader."""
    sub: Subscription[str] = Subscription(16)
    first = asyncio.create_task(sub.get())
    second = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    sub.push("only")
    first.cancel()
    async with asyncio.timeout(1):
        assert await second == "only"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_close_ends_every_waiting_reader():
    sub: Subscription[int] = Subscription(4)
    readers = [asyncio.create_task(sub.get()) for _ in range(3)]
    await asyncio.sleep(0)
    await sub.close()
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(r, EOFError) for r in results)


def test_a_full_subscription_drops_the_oldest():
    sub: Subscription[int] = Subscription(2)
    for i in range(3):
        sub.push(i)
    assert (sub.drain(), sub.dropped) == ([1, 2], 1)
