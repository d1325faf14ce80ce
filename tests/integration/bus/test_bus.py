"""Bus behaviour, the same suite over LocalBus and AmqpBus (a real RabbitMQ)."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from resofleet.bus import INTERNAL_SENTENCE, AlreadyServed, ReplyError, RequestTimeout, ServerOffline
from resofleet.contracts import (
    Announce,
    BusEvent,
    BusReply,
    BusRequest,
    CommandResponse,
    ContainerOutputBatch,
    Discover,
    Error,
    ErrorCode,
    OutputLine,
    RunCommand,
    ServerPresence,
)
from tests.support.timing import AT_ONCE


def cmd(server: str, text: str, timeout: float = 5.0) -> BusRequest:
    return BusRequest(server=server, body=RunCommand(command=text), timeout=timeout)


def echo_handler(server: str):
    async def handler(request: BusRequest, deadline: float) -> BusReply:
        assert isinstance(request.body, RunCommand)
        return BusReply(
            body=CommandResponse(command=request.body.command, output=f"{server}:{request.body.command}", server=server)
        )

    return handler


def output_event(server: str, seq: int) -> BusEvent:
    return BusEvent(
        server=server,
        kind="output",
        body=ContainerOutputBatch(server=server, epoch="e1", lines=[OutputLine(seq=seq, output=f"line {seq}")]),
    )


async def test_request_gets_the_reply_of_the_serving_agent(bus_factory):
    """A request reaches the handler serving its server and its reply comes back."""
    agent, gateway = await bus_factory(), await bus_factory()
    await agent.serve("alpha", echo_handler("alpha"))
    reply = await gateway.request(cmd("alpha", "worlds"))
    assert reply.body == CommandResponse(command="worlds", output="alpha:worlds", server="alpha")


async def test_concurrent_requests_to_several_servers_are_matched(bus_factory):
    """Hundreds of requests in flight to several servers each get their own reply."""
    agent, gateway = await bus_factory(), await bus_factory()
    servers = ["s1", "s2", "s3", "s4"]
    for server in servers:
        await agent.serve(server, echo_handler(server), concurrency=4)
    requests = [(servers[i % 4], f"cmd-{i}") for i in range(400)]
    replies = await asyncio.gather(*(gateway.request(cmd(s, c)) for s, c in requests))
    for (server, text), reply in zip(requests, replies):
        assert reply.body.output == f"{server}:{text}"
        assert reply.body.server == server


async def test_offline_server_answered_at_once(bus_factory):
    """A request for a server nobody serves fails with ServerOffline at once, not at its
    10 s timeout."""
    gateway = await bus_factory()
    started = time.perf_counter()
    with pytest.raises(ServerOffline):
        await gateway.request(cmd("nobody", "worlds", timeout=10))
    assert time.perf_counter() - started < AT_ONCE


async def test_server_is_offline_again_after_serving_stops(bus_factory):
    """Once the agent stops serving, requests are answered offline, not timed out."""
    agent, gateway = await bus_factory(), await bus_factory()
    served = await agent.serve("beta", echo_handler("beta"))
    await gateway.request(cmd("beta", "x"))
    await served.close()
    with pytest.raises(ServerOffline):
        await gateway.request(cmd("beta", "x", timeout=10))


async def test_request_times_out_at_its_deadline(bus_factory):
    """A handler that never answers makes the request fail with RequestTimeout on time."""
    agent, gateway = await bus_factory(), await bus_factory()
    release = asyncio.Event()

    async def stuck(request: BusRequest, deadline: float) -> BusReply:
        await release.wait()
        return BusReply(body=CommandResponse(command="", output="", server="slow"))

    await agent.serve("slow", stuck)
    started = time.perf_counter()
    with pytest.raises(RequestTimeout):
        await gateway.request(cmd("slow", "save", timeout=0.3))
    assert 0.29 <= time.perf_counter() - started < 0.3 + AT_ONCE  # not early, not much late
    release.set()


async def test_expired_request_never_reaches_the_handler(bus_factory):
    """A request that waited past its timeout behind a busy console is never run late."""
    agent, gateway = await bus_factory(), await bus_factory()
    seen: list[str] = []
    release = asyncio.Event()

    running = asyncio.Event()

    async def serial(request: BusRequest, deadline: float) -> BusReply:
        seen.append(request.body.command)
        if request.body.command == "first":
            running.set()
            await release.wait()
        return BusReply(body=CommandResponse(command=request.body.command, output="", server="busy"))

    await agent.serve("busy", serial, concurrency=1)
    first = asyncio.create_task(gateway.request(cmd("busy", "first", timeout=5)))
    await asyncio.wait_for(running.wait(), 5)
    with pytest.raises(RequestTimeout):
        await gateway.request(cmd("busy", "late", timeout=0.2))
    release.set()
    await first
    # the console is free again: a fresh request runs, the expired one never did
    await gateway.request(cmd("busy", "after", timeout=5))
    assert seen == ["first", "after"]


async def test_a_failing_handler_leaks_nothing_and_leaves_a_reference_in_the_log(bus_factory, caplog):
    """A handler bug is answered `internal` with a fixed sentence and a reference that finds
    the traceback in the log; the exception's text reaches no requester."""
    agent, gateway = await bus_factory(), await bus_factory()

    async def broken(request: BusRequest, deadline: float) -> BusReply:
        raise RuntimeError("secret path /etc/x")

    await agent.serve("buggy", broken)
    with caplog.at_level(logging.ERROR):
        replies = [await gateway.request(cmd("buggy", f"try {i}")) for i in range(2)]
    references = []
    for reply in replies:
        assert isinstance(reply.body, Error)
        assert (reply.body.code, reply.body.server) == (ErrorCode.INTERNAL, "buggy")
        assert reply.body.message.startswith(INTERNAL_SENTENCE.removesuffix("."))
        assert "secret" not in reply.body.message and "/etc/x" not in reply.body.message
        [reference] = re.findall(r"\(reference ([0-9a-f]+)\)\.$", reply.body.message)
        references.append(reference)
    assert references[0] != references[1]
    for reference in references:
        [logged] = [r for r in caplog.records if reference in r.getMessage()]
        assert logged.exc_info is not None and "secret path /etc/x" in str(logged.exc_info[1])
    # the handler still serves: the failure killed no worker or consumer
    assert (await gateway.request(cmd("buggy", "again"))).body.code == ErrorCode.INTERNAL


