"""The pure bounds: reply pages, and the rate limit charging by work."""

from __future__ import annotations

from resofleet.agent.output import LINE_CHARS, OutputLog, page_size
from resofleet.contracts import OutputHistory, OutputLine, Subscribe
from resofleet.contracts.client import MAX_OUTPUT_BYTES, MAX_SUBSCRIBE_SERVERS
from resofleet.gateway.ratelimit import SUBSCRIBE_IDS_PER_TOKEN, TokenBucket, cost
from resofleet.gateway.routing import page


async def _nothing(_: object) -> None:
    return None


def test_the_agent_answers_a_page_of_at_most_the_reply_bound_and_says_it_is_not_complete():
    """10,000 lines of 1 KB: the first page fits the bound, complete false; asking since its
    last line continues."""
    log = OutputLog("s", _nothing)
    for _ in range(2000):
        log.add("x" * 1000)
    first = log.history(0, None, 100_000)
    assert not first.complete and 0 < len(first.lines) < 2000
    assert sum(len(line.output) for line in first.lines) <= MAX_OUTPUT_BYTES
    second = log.history(first.lines[-1].seq, log.epoch, None)
    assert second.lines[0].seq == first.lines[-1].seq + 1


def test_a_line_longer_than_the_bound_still_comes_alone():
    """A page holds one line at least, whatever its size (an agent cuts its own lines to
    LINE_CHARS, far below the bound; an older agent may not)."""
    lines = [OutputLine(seq=1, output="y" * (MAX_OUTPUT_BYTES + 10)), OutputLine(seq=2, output="z")]
    assert page_size(lines) == 1
    log = OutputLog("s", _nothing)
    log.add("y" * (MAX_OUTPUT_BYTES + 10))
    assert len(log.history(None, None, None).lines[0].output) < LINE_CHARS + 64


def test_the_gateway_pages_an_unbounded_reply_and_leaves_a_small_one_alone():
    big = OutputHistory(server="s", epoch="e", complete=True,
                        lines=[OutputLine(seq=i, output="x" * 4000) for i in range(1, 1001)])
    cut = page(big)
    assert not cut.complete and len(cut.lines) == MAX_OUTPUT_BYTES // 4032
    small = OutputHistory(server="s", epoch="e", complete=True, lines=big.lines[:3])
    assert page(small) is small


def test_a_subscribe_costs_by_the_ids_it_lists_and_never_more_than_the_burst():
    assert cost(Subscribe()) == 1.0
    ids = [f"s{i}" for i in range(MAX_SUBSCRIBE_SERVERS)]
    assert cost(Subscribe(servers=ids)) == 1 + MAX_SUBSCRIBE_SERVERS / SUBSCRIBE_IDS_PER_TOKEN
    now = [0.0]
    bucket = TokenBucket(10.0, 20, clock=lambda: now[0])
    assert bucket.take(9) == 0.0 and bucket.take(9) == 0.0
    assert abs(bucket.take(9) - 0.7) < 1e-9  # 2 tokens left, 7 more at 10/s
    assert bucket.take(1000) > 0  # capped at the burst: it passes once the bucket is full
    now[0] = 10.0
    assert bucket.take(1000) == 0.0
