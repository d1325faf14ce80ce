"""Delivery to one webhook: its queue, its workers, its retries, its dead letters.

Each webhook has a durable queue of notices (``Topology.notify_queue``) and a
:class:`Sender` with ``concurrency`` workers consuming it (every notifier runs one per
webhook; they share the queue, so each notice goes out once). A webhook that is slow or
down holds only its own workers and fills only its own queue: the others never wait for it.

One notice, one worker:

1. POST the body (:mod:`resofleet.notifier.formats`), within ``timeout`` seconds for the
   whole request, redirects not followed.
2. A 2xx answer: delivered, acknowledged.
3. A network error, a timeout, 408, 429 or a 5xx: retried after ``backoff`` seconds, then
   twice as long each time up to ``max_backoff`` (a ``Retry-After`` in seconds is honoured
   within that cap), each wait jittered by +-10% so that notifiers do not retry in step;
   ``max_attempts`` attempts in all.
4. Any other answer (400, 401, 404, a redirect: the receiver will not take it however
   often it is asked), or the last attempt failing: the notice goes to the dead-letter
   queue (``Topology.notify_dead``) as a :class:`~resofleet.notifier.notices.DeadLetter`
   with the reason, a warning is logged (webhook name, notice id, reason: never the URL),
   and it is acknowledged.

The notice is acknowledged only after 2 or 4, so a notifier stopped or killed meanwhile
leaves it in the queue for the next one. A sender remembers the ids of the last
:data:`RECENT_IDS` notices it delivered or dead-lettered, and of those its workers hold
(with ``concurrency`` above one, two workers may take both copies at once), and
acknowledges one it meets again without sending it: the same notice comes back when the link drops between a POST
and its acknowledgement, or when an event is routed again after the link dropped while
its notices were being queued (:mod:`resofleet.notifier.watch` gives it the same id).
Another notifier does not know those ids: a notice redelivered to it is sent again. On :meth:`Sender.close` a POST in progress
finishes (within its timeout) and is acknowledged; a worker waiting to retry stops at
once and leaves its notice in the queue (its attempts start again from one).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from fnmatch import fnmatchcase
from collections.abc import Callable
from typing import Final

import aiohttp
import msgspec

from resofleet.bus import BusError, Delivery, Subscription, WorkQueue

from .formats import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, discord_body, json_body, signature_header
from .metrics import NotifierMetrics
from .notices import DeadLetter, Notice, decode_notice, encode
from .settings import WebhookSettings

__all__ = ["JITTER", "RETRYABLE_STATUS", "Sender", "backoff_delay", "next_delivery"]

log = logging.getLogger(__name__)

#: Share by which each retry wait varies at random, either way.
JITTER: Final = 0.1
#: HTTP statuses worth asking again: the receiver is busy or failing, not refusing.
RETRYABLE_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Seconds to wait before taking a notice again when the dead-letter queue could not be
#: written (the bus link is down): the link comes back within seconds.
REQUEUE_PAUSE: Final = 1.0
#: Ids of the notices a sender delivered or dead-lettered lately, remembered so that the
#: same notice queued again (an event routed again after the link dropped, a delivery
#: whose acknowledgement was lost) is not sent twice by this process: minutes of a busy
#: fleet's notices, under a megabyte.
RECENT_IDS: Final = 10_000
#: Characters of a receiver's answer kept in a dead letter's reason.
REASON_BODY: Final = 200


async def next_delivery(sub: Subscription[Delivery], stopping: asyncio.Event) -> Delivery | None:
    """The next delivery from ``sub``, or ``None`` once ``stopping`` is set (a delivery
    that arrives just then goes back to the queue). Raises :class:`EOFError` when ``sub``
    is closed."""
    get = asyncio.ensure_future(sub.get())
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not get.done():
            get.cancel()
    if not get.done() or get.cancelled():
        return None
    delivery = get.result()  # EOFError: closed
    if stopping.is_set():
        await delivery.requeue()
        return None
    return delivery


def backoff_delay(attempt: int, *, base: float, cap: float, rnd: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 for the first)."""
    delay = min(base * 2 ** (attempt - 1), cap)
    return delay * (1 + JITTER * (2 * rnd() - 1))


class _Outcome(msgspec.Struct, frozen=True):
    ok: bool
    retry: bool
    reason: str
    retry_after: float | None = None