async def test_a_reply_error_reaches_the_requester_with_its_code_and_sentence_only(bus_factory, caplog):
    """A handler's ReplyError is answered with its code and sentence; its detail stays in the
    log, found by the reference the requester reads."""
    agent, gateway = await bus_factory(), await bus_factory()

    class Late(ReplyError):
        code = ErrorCode.TIMEOUT

    async def late(request: BusRequest, deadline: float) -> BusReply:
        raise Late("The console did not answer in time.", detail="tty /dev/pts/7 wedged")

    await agent.serve("late", late)
    with caplog.at_level(logging.WARNING):
        reply = await gateway.request(cmd("late", "save"))
    assert isinstance(reply.body, Error) and reply.body.code == ErrorCode.TIMEOUT
    assert reply.body.message.startswith("The console did not answer in time (reference ")
    assert "/dev/pts" not in reply.body.message
    [reference] = re.findall(r"\(reference ([0-9a-f]+)\)\.$", reply.body.message)
    [logged] = [r for r in caplog.records if reference in r.getMessage()]
    assert "tty /dev/pts/7 wedged" in logged.getMessage()


async def test_second_agent_cannot_claim_a_served_server(bus_factory):
    """Serving a server id another agent already serves fails with a clear error."""
    one, two = await bus_factory(), await bus_factory()
    await one.serve("gamma", echo_handler("gamma"))
    with pytest.raises(AlreadyServed, match="already served"):
        await two.serve("gamma", echo_handler("gamma"))


