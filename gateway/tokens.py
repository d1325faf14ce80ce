"""Tokens: who a client is, signed, so that any gateway replica can check it without state.

A token is a JWT signed with HS256 (PyJWT) under a secret that every gateway shares.

Header ``kid``
    Which secret signed it: :func:`key_id` of the secret, a hash that names the secret
    without revealing it. A :class:`Keyring` holds several secrets at once: the first
    signs, the others are only accepted, so a secret is rotated without logging anyone
    out (add the new one first, keep the old one until its tokens have expired).
Claims
    ``sub`` (who: a person, a bot), ``role`` (viewer, moderator, operator, admin),
    ``servers`` (glob patterns of the server ids the holder may see; absent: all),
    ``exp`` and ``iat`` (epoch seconds), ``jti`` (the token's id, what ``token revoke``
    names) and ``aud`` = ``resofleet`` (a JWT minted for something else under the same
    secret is not a resofleet token).

Everything here is pure (the clock is an argument), so it is tested without I/O.
:class:`TokenError` says, in a sentence a person can act on, why a token was refused;
its ``reason`` is one word for the audit log.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets as _secrets
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import jwt

from resofleet.contracts import Role

from .identity import Principal

__all__ = [
    "ALGORITHM",
    "AUDIENCE",
    "DEFAULT_TTL",
    "LEEWAY",
    "MAX_REVOCATIONS",
    "MAX_TTL",
    "Keyring",
    "Revocations",
    "TokenError",
    "key_id",
    "new_secret",
    "parse_ttl",
]

ALGORITHM: Final = "HS256"
AUDIENCE: Final = "resofleet"
#: Lifetime of a token when ``--ttl`` is not given: a month, so that a forgotten token
#: stops working on its own; dashboards and bots renew in band before it runs out.
DEFAULT_TTL: Final = 30 * 86400.0
#: Longest lifetime a token may be issued with: a year. It is also how long a revocation
#: by id alone is kept (the gateway cannot know that token's ``exp``): past it, every
#: token the id could name has expired anyway.
MAX_TTL: Final = 366 * 86400.0
#: Seconds of clock skew tolerated between the host that issued a token and a gateway.
LEEWAY: Final = 10.0
#: Revoked token ids a gateway remembers at most; each is forgotten once the token it
#: names has expired, so only a flood of revocations could reach this.
MAX_REVOCATIONS: Final = 100_000
#: Longest claim values accepted: a token is a credential, not a place to store data.
MAX_SUB: Final = 128
#: Server patterns one token may carry, and characters in one pattern.
MAX_PATTERNS: Final = 64
MAX_PATTERN: Final = 64

_PATTERN: Final = re.compile(rf"[a-z0-9*?\[\]!-]{{1,{MAX_PATTERN}}}")
_TTL: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNITS: Final[Mapping[str, float]] = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class TokenError(Exception):
    """A token that was refused. ``reason``: one word (``missing``, ``malformed``,
    ``expired``, ``bad_signature``, ``unknown_key``, ``revoked``, ``bad_claims``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def key_id(secret: str) -> str:
    """The ``kid`` naming ``secret``: 12 hex digits of a domain-separated SHA-256."""
    return hashlib.sha256(b"resofleet-kid\0" + secret.encode()).hexdigest()[:12]


def new_secret() -> str:
    """A fresh secret: 256 random bits, URL-safe, 43 characters."""
    return _secrets.token_urlsafe(32)


def parse_ttl(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``3600`` (seconds) -> seconds; ValueError otherwise."""
    match = _TTL.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30d, 12h, 90m, 3600)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < seconds <= MAX_TTL:
        raise ValueError(f"a token lives more than 0 and at most {MAX_TTL / 86400:.0f} days")
    return seconds


def _check_patterns(servers: Iterable[str]) -> tuple[str, ...]:
    patterns = tuple(servers)
    if not patterns or len(patterns) > MAX_PATTERNS:
        raise ValueError(f"give 1 to {MAX_PATTERNS} server patterns")
    for pattern in patterns:
        if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern):
            raise ValueError(
                f"{str(pattern)[:80]!r} is not a server pattern: server ids in lowercase "
                "letters, digits and dashes, with the globs * ? [...]"
            )
    return patterns


@dataclass(frozen=True, slots=True)
class Keyring:
    """The secrets a gateway accepts; the first one signs."""

    secrets: tuple[str, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.secrets:
            raise ValueError("a keyring needs at least one secret")

    @property
    def signing_kid(self) -> str:
        return key_id(self.secrets[0])

    def _by_kid(self) -> dict[str, str]:
        return {key_id(s): s for s in self.secrets}

    def issue(
        self,
        *,
        role: Role,
        sub: str,
        servers: Sequence[str] | None = None,
        ttl: float = DEFAULT_TTL,
        jti: str | None = None,
        now: float | None = None,
    ) -> str:
        """A signed token. ``servers`` None: every server."""
        if not sub or len(sub) > MAX_SUB or not sub.isprintable():
            raise ValueError(f"sub must be 1-{MAX_SUB} printable characters")
        if not 0 < ttl <= MAX_TTL:
            raise ValueError(f"a token lives more than 0 and at most {MAX_TTL / 86400:.0f} days")
        issued = time.time() if now is None else now
        claims: dict[str, Any] = {
            "sub": sub,
            "role": role.label,
            "iat": int(issued),
            "exp": int(math.ceil(issued + ttl)),
            "jti": jti or uuid.uuid4().hex,
            "aud": AUDIENCE,
        }
        if servers is not None:
            claims["servers"] = list(_check_patterns(servers))
        return jwt.encode(
            claims, self.secrets[0], algorithm=ALGORITHM, headers={"kid": self.signing_kid}
        )

    def verify(self, token: str, *, now: float | None = None) -> Principal:
        """The :class:`Principal` of ``token``, or :class:`TokenError` saying why not.

        Revocation is not checked here: see :class:`Revocations`.
        """
        if not token:
            raise TokenError("missing", "No token was given.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed", "The token is not a resofleet token (not a JWT).") from None
        if header.get("alg") != ALGORITHM:
            raise TokenError("malformed", f"The token is not signed with {ALGORITHM}.")
        secret = self._by_kid().get(str(header.get("kid", "")))
        if secret is None:
            raise TokenError(
                "unknown_key",
                "The token was signed with a secret this gateway does not accept (rotated "
                "out, or another deployment's): ask for a new token.",
            )
        options: dict[str, Any] = {"require": ["exp", "sub", "jti", "aud"], "verify_iat": False}
        if now is not None:  # PyJWT checks `exp` against its own clock; `now` is checked below
            options["verify_exp"] = False
        try:
            # no leeway on exp: a gateway closes a connection when its token expires, so one
            # already expired by its clock is refused, not accepted and closed at once
            claims = jwt.decode(
                token, secret, algorithms=[ALGORITHM], audience=AUDIENCE, leeway=0,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("expired", "The token has expired: ask for a new one.") from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad_signature", "The token's signature is not valid.") from None
        except jwt.PyJWTError as exc:
            raise TokenError("bad_claims", f"The token is not valid: {exc}.") from None
        return _principal(claims, now=now)


#: Role labels as tokens carry them, exactly.
_ROLES: Final = {role.label: role for role in Role}


def _principal(claims: Mapping[str, Any], *, now: float | None) -> Principal:
    sub, role, exp, jti = claims.get("sub"), claims.get("role"), claims.get("exp"), claims.get("jti")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB or not sub.isprintable():
        raise TokenError("bad_claims", "The token's sub is not a name.")
    if not isinstance(jti, str) or not jti or len(jti) > 128:
        raise TokenError("bad_claims", "The token's jti is not an id.")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise TokenError("bad_claims", "The token's exp is not a time.")
    clock = time.time() if now is None else now
    if exp <= clock:
        raise TokenError("expired", "The token has expired: ask for a new one.")
    iat = claims.get("iat")
    if iat is not None and (isinstance(iat, bool) or not isinstance(iat, (int, float))):
        raise TokenError("bad_claims", "The token's iat is not a time.")
    if iat is not None and iat > clock + LEEWAY:
        raise TokenError("bad_claims", "The token was issued in the future: check the issuer's clock.")
    if exp - (clock if iat is None else iat) > MAX_TTL + LEEWAY:
        raise TokenError(
            "bad_claims", f"The token lives longer than the longest lifetime ({MAX_TTL / 86400:.0f} days)."
        )
    # exactly a role's label: a lookalike that case-folds to one (a dotless i) is not one
    parsed_role = _ROLES.get(role) if isinstance(role, str) else None
    if parsed_role is None:
        raise TokenError(
            "bad_claims", "The token's role is not one of viewer, moderator, operator, admin."
        )
    if "servers" in claims and claims["servers"] is None:
        raise TokenError(
            "bad_claims", "The token's servers are null: leave the claim out for every server."
        )
    servers = claims.get("servers")
    if servers is None:
        patterns: tuple[str, ...] = ("*",)
    else:
        try:
            patterns = _check_patterns(servers if isinstance(servers, list) else [])
        except ValueError:
            raise TokenError("bad_claims", "The token's servers are not server patterns.") from None
    return Principal(sub=sub, role=parsed_role, servers=patterns, expires=float(exp), jti=jti)


class Revocations:
    """Token ids refused until a time (epoch seconds), bounded by :data:`MAX_REVOCATIONS`.

    When full, the entry that would be forgotten first is dropped to make room: it names
    the token closest to expiring on its own.
    """

    def __init__(self, *, limit: int = MAX_REVOCATIONS) -> None:
        self._until: dict[str, float] = {}
        self._limit = limit

    def __len__(self) -> int:
        return len(self._until)

    def add(self, jti: str, until: float, *, now: float | None = None) -> bool:
        """Refuse ``jti`` until ``until``; False if it was already refused that long."""
        now = time.time() if now is None else now
        if until <= now or self._until.get(jti, -math.inf) >= until:
            return False
        self._until[jti] = until
        if len(self._until) > self._limit:
            self.prune(now)
            while len(self._until) > self._limit:
                del self._until[min(self._until, key=self._until.__getitem__)]
        return True

    def revoked(self, jti: str | None, *, now: float | None = None) -> bool:
        if jti is None:
            return False
        until = self._until.get(jti)
        return until is not None and until > (time.time() if now is None else now)

    def prune(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for jti in [j for j, u in self._until.items() if u <= now]:
            del self._until[jti]

    def items(self) -> list[tuple[str, float]]:
        return list(self._until.items())
