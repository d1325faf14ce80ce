"""Who a session is: the one identity object every check reads.

A :class:`Principal` comes from a verified token (:meth:`resofleet.gateway.tokens.Keyring.verify`),
or is :data:`OPEN_ADMIN` when the gateway runs open (loopback without a secret). Routing
checks the role and the server patterns through :meth:`Principal.may_see` and
:meth:`Principal.may`; the session and the fan-out read it, and nothing else in the
gateway looks at who the client is.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Final

from resofleet.contracts import Role

__all__ = ["OPEN_ADMIN", "Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated client: who (``sub``), its ``role`` and the glob patterns of the
    server ids it may see (``("*",)``: all)."""

    sub: str
    role: Role
    servers: tuple[str, ...] = ("*",)
    #: When the token runs out (epoch seconds); ``None``: never (open mode).
    expires: float | None = None
    #: The token's id (what ``token revoke`` names); ``None`` in open mode.
    jti: str | None = None

    def may_see(self, server: str) -> bool:
        """Whether this client may know that ``server`` exists."""
        return any(p == "*" or fnmatch.fnmatchcase(server, p) for p in self.servers)

    def may(self, role: Role) -> bool:
        """Whether this client holds ``role`` or a higher one."""
        return self.role >= role

    @property
    def rate_limited(self) -> bool:
        """Admins (and the open loopback mode) are not rate-limited (README, *Security*: Limits)."""
        return self.role < Role.ADMIN


#: The principal of every session while the gateway runs open (no secret configured).
OPEN_ADMIN: Final = Principal(sub="local", role=Role.ADMIN, servers=("*",))

