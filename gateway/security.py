"""Security settings of one gateway: who may connect, from where, and how often.

:class:`Security` is plain data, built once from the configured
:class:`~resofleet.gateway.settings.GatewaySettings` (:meth:`Security.from_settings`) or by a test,
and handed to :class:`~resofleet.gateway.Gateway`. Its default is *open mode*: no keyring, so every client is
:data:`~resofleet.gateway.identity.OPEN_ADMIN`. Open mode is only safe on loopback; the command line
refuses a non-loopback ``--host`` without a secret (:func:`is_loopback` decides), the
library itself does not (tests and embedders listen on 127.0.0.1).

Everything that changes at run time (revocations, connections per address, the audit of
refusals) lives in :class:`~resofleet.gateway.guard.Guard`, not here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final

from .settings import GatewaySettings, Limits
from .tokens import Keyring

__all__ = ["AUTH_TIMEOUT", "Network", "Security", "is_loopback"]

#: Seconds a connection that presented no token at the handshake has to send a valid
#: ``auth`` message before it is closed with 4401: a client that means to authenticate
#: does it in its first round trip; a silent socket only holds a slot.
AUTH_TIMEOUT: Final = 5.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Security:
    """How a gateway checks its clients (see the module docstring)."""

    #: The secrets tokens are checked against (the first one signs); ``None``: open mode,
    #: every client is an admin (loopback only; the command line enforces it).
    keyring: Keyring | None = None
    #: Browser origins allowed besides the same origin, lowercased ``scheme://host[:port]``.
    origins: tuple[str, ...] = ()
    #: Peers whose ``X-Forwarded-For`` names the client (load balancers, reverse proxies).
    trusted_proxies: tuple[Network, ...] = ()
    #: Token ids refused for good (``[gateway] revoked``), besides those revoked on the bus.
    revoked: tuple[str, ...] = ()
    #: Lowercased host names the gateway answers to besides loopback ones (``[gateway]
    #: hosts``). Open mode answers to loopback names only, and to these: a web page whose
    #: name an attacker points at 127.0.0.1 (DNS rebinding) is same-origin with itself,
    #: so only the ``Host`` header tells it from a page of the gateway's own. With a
    #: secret, an empty list accepts any name (clients hold tokens); a list limits them.
    hosts: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    #: Seconds an unauthenticated connection may stay open (see :data:`AUTH_TIMEOUT`).
    auth_timeout: float = AUTH_TIMEOUT

    @property
    def open(self) -> bool:
        """True when no secret is configured: every client is an admin."""
        return self.keyring is None

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Security:
        """The security ``settings`` describe: secrets become a keyring, origins are
        lowercased, proxies parsed (``ValueError`` for one that is not an address or a
        network; the configuration refuses it before)."""
        return cls(
            keyring=Keyring(settings.secrets) if settings.secrets else None,
            origins=tuple(o.lower().rstrip("/") for o in settings.origins),
            trusted_proxies=tuple(ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies),
            revoked=tuple(settings.revoked),
            hosts=tuple(h.lower().rstrip(".") for h in settings.hosts),
            limits=settings.limits,
        )


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` is reachable from this machine only.

    ``localhost``, 127.0.0.0/8 and ::1 are; everything else (``0.0.0.0``, ``::``, an empty
    host, a name) may be reachable from elsewhere, and needs a secret.
    """
    host = host.strip().lower().removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
