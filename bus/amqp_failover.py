"""Several broker addresses for one :class:`~resofleet.bus.amqp.AmqpBus`.

A fleet may run RabbitMQ as a cluster of nodes, each with its own address, and give every
process the whole list (``[bus] url = ["amqp://a/", "amqp://b/", "amqp://c/"]``, or one
string with the URLs separated by commas or spaces). :func:`broker_urls` reads either
form. :class:`FailoverConnection` is aio-pika's robust connection (reconnects, restores
channels, queues, bindings and consumers) with one change: whenever its connection drops
or an attempt to connect fails, the next attempt goes to the next URL of the list, round
the list. A node that died is therefore tried again only after every other one was, and a
process whose node died reconnects to another at once, not after a reconnection interval.

Having moved to another node, it waits :data:`RESTORE_SETTLE` before restoring its
queues there. The cluster deletes the lost node's queues (``rabbit_amqqueue:on_node_down``)
a little after it notices the loss: it reads the records to delete first, so a queue
declared again under the same name in between (aio-pika restores every queue under its
old name) is deleted with them, and the process is left connected with a request queue or
a subscription that no longer exists, for good (seen here: a gateway's bind refused with
``not_found`` 40 ms after the cleanup; the race is rabbitmq-server PR #10244's). A second
is many times what the cleanup took here (40-70 ms).

aio-pika's :func:`~aio_pika.connect_robust` takes one URL, and its reconnection loop is
private; what it does expose is that every attempt connects to ``self.url`` and that every
drop and every failed attempt passes through ``_on_connection_close``. Moving ``self.url``
on there is the whole mechanism, so the reconnection loop, its interval, its bound per
attempt and the restore of channels stay aio-pika's own.

:func:`connect` starts one: it tries the URLs in their order, each within its own bound,
and starts from the first that answers (the others follow it, in their order).

Errors::

    ValueError          broker_urls: no URL, or one that is not amqp:// or amqps://
    BusUnavailable      connect: no broker answered; names each URL (password hidden)
                        with what went wrong
"""

from __future__ import annotations

import asyncio
import logging
import re
import contextlib
from collections.abc import Iterable, Sequence
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import aiormq
from aio_pika import RobustConnection
from aio_pika.connection import make_url
from yarl import URL

from .errors import BusUnavailable

__all__ = ["RESTORE_SETTLE", "FailoverConnection", "broker_urls", "connect", "redact"]

log = logging.getLogger(__name__)

#: Seconds a reconnection to another node waits before restoring queues there (docstring).
RESTORE_SETTLE: Final = 1.0

_SEPARATORS = re.compile(r"[\s,]+")
_SCHEMES = ("amqp://", "amqps://")


def broker_urls(url: str | Iterable[str]) -> tuple[str, ...]:
    """The broker URLs in ``url``: one URL, several separated by commas and/or whitespace,
    or an iterable of them (each of which may itself hold several). Order is kept,
    repetitions are dropped."""
    parts = [url] if isinstance(url, str) else list(url)
    found: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise ValueError(f"a broker URL must be a string, not {type(part).__name__}")
        for one in _SEPARATORS.split(part.strip()):
            if not one:
                continue
            if not one.startswith(_SCHEMES):
                raise ValueError(f"{redact(one)} is not an amqp:// or amqps:// URL")
            if one not in found:
                found.append(one)
    if not found:
        raise ValueError("no broker URL given")
    return tuple(found)


def redact(url: str | URL) -> str:
    """``amqp://user:secret@host/`` -> ``amqp://user:***@host/`` for messages and logs."""
    text = str(url)
    scheme, sep, rest = text.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return text
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


class FailoverConnection(RobustConnection):
    """A robust connection over several URLs (see the module docstring). ``urls`` are
    complete (aio-pika's options in their query, as :func:`aio_pika.connection.make_url`
    writes them); the first is tried first."""

    def __init__(
        self,
        urls: Sequence[URL],
        loop: asyncio.AbstractEventLoop | None = None,
        **kwargs: Any,
    ) -> None:
        if not urls:
            raise ValueError("no broker URL given")
        super().__init__(urls[0], loop=loop, **kwargs)
        self.urls: tuple[URL, ...] = tuple(urls)
        self._index = 0
        self._moved = False  # the next connection is to another node than the last

    def _next_url(self) -> None:
        if len(self.urls) < 2:
            return
        self._index = (self._index + 1) % len(self.urls)
        self.url = self.urls[self._index]
        self._moved = True
        log.info("bus: the next connection attempt goes to %s", redact(self.url))

    async def _on_connected(self) -> None:
        # aio-pika's own restores the channels, queues and consumers: on another node, let
        # the cluster finish deleting the lost node's queues first (module docstring)
        if self._moved and self.connection_attempt:
            self._moved = False
            log.info("bus: connected to %s; restoring in %g s, once the cluster has let go of "
                     "the lost node's queues", redact(self.url), RESTORE_SETTLE)
            await asyncio.sleep(RESTORE_SETTLE)
        await super()._on_connected()

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # before aio-pika's own handler, which wakes the reconnection loop
        if not self.close_called and not self.is_closed:
            self._next_url()
        await super()._on_connection_close(closing)


async def connect(
    urls: Sequence[str],
    *,
    name: str,
    timeout: float,
    reconnect_interval: float,
    heartbeat: int,
) -> FailoverConnection:
    """A connected :class:`FailoverConnection` to the first of ``urls`` that answers within
    ``timeout`` seconds. ``heartbeat`` (seconds) applies to every URL that does not set its
    own ``?heartbeat=``; ``name`` is shown in the broker's list of connections."""
    failures: list[str] = []
    for first, url in enumerate(urls):
        order = (*urls[first:], *urls[:first])
        connection = FailoverConnection(
            [_with_options(u, reconnect_interval=reconnect_interval, heartbeat=heartbeat) for u in order],
            client_properties={"connection_name": name},
        )
        try:
            async with asyncio.timeout(timeout):
                await connection.connect(timeout=timeout)
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            failures.append(f"{redact(url)}: {exc or 'timed out'}")
            with contextlib.suppress(Exception):
                await connection.close()
            continue
        if failures:
            log.warning("bus %s: connected to %s; unreachable: %s", name, redact(url), "; ".join(failures))
        return connection
    raise BusUnavailable(f"Cannot reach the message broker at {'; '.join(failures)}.")


def _with_options(url: str, *, reconnect_interval: float, heartbeat: int) -> URL:
    options: dict[str, Any] = {"reconnect_interval": reconnect_interval}
    if "heartbeat" not in parse_qs(urlsplit(url).query):
        options["heartbeat"] = heartbeat
    return make_url(url, **options)
