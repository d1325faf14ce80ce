"""The notifier's settings: ``[notifier]`` and each ``[[webhooks]]`` entry of the config.

The app layer (:mod:`resofleet.config`) decodes the TOML tables straight into these
structs; their fields carry the types, bounds and defaults. A webhook's secret may come
from the file (``secret``), an environment variable (``secret_env``) or a file
(``secret_file``); :func:`resolve_secret` reads it once, at start, and it is never logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec

__all__ = [
    "ALL_EVENTS",
    "BACKOFF",
    "BACKLOG",
    "CONCURRENCY",
    "EVENTS_QUEUE",
    "EventType",
    "MAX_ATTEMPTS",
    "MAX_BACKOFF",
    "MAX_RETRY_TIME",
    "MIN_SECRET_LENGTH",
    "NotifierSettings",
    "PREFETCH",
    "REQUEST_TIMEOUT",
    "USERS_HYSTERESIS",
    "WebhookError",
    "WebhookSettings",
    "read_secrets",
    "resolve_secret",
    "retry_time",
]

EventType = Literal[
    "server_down",
    "server_up",
    "crash_loop",
    "unhealthy",
    "schedule_failed",
    "user_joined",
    "user_left",
    "users_above",
    "users_below",
]
#: Every event a webhook can be sent, in the order the README lists them.
ALL_EVENTS: Final[tuple[EventType, ...]] = (
    "server_down", "server_up", "crash_loop", "unhealthy", "schedule_failed",
    "user_joined", "user_left", "users_above", "users_below",
)

#: Seconds one POST may take, connection included: a webhook receiver answers in tens of
#: milliseconds; ten seconds covers a slow one without holding its worker for long.
REQUEST_TIMEOUT: Final = 10.0
#: Attempts per notice before it goes to the dead-letter queue: with the backoff below,
#: about a minute of retries, enough for a receiver that restarts or a brief outage.
MAX_ATTEMPTS: Final = 6
#: Seconds before the first retry; each further retry waits twice as long.
BACKOFF: Final = 1.0
#: Seconds a retry waits at most (also the cap on a receiver's ``Retry-After``).
MAX_BACKOFF: Final = 60.0
#: Seconds a notice may spend in retries at most (attempts x timeout plus the waits):
#: RabbitMQ takes back a delivery held unacknowledged for 30 minutes (its
#: ``consumer_timeout``); a third of that keeps well clear of it.
MAX_RETRY_TIME: Final = 600.0
#: Notices that may wait for one webhook (its durable queue); more are dead-lettered at
#: once: a receiver down for hours must not grow the broker without bound.
BACKLOG: Final = 10_000
#: POSTs in flight per webhook: one keeps a channel's messages in order (a person reads
#: "joined" before "left"); more suit a receiver that takes many notices a second.
CONCURRENCY: Final = 1
#: Unacknowledged events the notifier holds: routing one takes a broker round trip per
#: notice, so a few dozen keep it busy without holding much.
PREFETCH: Final = 32
#: Events that may wait for a notifier (its durable queue, oldest dropped beyond): a day
#: of a hundred busy servers' state, status and worlds changes.
EVENTS_QUEUE: Final = 100_000
#: Users by which the count must fall below ``users_threshold`` before ``users_below``:
#: one user hovering at the threshold does not make a notice each poll.
USERS_HYSTERESIS: Final = 1
#: Shortest signing secret: 16 characters from a password generator.
MIN_SECRET_LENGTH: Final = 16

_Name = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="a name of lowercase letters, digits and dashes (at most 63)",
    ),
]
_Url = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^https?://[^\s]+$",
        description="an http:// or https:// URL",
        extra={"sensitive": True},  # a Discord webhook URL is its own credential
    ),
]
_Secret = Annotated[
    str,
    msgspec.Meta(
        min_length=MIN_SECRET_LENGTH,
        description=f"a secret of at least {MIN_SECRET_LENGTH} characters",
        extra={"sensitive": True},
    ),
]
_Seconds = Annotated[float, msgspec.Meta(gt=0, le=3600)]
_Pattern = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class WebhookSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``[[webhooks]]`` entry: where to POST, in which form, and which events."""

    #: Names its durable queue and its metrics and log lines (the URL is never logged).
    name: _Name
    url: _Url
    #: ``json``: the generic signed body; ``discord``: a Discord webhook message.
    format: Literal["json", "discord"] = "json"
    #: Which events it is sent (default: all).
    events: tuple[EventType, ...] = ALL_EVENTS
    #: Glob patterns of server ids it is sent events of (default: every server).
    servers: tuple[_Pattern, ...] = ("*",)
    #: The HMAC-SHA256 signing secret (json), or where to read it: an environment
    #: variable, or a file (its content, without the trailing newline).
    secret: _Secret | None = None
    secret_env: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    secret_file: str | None = None
    timeout: _Seconds = REQUEST_TIMEOUT
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = MAX_ATTEMPTS
    backoff: _Seconds = BACKOFF
    max_backoff: _Seconds = MAX_BACKOFF
    backlog: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = BACKLOG
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = CONCURRENCY


class NotifierSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[notifier]``: what every webhook shares."""

    #: Total users on a server (the headless's own account not counted) at which
    #: ``users_above`` is sent; absent: no threshold notices.
    users_threshold: Annotated[int, msgspec.Meta(ge=1)] | None = None
    #: ``users_below`` is sent once the count is under ``users_threshold - users_hysteresis``.
    users_hysteresis: Annotated[int, msgspec.Meta(ge=0)] = USERS_HYSTERESIS
    #: ``HOST:PORT`` to serve ``/healthz``, ``/readyz`` and ``/metrics`` on (absent: off).
    health: str | None = None
    prefetch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = PREFETCH
    events_queue: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = EVENTS_QUEUE


def retry_time(webhook: WebhookSettings) -> float:
    """The longest a notice can spend in attempts and waits for ``webhook``."""
    waits = sum(
        min(webhook.backoff * 2**i, webhook.max_backoff) for i in range(webhook.max_attempts - 1)
    )
    return webhook.max_attempts * webhook.timeout + waits


def resolve_secret(webhook: WebhookSettings) -> str | None:
    """The webhook's signing secret, read from where its settings say; ``ValueError`` with
    a phrase naming the setting (never the secret) when it is missing or unusable."""
    given = [k for k in ("secret", "secret_env", "secret_file") if getattr(webhook, k) is not None]
    if len(given) > 1:
        raise ValueError(f"sets {' and '.join(given)}: set one of them")
    if webhook.secret_env is not None:
        value = os.environ.get(webhook.secret_env, "")
        source = f"the environment variable {webhook.secret_env}"
    elif webhook.secret_file is not None:
        try:
            value = Path(webhook.secret_file).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"secret_file cannot be read ({type(exc).__name__})") from None
        source = f"the file {webhook.secret_file}"
    else:
        value = webhook.secret or ""
        source = "secret"
    if not value:
        if webhook.format == "json":
            raise ValueError("needs a signing secret: set secret, secret_env or secret_file")
        return None
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(f"{source} must hold at least {MIN_SECRET_LENGTH} characters")
    return value


class WebhookError(ValueError):
    """A ``[[webhooks]]`` entry that its types allow but that cannot work: ``key`` names
    the entry (``webhooks[1].name``), ``problem`` says why."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def read_secrets(webhooks: tuple[WebhookSettings, ...]) -> dict[str, str | None]:
    """Check every webhook beyond its types and read its secret once: name -> secret
    (``None`` for an unsigned Discord webhook). :class:`WebhookError` for the first entry
    that cannot work."""
    secrets: dict[str, str | None] = {}
    for i, hook in enumerate(webhooks):
        if hook.name in secrets:
            raise WebhookError(f"webhooks[{i}].name", f"{hook.name!r} appears twice")
        if retry_time(hook) > MAX_RETRY_TIME:
            raise WebhookError(
                f"webhooks[{i}]",
                f"may retry a notice for {retry_time(hook):.0f} s (max_attempts x timeout + "
                f"waits); keep it under {MAX_RETRY_TIME:.0f} s",
            )
        try:
            secrets[hook.name] = resolve_secret(hook)
        except ValueError as exc:
            raise WebhookError(f"webhooks[{i}]", str(exc)) from None
    return secrets
