"""The notifier: events from the bus to webhooks (``resofleet notifier``).

- :mod:`~resofleet.notifier.watch`: events in, notices out (sans I/O).
- :mod:`~resofleet.notifier.presence`: which agents went silent (sans I/O).
- :mod:`~resofleet.notifier.formats`: the signed JSON body and the Discord message.
- :mod:`~resofleet.notifier.delivery`: one webhook's workers, retries and dead letters.
- :mod:`~resofleet.notifier.service`: :class:`Notifier`, the queues that tie them.
- :mod:`~resofleet.notifier.settings`: ``[notifier]`` and ``[[webhooks]]``.

It imports only :mod:`resofleet.contracts` and :mod:`resofleet.bus`.
"""

from __future__ import annotations

from .formats import SIGNATURE_HEADER, discord_body, json_body, sign, signature_header
from .notices import DeadLetter, Notice, decode_dead, decode_notice
from .service import Notifier
from .settings import ALL_EVENTS, EventType, NotifierSettings, WebhookSettings, resolve_secret, resolve_url, retry_time
from .watch import Watcher

__all__ = [
    "ALL_EVENTS",
    "DeadLetter",
    "EventType",
    "Notice",
    "Notifier",
    "NotifierSettings",
    "SIGNATURE_HEADER",
    "WebhookSettings",
    "Watcher",
    "decode_dead",
    "decode_notice",
    "discord_body",
    "json_body",
    "resolve_secret",
    "resolve_url",
    "retry_time",
    "sign",
    "signature_header",
]