class Sender:
    """The workers of one webhook (see the module docstring)."""

    def __init__(
        self,
        webhook: WebhookSettings,
        *,
        secret: str | None,
        queue: WorkQueue,
        dead: WorkQueue,
        session: aiohttp.ClientSession,
        metrics: NotifierMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.webhook = webhook
        self.queue = queue
        self._secret = secret
        self._dead = dead
        self._session = session
        self._metrics = metrics
        self._clock = clock
        self._sub: Subscription[Delivery] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        #: Ids of the notices this sender's workers hold now (at most ``concurrency``): a
        #: copy of one taken meanwhile by another worker is not sent a second time.
        self._sending: set[str] = set()
        self._ok = metrics.deliveries.labels(webhook.name, "ok")
        self._retried = metrics.deliveries.labels(webhook.name, "retry")
        self._died = metrics.deliveries.labels(webhook.name, "dead")
        self._latency = metrics.latency.labels(webhook.name)

    def wants(self, notice: Notice) -> bool:
        """Whether this webhook takes ``notice``: its events, its server patterns."""
        return notice.event in self.webhook.events and any(
            fnmatchcase(notice.server, pattern) for pattern in self.webhook.servers
        )

    async def start(self) -> None:
        self._sub = await self.queue.consume(prefetch=self.webhook.concurrency)
        self._workers = [
            asyncio.create_task(self._work(), name=f"notifier:{self.webhook.name}:{i}")
            for i in range(self.webhook.concurrency)
        ]

    def stop(self) -> None:
        """Stop taking notices, at once: a worker finishes the notice it holds (a POST in
        progress; one waiting to retry goes back) and takes no other."""
        self._stopping.set()

    async def close(self) -> None:
        """Stop taking notices; let POSTs in progress end; give back the rest. Idempotent."""
        self.stop()
        if self._workers:
            await asyncio.wait(self._workers, timeout=self.webhook.timeout + 1)
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        if self._sub is not None:
            await self._sub.close()

    async def _next(self) -> Delivery | None:
        """The next delivery, or ``None`` once stopping."""
        assert self._sub is not None
        return await next_delivery(self._sub, self._stopping)

    async def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                delivery = await self._next()
            except EOFError:
                return
            if delivery is None:
                return
            try:
                notice = decode_notice(delivery.body)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("webhook=%s: dropped an undecodable notice: %s", self.webhook.name, exc)
                await delivery.ack()
                continue
            if notice.id in self._recent or notice.id in self._sending:
                log.info("webhook=%s: notice %s was delivered already (or is being delivered); "
                         "not sent again", self.webhook.name, notice.id)
                await delivery.ack()
                continue
            self._sending.add(notice.id)
            try:
                await self._deliver(notice, delivery)
            except Exception:  # a bug must not stop the worker, nor one notice block the queue
                log.exception("webhook=%s: delivering notice %s failed", self.webhook.name, notice.id)
                if delivery.redelivered:
                    await delivery.ack()  # the second time: dropped, the traceback is logged
                else:
                    await delivery.requeue()
                    await asyncio.sleep(REQUEUE_PAUSE)
            finally:
                self._sending.discard(notice.id)

    async def _deliver(self, notice: Notice, delivery: Delivery) -> None:
        webhook = self.webhook
        outcome = _Outcome(False, False, "not tried")
        attempt = 0
        for attempt in range(1, webhook.max_attempts + 1):
            outcome = await self._post(notice)
            if outcome.ok:
                self._ok.inc()
                self._remember(notice)
                await delivery.ack()
                return
            if not outcome.retry or attempt == webhook.max_attempts:
                break
            self._retried.inc()
            delay = backoff_delay(attempt, base=webhook.backoff, cap=webhook.max_backoff)
            if outcome.retry_after is not None:
                delay = max(delay, min(outcome.retry_after, webhook.max_backoff))
            log.info("webhook=%s: notice %s attempt %d failed (%s); again in %.1f s",
                     webhook.name, notice.id, attempt, outcome.reason, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            if self._stopping.is_set():
                await delivery.requeue()  # the next notifier tries it afresh
                return
        await self.dead_letter(notice, outcome.reason, attempts=attempt)
        self._remember(notice)
        await delivery.ack()

    def _remember(self, notice: Notice) -> None:
        self._recent[notice.id] = None
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

    async def dead_letter(self, notice: Notice, reason: str, *, attempts: int) -> None:
        """Put ``notice`` in the dead-letter queue and say so in the log. Raises
        :class:`~resofleet.bus.BusError` when the queue cannot take it."""
        letter = DeadLetter(
            webhook=self.webhook.name, notice=notice, reason=reason, attempts=attempts,
            time=self._clock(),
        )
        while True:
            try:
                await self._dead.put(encode(letter))
                break
            except BusError as exc:  # the link is down: keep the notice until it is back
                if self._stopping.is_set():
                    raise
                log.warning("webhook=%s: dead-letter queue unavailable (%s)", self.webhook.name, exc)
                await asyncio.sleep(REQUEUE_PAUSE)
        self._died.inc()
        log.warning(
            "webhook=%s: notice %s (%s %s) dead-lettered after %d attempt(s): %s",
            self.webhook.name, notice.id, notice.event, notice.server, attempts, reason,
        )

    def _request(self, notice: Notice) -> tuple[bytes, dict[str, str]]:
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: notice.event,
            DELIVERY_HEADER: notice.id,
        }
        if self.webhook.format == "discord":
            return discord_body(notice), headers
        body = json_body(notice)
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = signature_header(self._secret, body, now=self._clock())
        return body, headers

    async def _post(self, notice: Notice) -> _Outcome:
        body, headers = self._request(notice)
        started = time.perf_counter()
        try:
            async with self._session.post(
                self.webhook.url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.webhook.timeout),
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    return _Outcome(True, False, f"HTTP {status}")
                # the start of the body only: a receiver's error page may be any size
                head = await response.content.read(REASON_BODY * 4)
                text = head.decode("utf-8", "replace")[:REASON_BODY]
                retry_after = _seconds(response.headers.get("Retry-After"))
                reason = f"HTTP {status}" + (f": {text.strip()}" if text.strip() else "")
                return _Outcome(False, status in RETRYABLE_STATUS, reason, retry_after)
        except TimeoutError:
            return _Outcome(False, True, f"no answer within {self.webhook.timeout:g} s")
        except aiohttp.ClientError as exc:
            return _Outcome(False, True, f"{type(exc).__name__}: {_redact(str(exc), self.webhook.url)}")
        finally:
            self._latency.observe(time.perf_counter() - started)


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (the HTTP-date form is ignored: the backoff applies)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _redact(text: str, url: str) -> str:
    """``text`` without the webhook's URL or its path (a Discord URL holds its token)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query):
        if secret and secret != "/":
            text = text.replace(secret, "<webhook>")
    return text
