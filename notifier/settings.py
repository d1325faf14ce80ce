"""The notifier's settings: ``[notifier]`` and each ``[[webhooks]]`` entry of the config.

The app layer (:mod:`resofleet.config`) decodes the TOML tables straight into these
structs; their fields carry the types, bounds and defaults. A webhook's secret may come
from the file (``secret``), an environment variable (``secret_env``) or a file
(``secret_file``); :func:`resolve_secret` reads it once, at start, and it is never logged.
Its URL may come from the same three places (``url``, ``url_env``, ``url_file``): a
Discord webhook's URL is its own credential, and belongs in a Kubernetes Secret or a
Docker secret rather than in a config file; :func:`resolve_url` reads it once, and
:func:`read_webhooks` hands the service every webhook with its URL filled in.
"""

from __future__ import annotations

import os
import re
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
    "read_webhooks",
    "resolve_secret",
    "resolve_url",
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
#: What a webhook URL looks like, wherever it comes from.
URL_PATTERN: Final = r"^https?://[^\s]+$"
_Url = Annotated[
    str,
    msgspec.Meta(
        pattern=URL_PATTERN,
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
_EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
_Seconds = Annotated[float, msgspec.Meta(gt=0, le=3600)]
_Pattern = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class WebhookSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``[[webhooks]]`` entry: where to POST, in which form, and which events."""

    #: Names its durable queue and its metrics and log lines (the URL is never logged).
    name: _Name
    #: Where to POST, or where to read that: an environment variable, or a file (its
    #: content, without the trailing newline). Exactly one of the three.
    url: _Url | None = None
    url_env: _EnvName | None = None
    url_file: str | None = None
    #: ``json``: the generic signed body; ``discord``: a Discord webhook message.
    format: Literal["json", "discord"] = "json"
    #: Which events it is sent (default: all).
    events: tuple[EventType, ...] = ALL_EVENTS
    #: Glob patterns of server ids it is sent events of (default: every server).
    servers: tuple[_Pattern, ...] = ("*",)
    #: The HMAC-SHA256 signing secret (json), or where to read it: an environment
    #: variable, or a file (its content, without the trailing newline).
    secret: _Secret | None = None
    secret_env: _EnvName | None = None
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


def _read(webhook: WebhookSettings, key: str) -> tuple[str, str]:
    """(value, where it came from) of ``key`` given inline, as ``key_env`` or as
    ``key_file``; ``("", ...)`` when none is set or the source is empty. ``ValueError``
    naming the setting (never the value) when more than one is set or the file cannot be
    read."""
    keys = (key, f"{key}_env", f"{key}_file")
    given = [k for k in keys if getattr(webhook, k) is not None]
    if len(given) > 1:
        raise ValueError(f"sets {' and '.join(given)}: set one of them")
    env, file = getattr(webhook, keys[1]), getattr(webhook, keys[2])
    if env is not None:
        return os.environ.get(env, ""), f"the environment variable {env}"
    if file is not None:
        try:
            return Path(file).read_text(encoding="utf-8").rstrip("\r\n"), f"the file {file}"
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{keys[2]} cannot be read ({type(exc).__name__})") from None
    return getattr(webhook, key) or "", key


def resolve_url(webhook: WebhookSettings) -> str:
    """The webhook's URL, read from where its settings say; ``ValueError`` with a phrase
    naming the setting (never the URL, which may be a credential) when it is missing or
    not an http:// or https:// URL."""
    value, source = _read(webhook, "url")
    if not value:
        if source == "url":
            raise ValueError("needs a URL: set url, url_env or url_file")
        raise ValueError(f"{source} is empty or unset")
    if re.fullmatch(URL_PATTERN, value) is None:
        raise ValueError(f"{source} must hold an http:// or https:// URL")
    return value


def resolve_secret(webhook: WebhookSettings) -> str | None:
    """The webhook's signing secret, read from where its settings say; ``ValueError`` with
    a phrase naming the setting (never the secret) when it is missing or unusable."""
    value, source = _read(webhook, "secret")
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


def read_webhooks(
    webhooks: tuple[WebhookSettings, ...],
) -> tuple[tuple[WebhookSettings, ...], dict[str, str | None]]:
    """Check every webhook beyond its types and read its URL and its secret once: the
    webhooks with ``url`` filled in (``url_env``/``url_file`` cleared), and name -> secret
    (``None`` for an unsigned Discord webhook). :class:`WebhookError` for the first entry
    that cannot work."""
    secrets: dict[str, str | None] = {}
    resolved: list[WebhookSettings] = []
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
            url = resolve_url(hook)
            secrets[hook.name] = resolve_secret(hook)
        except ValueError as exc:
            raise WebhookError(f"webhooks[{i}]", str(exc)) from None
        resolved.append(msgspec.structs.replace(hook, url=url, url_env=None, url_file=None))
    return tuple(resolved), secrets
