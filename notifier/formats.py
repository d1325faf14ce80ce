"""What a notice looks like on the wire: the signed JSON body, or a Discord message.

Pure functions (the time is an argument), tested without I/O.

**JSON** (``format = "json"``): the body is the notice as a JSON object
(``{"id", "event", "server", "time", "text", "data"}``), and the request carries::

    Content-Type: application/json
    X-Resofleet-Event: server_down
    X-Resofleet-Delivery: <the notice id: the same on every retry>
    X-Resofleet-Signature: t=<Unix seconds>,v1=<hex HMAC-SHA256>

where ``v1`` is ``HMAC-SHA256(secret, "<t>." + body)`` over the exact bytes of the body.
A receiver recomputes it, compares in constant time, and refuses a ``t`` too far from its
own clock (five minutes is usual) so that a captured request cannot be replayed later;
``t`` changes on each retry, the delivery id does not.

**Discord** (``format = "discord"``): one embed (title: the event; description: the
notice's text; colour by event; timestamp), with ``allowed_mentions`` empty so that a user
or world called ``@everyone`` pings nobody. Names are made plain first: Resonite's rich
text tags (``<color=red>``, ``<b>``, ...) are removed and Discord's markdown characters
escaped, so a name renders as the text it is.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from typing import Final

import msgspec

from .notices import Notice

__all__ = [
    "DISCORD_COLOURS",
    "SIGNATURE_HEADER",
    "discord_body",
    "escape_markdown",
    "json_body",
    "plain",
    "sign",
    "signature_header",
]

#: ``t=<Unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`` (json webhooks only).
SIGNATURE_HEADER: Final = "X-Resofleet-Signature"
#: The notice's event, so a receiver can route before parsing the body.
EVENT_HEADER: Final = "X-Resofleet-Event"
#: The notice's id: the same on every retry and redelivery (receivers drop repeats by it).
DELIVERY_HEADER: Final = "X-Resofleet-Delivery"

#: Embed colours (0xRRGGBB): red for trouble, green for recovery, blue for people.
DISCORD_COLOURS: Final = {
    "server_down": 0xE74C3C,
    "crash_loop": 0x992D22,
    "unhealthy": 0xE67E22,
    "schedule_failed": 0xE67E22,
    "server_up": 0x2ECC71,
    "user_joined": 0x3498DB,
    "user_left": 0x95A5A6,
    "users_above": 0x9B59B6,
    "users_below": 0x95A5A6,
}
#: Embed titles, before the server id.
_TITLES: Final = {
    "server_down": "Server down",
    "server_up": "Server up",
    "crash_loop": "Crash loop",
    "unhealthy": "Unhealthy",
    "schedule_failed": "Schedule failed",
    "user_joined": "User joined",
    "user_left": "User left",
    "users_above": "Busy",
    "users_below": "Quiet again",
}
#: Discord's limits: an embed's title and description, in characters.
DISCORD_TITLE_MAX: Final = 256
DISCORD_DESCRIPTION_MAX: Final = 4096
#: The name the messages are posted under.
DISCORD_USERNAME: Final = "resofleet"

#: A Unity/Resonite rich text tag: ``<b>``, ``</color>``, ``<color=#ff0000>``, ``<size=120%>``.
_TAG: Final = re.compile(r"</?[A-Za-z][A-Za-z0-9_-]*(?:\s*=\s*[^<>]*)?>")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_MARKDOWN: Final = re.compile(r"([\\*_~`|>#\[\]])")

_json: Final = msgspec.json.Encoder()


def plain(text: str) -> str:
    """``text`` without rich-text tags and control characters (a name as people read it)."""
    return _CONTROL.sub(" ", _TAG.sub("", text)).strip()


def escape_markdown(text: str) -> str:
    """Backslash-escape Discord markdown, so that ``*name*`` shows its asterisks."""
    return _MARKDOWN.sub(r"\\\1", text)


def json_body(notice: Notice) -> bytes:
    return _json.encode(notice)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret``."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, *, now: float) -> str:
    """``t=<timestamp>,v1=<signature>`` for :data:`SIGNATURE_HEADER`."""
    timestamp = int(now)
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def discord_body(notice: Notice) -> bytes:
    """A Discord webhook message for ``notice`` (see the module docstring)."""
    when = datetime.datetime.fromtimestamp(notice.time, tz=datetime.UTC)
    embed = {
        "title": _clip(f"{_TITLES.get(notice.event, notice.event)}: {notice.server}", DISCORD_TITLE_MAX),
        "description": _clip(escape_markdown(plain(notice.text)), DISCORD_DESCRIPTION_MAX),
        "color": DISCORD_COLOURS.get(notice.event, 0x95A5A6),
        "timestamp": when.isoformat(),
        "footer": {"text": f"resofleet · {notice.event}"},
    }
    return _json.encode(
        {"username": DISCORD_USERNAME, "embeds": [embed], "allowed_mentions": {"parse": []}}
    )