async def test_events_reach_every_subscriber_in_order(bus_factory):
    """Each subscriber whose pattern matches gets every event, in publish order."""
    agent, g1, g2 = await bus_factory(), await bus_factory(), await bus_factory()
    all_events = await g1.subscribe(["#"])
    only_a = await g2.subscribe(["a.*"])
    for seq in range(200):
        await agent.publish(output_event("a" if seq % 2 == 0 else "b", seq))
    got_all = [await asyncio.wait_for(all_events.get(), 5) for _ in range(200)]
    got_a = [await asyncio.wait_for(only_a.get(), 5) for _ in range(100)]
    assert [e.body.lines[0].seq for e in got_all] == list(range(200))
    assert [e.body.lines[0].seq for e in got_a] == list(range(0, 200, 2))
    assert all(e.server == "a" for e in got_a)


async def test_publish_says_whether_anyone_took_the_event(bus_factory):
    """An event no subscription is bound for is gone, and publish says so; one that a
    subscription takes is delivered, and publish says that too."""
    agent, gateway = await bus_factory(), await bus_factory()
    assert await agent.publish(output_event("unwatched", 1)) is False
    sub = await gateway.subscribe(["watched.*"])
    assert await agent.publish(output_event("watched", 1)) is True
    assert (await asyncio.wait_for(sub.get(), AT_ONCE)).server == "watched"
    assert await agent.publish(output_event("unwatched", 2)) is False
    await sub.close()
    assert await agent.publish(output_event("watched", 2)) is False


async def test_flooded_subscriber_stays_bounded_and_counts_drops(bus_factory):
    """A subscriber that does not read keeps at most maxsize events: the newest ones."""
    agent, gateway = await bus_factory(), await bus_factory()
    sub = await gateway.subscribe(["a.*"], maxsize=50)
    marker = await gateway.subscribe(["z.*"])
    for seq in range(2000):
        await agent.publish(output_event("a", seq))
    await agent.publish(output_event("z", 0))
    await asyncio.wait_for(marker.get(), 5)  # everything before it was delivered
    # on AMQP the broker may also drop at its own bound; whatever arrives is the newest
    deadline = time.monotonic() + 5
    while len(sub) + sub.dropped < 2000 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(sub) <= 50
    kept = [e.body.lines[0].seq for e in sub.drain()]
    assert kept[-1] == 1999
    assert kept == sorted(kept)
    # LocalBus drops only in the subscription; AMQP may also drop at the broker's bound
    assert sub.dropped > 0 and len(kept) + sub.dropped <= 2000


async def test_subscription_bindings_change_while_running(bus_factory):
    """bind/unbind change which servers' events arrive, on a live subscription."""
    agent, gateway = await bus_factory(), await bus_factory()
    sub = await gateway.subscribe([])
    await sub.bind("x.*")
    await agent.publish(output_event("y", 1))
    await agent.publish(output_event("x", 2))
    event = await asyncio.wait_for(sub.get(), 5)
    assert (event.server, event.body.lines[0].seq) == ("x", 2)
    await sub.unbind("x.*")
    await sub.bind("y.*")
    await agent.publish(output_event("x", 3))
    await agent.publish(output_event("y", 4))
    event = await asyncio.wait_for(sub.get(), 5)
    assert (event.server, event.body.lines[0].seq) == ("y", 4)


async def test_presence_reaches_every_reader(bus_factory):
    """Announcements and discover requests reach every presence subscriber."""
    agent, g1, g2 = await bus_factory(), await bus_factory(), await bus_factory()
    p1, p2 = await g1.presence(), await g2.presence()
    await g1.broadcast(Discover(gateway="g1"))
    announce = Announce(
        agent="agent-1", host="host-a", servers=[ServerPresence(server="a", status="running")], interval=2
    )
    await agent.broadcast(announce)
    for sub in (p1, p2):
        got = [await asyncio.wait_for(sub.get(), 5) for _ in range(2)]
        # Two publishers on two connections: the broker may deliver them in either order.
        assert sorted(got, key=repr) == sorted([Discover(gateway="g1"), announce], key=repr)
