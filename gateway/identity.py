"""Who a session is: the one identity object every check reads.

For now every session is :data:`OPEN_ADMIN` (the gateway runs open, as on loopback without
a secret). Authentication (signed tokens: ``sub``, ``role``, ``servers`` patterns) only has
to build a :class:`Principal` per connection in :func:`authenticate`; routing already checks
the role and the server patterns through :meth:`Principal.may_see` and
:meth:`Principal.may`, and nothing else in the gateway looks at who the client is.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Final

from contracts import Role

__all__ = ["OPEN_ADMIN", "Principal", "authenticate"]


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
        """Admins (and the open loopback mode) are not rate-limited (DESIGN.md, Limits)."""
        return self.role < Role.ADMIN


#: The principal of every session while the gateway runs open (no secret configured).
OPEN_ADMIN: Final = Principal(sub="local", role=Role.ADMIN, servers=("*",))


def authenticate(headers: object, query: str) -> Principal:
    """The principal of a connecting client. Open mode: every client is an admin.

    ``headers`` (the handshake's) and ``query`` (the request's query string, which may
    carry ``token=`` and must never be logged) are where tokens will be read from.
    """
    del headers, query
    return OPEN_ADMIN
