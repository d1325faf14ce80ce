"""The notifier against a local webhook receiver, over LocalBus and AmqpBus (a real
RabbitMQ): events published on the bus arrive as signed POSTs, retried, dead-lettered,
shared between notifiers, and a slow endpoint holds up no other."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time

from resofleet.bus import Bus
from resofleet.contracts import Announce, ServerPresence, Topology
from resofleet.notifier import decode_dead
from resofleet.notifier.notices import Notice, encode
from resofleet.notifier.service import EVENT_KINDS
from resofleet.notifier.settings import EVENTS_QUEUE
from tests.support.notices import state, world, worlds
from tests.support.receiver import Receiver
from tests.support.timing import AT_ONCE

from .conftest import SECRET, hook

#: Seconds a test watches for POSTs that must not come.
QUIET = 0.5
#: Seconds a test waits for a dead letter it expects.
WAIT = 10.0


def verify(post, secret: str = SECRET) -> None:
    """The documented check a receiver makes, computed independently."""
    fields = dict(part.split("=", 1) for part in post.headers["X-Resofleet-Signature"].split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + post.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    assert abs(int(fields["t"]) - time.time()) < 60


async def test_events_arrive_as_signed_json(bus_factory, notifiers, receiver: Receiver):
    """A server going down and up and a user joining arrive as JSON whose signature
    verifies, one POST each, with the event in a header."""
    bus: Bus = await bus_factory()
    await notifiers(bus, [hook(receiver, "ops")])
    await bus.publish(worlds("eu-1", world("Hub", [])))  # baseline
    await bus.publish(state("eu-1", "ready"))
    await bus.publish(state("eu-1", "exited", "code 1"))
    await bus.publish(worlds("eu-1", world("Hub", ["ann"])))
    posts = await receiver.wait_for("ops", 3)
    for post in posts:
        verify(post)
        assert post.headers["Content-Type"] == "application/json"
        assert post.headers["X-Resofleet-Event"] == post.json["event"]
        assert post.delivery == post.json["id"]
    assert [p.json["event"] for p in posts] == ["server_up", "server_down", "user_joined"]
    assert posts[2].json["data"]["user"] == "ann" and posts[2].json["server"] == "eu-1"
    await asyncio.sleep(QUIET)
    assert len(receiver.posts["ops"]) == 3


async def test_a_tampered_body_fails_verification(bus_factory, notifiers, receiver: Receiver):
    """The signature covers the body: one changed byte and it does not verify."""
    bus = await bus_factory()
    await notifiers(bus, [hook(receiver, "ops")])
    await bus.publish(state("eu-1", "ready"))
    (post,) = await receiver.wait_for("ops", 1)
    post.body = post.body.replace(b"eu-1", b"eu-2")
    try:
        verify(post)
    except AssertionError:
        return
    raise AssertionError("a changed body verified")


async def test_retries_then_success(bus_factory, notifiers, receiver: Receiver):
    """An endpoint that fails twice gets the notice a third time, with the same delivery
    id and a fresh signature, and then no more."""
    bus = await bus_factory()
    receiver.fail_first["ops"] = 2
    notifier = await notifiers(bus, [hook(receiver, "ops")])
    await bus.publish(state("eu-1", "ready"))
    posts = await receiver.wait_for("ops", 3)
    assert len({p.delivery for p in posts}) == 1
    for post in posts:
        verify(post)
    await asyncio.sleep(QUIET)
    assert len(receiver.posts["ops"]) == 3
    retried = notifier.metrics.deliveries.labels("ops", "retry")._value.get()
    assert retried == 2


async def test_dead_letter_after_the_limit(bus_factory, notifiers, receiver: Receiver, topology: Topology, caplog):
    """An endpoint that always fails gets ``max_attempts`` tries, then the notice is in the
    dead-letter queue with the reason, a warning names the webhook (never its URL), and
    the endpoint hears no more of it."""
    caplog.set_level(logging.WARNING, logger="resofleet.notifier")
    bus = await bus_factory()
    receiver.fail_first["dead"] = 1000
    await notifiers(bus, [hook(receiver, "dead", max_attempts=3)])
    await bus.publish(state("eu-1", "ready"))
    await receiver.wait_for("dead", 3)
    dead = await (await bus.work_queue(topology.notify_dead, maxsize=10_000)).consume(prefetch=1)
    async with asyncio.timeout(WAIT):
        delivery = await dead.get()
    letter = decode_dead(delivery.body)
    await delivery.ack()
    await dead.close()
    assert letter.webhook == "dead" and letter.attempts == 3
    assert letter.notice.event == "server_up" and "503" in letter.reason
    await asyncio.sleep(QUIET)
    assert len(receiver.posts["dead"]) == 3
    (line,) = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert "webhook=dead" in line and letter.notice.id in line
    assert receiver.url("dead") not in caplog.text


async def test_an_undecodable_event_is_dropped_and_the_next_delivered(bus_factory, notifiers, receiver: Receiver, topology: Topology):
    """Garbage in the events queue (a peer's bug) is logged and dropped; the notifier
    goes on with the next event."""
    bus = await bus_factory()
    await notifiers(bus, [hook(receiver, "ops")])
    queue = await bus.work_queue(  # declared as the notifier declares it
        topology.notify_events, events=[f"*.{kind}" for kind in EVENT_KINDS],
        maxsize=EVENTS_QUEUE, single_active=True,
    )
    await queue.put(b"\xc1 not msgpack")
    await bus.publish(state("eu-1", "ready"))
    (post,) = await receiver.wait_for("ops", 1)
    assert post.json["event"] == "server_up"


async def test_a_refusal_is_dead_lettered_at_once(bus_factory, notifiers, receiver: Receiver, topology: Topology):
    """A 4xx answer (the receiver will never take it) is not retried."""
    bus = await bus_factory()
    receiver.status["dead"] = 401
    await notifiers(bus, [hook(receiver, "dead", max_attempts=5)])
    await bus.publish(state("eu-1", "ready"))
    await receiver.wait_for("dead", 1)
    dead = await (await bus.work_queue(topology.notify_dead, maxsize=10_000)).consume(prefetch=1)
    async with asyncio.timeout(WAIT):
        letter = decode_dead((await dead.get()).body)
    await dead.close()
    assert letter.attempts == 1 and "401" in letter.reason
    assert len(receiver.posts["dead"]) == 1


async def test_a_huge_error_page_gives_a_short_reason(bus_factory, notifiers, receiver: Receiver, topology: Topology):
    """A refusal with a 32 MB body: the dead letter's reason is the status and the start
    of the body (the notifier reads only that start: ``Sender._post``)."""
    bus = await bus_factory()
    receiver.status["dead"] = 400
    receiver.body["dead"] = b"bad request: " + b"x" * (32 * 1024 * 1024)
    await notifiers(bus, [hook(receiver, "dead", max_attempts=1)])
    await bus.publish(state("eu-1", "ready"))
    dead = await (await bus.work_queue(topology.notify_dead, maxsize=10_000)).consume(prefetch=1)
    async with asyncio.timeout(WAIT):
        letter = decode_dead((await dead.get()).body)
    await dead.close()
    assert letter.reason.startswith("HTTP 400: bad request: xxx") and len(letter.reason) < 256


async def test_a_slow_endpoint_does_not_delay_another(bus_factory, notifiers, receiver: Receiver):
    """While one endpoint takes seconds per POST, another gets every notice at once."""
    bus = await bus_factory()
    receiver.delay["slow"] = 1.0  # ten POSTs behind it would take ten seconds
    await notifiers(bus, [hook(receiver, "slow", timeout=10.0), hook(receiver, "fast")])
    started = time.perf_counter()
    for i in range(10):
        await bus.publish(state(f"s{i}", "ready"))
    fast = await receiver.wait_for("fast", 10)
    assert fast[-1].at - started < AT_ONCE
    assert len(receiver.posts["slow"]) < 10  # it is still working through its backlog


async def test_filters_by_event_and_server_pattern(bus_factory, notifiers, receiver: Receiver):
    """A webhook gets only the events it names, of the servers its patterns match."""
    bus = await bus_factory()
    await notifiers(bus, [hook(receiver, "ops", events=("server_down",), servers=("eu-*",))])
    for server in ("eu-1", "us-1"):
        await bus.publish(state(server, "ready"))
        await bus.publish(state(server, "exited"))
    (post,) = await receiver.wait_for("ops", 1)
    assert (post.json["event"], post.json["server"]) == ("server_down", "eu-1")
    await asyncio.sleep(QUIET)
    assert len(receiver.posts["ops"]) == 1


async def test_two_notifiers_share_the_work_and_send_once(bus_factory, notifiers, receiver: Receiver):
    """Two notifiers on one queue: every notice arrives exactly once."""
    first, second = await bus_factory(), await bus_factory()
    await notifiers(first, [hook(receiver, "ops")])
    await notifiers(second, [hook(receiver, "ops")])
    for i in range(30):
        await first.publish(state(f"s{i}", "ready"))
    posts = await receiver.wait_for("ops", 30)
    await asyncio.sleep(QUIET)
    posts = receiver.posts["ops"]
    assert len(posts) == 30
    assert sorted(p.json["server"] for p in posts) == sorted(f"s{i}" for i in range(30))


async def test_discord_body(bus_factory, notifiers, receiver: Receiver):
    """A Discord webhook gets an embed with the text made plain and no mention allowed."""
    bus = await bus_factory()
    await notifiers(bus, [hook(receiver, "chat", format="discord")])
    await bus.publish(worlds("eu-1", world("Hub", [])))
    await bus.publish(worlds("eu-1", world("<b>Hub</b>", ["@everyone_<color=red>x</color>"], session="S-Hub")))
    (post,) = await receiver.wait_for("chat", 1)
    body = post.json
    assert "X-Resofleet-Signature" not in post.headers
    assert body["allowed_mentions"] == {"parse": []}
    (embed,) = body["embeds"]
    assert embed["title"] == "User joined: eu-1"
    assert embed["description"] == r"@everyone\_x joined Hub on eu-1"


async def test_an_agent_that_goes_silent_is_a_server_down(bus_factory, notifiers, receiver: Receiver):
    """A server whose agent stops announcing it (killed outright: no ``exited``) is
    announced down after three intervals, and up when it is announced again."""
    bus = await bus_factory()
    await notifiers(bus, [hook(receiver, "ops")])
    announce = Announce(agent="h1", host="h", servers=[ServerPresence(server="eu-1", status="running")], interval=0.2)
    await bus.broadcast(announce)
    (post,) = await receiver.wait_for("ops", 1)
    assert post.json["event"] == "server_down" and "stopped announcing" in post.json["text"]
    await bus.broadcast(announce)
    posts = await receiver.wait_for("ops", 2)
    assert posts[1].json["event"] == "server_up"


async def test_a_stop_takes_no_new_notice_for_any_webhook(bus_factory, notifiers, receiver: Receiver):
    """Stopping ends every webhook's POST in progress and starts none: each webhook stops
    taking notices at once, not only after the webhooks before it have finished theirs, so
    a stop takes one POST's time, not one per webhook (a pod's grace period covers it)."""
    bus = await bus_factory()
    receiver.delay["slow"], receiver.delay["fast"] = 2.0, 0.3
    notifier = await notifiers(
        bus, [hook(receiver, "slow", concurrency=1), hook(receiver, "fast", concurrency=1)]
    )
    for i in range(5):
        await bus.publish(state(f"s{i}", "ready"))
    await receiver.wait_for("slow", 1)
    await receiver.wait_for("fast", 1)
    started = time.perf_counter()
    await notifier.close()
    assert time.perf_counter() - started < receiver.delay["slow"] + AT_ONCE
    assert len(receiver.posts["slow"]) == 1
    assert len(receiver.posts["fast"]) == 1  # its first POST ended; no other began


async def test_a_notice_queued_twice_is_sent_once_by_parallel_workers(bus_factory, notifiers, receiver: Receiver, topology: Topology):
    """The same notice queued twice (an event routed again after the link dropped while
    its notices were being queued: same id) goes out once, also when two workers of the
    webhook take both copies at the same time: the second waits for no POST of its own."""
    bus = await bus_factory()
    receiver.delay["ops"] = 0.5  # both copies are taken while the first POST is under way
    ops = hook(receiver, "ops", concurrency=4)
    await notifiers(bus, [ops])
    queue = await bus.work_queue(topology.notify_queue("ops"), maxsize=ops.backlog, overflow="reject")
    body = encode(Notice(id="n-1", event="server_down", server="eu-1", time=time.time(), text="Server eu-1 is down"))
    await queue.put(body)
    await queue.put(body)
    await receiver.wait_for("ops", 1)
    await asyncio.sleep(receiver.delay["ops"] + QUIET)
    assert [post.delivery for post in receiver.posts["ops"]] == ["n-1"]


async def test_concurrency_posts_that_many_notices_at_once(bus_factory, notifiers, receiver: Receiver, topology: Topology):
    """A webhook with ``concurrency = 4`` has four POSTs under way at once: four notices
    reach a receiver that holds each answer for seconds, before it answered any."""
    bus = await bus_factory()
    receiver.delay["ops"] = 4.0
    ops = hook(receiver, "ops", concurrency=4, timeout=10.0)
    await notifiers(bus, [ops])
    queue = await bus.work_queue(topology.notify_queue("ops"), maxsize=ops.backlog, overflow="reject")
    for i in range(4):
        notice = Notice(id=f"n-{i}", event="server_down", server=f"eu-{i}", time=time.time(), text="down")
        await queue.put(encode(notice))
    posts = await receiver.wait_for("ops", 4, timeout=receiver.delay["ops"] - 1.0)
    assert sorted(post.delivery for post in posts) == ["n-0", "n-1", "n-2", "n-3"]
