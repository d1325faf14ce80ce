"""What a gateway is told: where to listen, its secrets, who may connect, and its limits.

:class:`GatewaySettings` is the ``[gateway]`` table of the configuration and
:class:`Limits` its ``[gateway.limits]``, field for field: frozen msgspec structs whose
fields carry their constraints (``Annotated[..., msgspec.Meta(...)]``), so a configuration
decodes straight into them with ``msgspec.convert`` and a bad value is refused with its key
path. Unknown keys are refused too (``forbid_unknown_fields``): a misspelt key is an error,
never a silently ignored setting. A constraint's ``description`` is how an error message
names what the value must be; ``extra={"sensitive": True}`` marks a value an error message
must not repeat (a secret).

msgspec checks constraints when it decodes, not when code calls the constructor: tests and
embedders that build these structs directly are trusted. :meth:`Security.from_settings
<resofleet.gateway.security.Security.from_settings>` turns the settings into what the
gateway runs with (a keyring, parsed networks).
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

__all__ = [
    "DEFAULT_BULK_CONCURRENCY",
    "DEFAULT_COMMAND_BURST",
    "DEFAULT_COMMAND_RATE",
    "DEFAULT_CONNECTIONS_PER_ADDRESS",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_PRE_AUTH_BURST",
    "DEFAULT_PRE_AUTH_FRAME",
    "DEFAULT_PRE_AUTH_RATE",
    "GatewaySettings",
    "Limits",
    "MIN_SECRET_LENGTH",
    "Secret",
]

#: Address a gateway listens on by default: loopback, because a gateway without a secret
#: runs open (every client an admin) and must not be reachable from elsewhere.
DEFAULT_HOST: Final = "127.0.0.1"
#: TCP port a gateway listens on by default: the one every client and example assumes.
DEFAULT_PORT: Final = 8000
#: Requests per second one connection with a viewer, moderator or operator token may send,
#: and the burst above it: a person or a dashboard stays far below; a runaway script is
#: slowed down with ``rate_limited`` replies instead of flooding consoles.
DEFAULT_COMMAND_RATE: Final = 20.0
#: Requests one connection may send at once above :data:`DEFAULT_COMMAND_RATE` (a
#: dashboard's first screen asks for everything at once).
DEFAULT_COMMAND_BURST: Final = 50
#: WebSocket connections one client address may hold on one gateway: a dashboard opens a
#: few; a NAT of many users stays under it; one host cannot exhaust the gateway's sockets.
DEFAULT_CONNECTIONS_PER_ADDRESS: Final = 256
#: Frames per second a connection not authenticated yet may send, ``auth`` included, and
#: the burst above it: a client authenticates in its first frame or two; anything more
#: before a token is a probe, answered ``rate_limited`` at almost no cost.
DEFAULT_PRE_AUTH_RATE: Final = 1.0
DEFAULT_PRE_AUTH_BURST: Final = 5
#: Largest frame, in bytes, a connection not authenticated yet may send (over it: 1009):
#: an ``auth`` frame carrying the longest token accepted (8 KiB, ``handshake.MAX_TOKEN``;
#: a token scoped to 64 long patterns is about 6 KiB) with room for its id. Authenticated
#: connections get the full 64 KiB; a typical token is 300 bytes.
DEFAULT_PRE_AUTH_FRAME: Final = 8 * 1024 + 256
#: Servers one bulk request (``servers`` patterns) has in flight at once; the others wait
#: for one to answer. Enough to save or query a region of a fleet in a few round trips;
#: few enough that a bulk ``restart`` never takes a whole fleet down at the same moment,
#: and that one request cannot flood the broker or a host with hundreds of consoles at once.
DEFAULT_BULK_CONCURRENCY: Final = 16
#: Shortest secret accepted, in characters: HS256 wants a key of at least 256 bits, which
#: ``secrets.token_urlsafe(32)`` (43 characters) gives.
MIN_SECRET_LENGTH: Final = 32

#: A token secret: long enough to sign HS256 tokens safely.
Secret = Annotated[
    str,
    msgspec.Meta(
        min_length=MIN_SECRET_LENGTH,
        description=(
            f"a secret of at least {MIN_SECRET_LENGTH} characters "
            "(make one with `resofleet token secret`)"
        ),
        # error messages never echo the value
        extra={"sensitive": True},
    ),
]
_Host = Annotated[str, msgspec.Meta(min_length=1, description="a host name or address")]
_Port = Annotated[int, msgspec.Meta(ge=0, le=65535, description="a port number 0-65535")]
#: A browser origin: scheme, host and optional port, nothing after.
_Origin = Annotated[
    str,
    msgspec.Meta(pattern=r"^(?i:https?)://[^/]+$", description="an origin like https://host[:port]"),
]
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_Hostname = Annotated[
    str,
    msgspec.Meta(pattern=r"^[A-Za-z0-9.-]{1,253}$", description="a host name, without a port"),
]
_AuditPath = Annotated[
    str, msgspec.Meta(min_length=1, description="a path, or false for no audit log")
]


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[gateway.limits]`` (see the constants for the reasons behind the defaults)."""

    #: Requests per second per connection (admin tokens are not limited).
    command_rate: Annotated[float, msgspec.Meta(gt=0)] = DEFAULT_COMMAND_RATE
    command_burst: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_COMMAND_BURST
    connections_per_address: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_CONNECTIONS_PER_ADDRESS
    #: Frames per second (``auth`` included) before authentication, per connection.
    pre_auth_rate: Annotated[float, msgspec.Meta(gt=0)] = DEFAULT_PRE_AUTH_RATE
    pre_auth_burst: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_PRE_AUTH_BURST
    #: Largest frame before authentication, in bytes (at most the 64 KiB of every frame).
    pre_auth_frame: Annotated[int, msgspec.Meta(ge=256, le=64 * 1024)] = DEFAULT_PRE_AUTH_FRAME


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[gateway]``: one gateway's listening address, secrets, clients and limits.

    Its ``repr`` leaves the secrets out, so a settings object in a log line leaks nothing.
    """

    host: _Host = DEFAULT_HOST
    port: _Port = DEFAULT_PORT
    #: Signs and checks tokens; ``None``: the gateway runs open (loopback only).
    secret: Secret | None = None
    #: Still accepted, no longer used to sign (rotation); only with :attr:`secret`.
    old_secrets: tuple[Secret, ...] = ()
    #: Browser origins allowed besides the same origin, ``scheme://host[:port]``.
    origins: tuple[_Origin, ...] = ()
    #: Addresses or networks (``10.0.0.0/8``) whose ``X-Forwarded-For`` names the client.
    trusted_proxies: tuple[_NonEmpty, ...] = ()
    #: Token ids refused for good, besides those revoked on the bus.
    revoked: tuple[_NonEmpty, ...] = ()
    #: Host names (the ``Host`` header, without a port) the gateway answers to besides
    #: loopback ones; when set, every other name is refused (see ``Security.hosts``).
    hosts: tuple[_Hostname, ...] = ()
    limits: Limits = msgspec.field(default_factory=Limits)
    #: Path of the gateway's audit log; ``None``: none is written.
    audit_log: _AuditPath | None = None
    #: Offer permessage-deflate to clients: less bandwidth, more CPU and memory per client.
    compression: bool = False
    #: Servers one bulk request has in flight at once (see the README, *Bulk commands*).
    bulk_concurrency: Annotated[
        int, msgspec.Meta(ge=1, le=256, description="a whole number from 1 to 256")
    ] = DEFAULT_BULK_CONCURRENCY

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every accepted secret, the signing one first; empty: open mode."""
        return (self.secret, *self.old_secrets) if self.secret is not None else ()

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in self.__struct_fields__
            if name not in ("secret", "old_secrets")
        )
        return f"GatewaySettings({shown}, secrets=<{len(self.secrets)} hidden>)"
