"""Closed-loop load: C clients, each with one request in flight, for a fixed time.

Every client sends a request, waits for its answer, records the time and sends the next.
Samples from the warm-up are thrown away. The result gives p50, p99 and throughput
(answers per second over the measured window).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

__all__ = ["LoadResult", "closed_loop", "percentile"]


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, nearest rank."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[rank]


@dataclass
class LoadResult:
    latencies: list[float]  # seconds
    elapsed: float
    errors: int = 0
    #: Answers received in all, the warm-up's too (what CPU seconds are divided by).
    calls: int = 0

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 0.50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 0.99) * 1000

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed > 0 else 0.0


async def closed_loop(
    calls: Sequence[Callable[[], Awaitable[object]]], *, duration: float, warmup: float
) -> LoadResult:
    """Run every ``calls[i]`` in its own loop for ``warmup + duration`` seconds."""
    latencies: list[float] = []
    errors = answered = 0
    clock = time.perf_counter
    start = clock()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def worker(call: Callable[[], Awaitable[object]]) -> None:
        nonlocal errors, answered
        while True:
            t0 = clock()
            if t0 >= stop_at:
                return
            try:
                await call()
            except Exception:
                errors += 1
                await asyncio.sleep(0.01)
                continue
            t1 = clock()
            answered += 1
            if t0 >= measure_from and t1 <= stop_at:
                latencies.append(t1 - t0)

    await asyncio.gather(*(worker(c) for c in calls))
    return LoadResult(latencies, duration, errors, answered)
