"""Tokens: issue, verify, refuse, rotate, revoke. Pure: the clock is an argument."""

from __future__ import annotations

import time

import jwt
import pytest

from resofleet.contracts import Role
from resofleet.gateway.tokens import (
    LEEWAY,
    MAX_TTL,
    Keyring,
    Revocations,
    TokenError,
    key_id,
    new_secret,
    parse_ttl,
)

NOW = 1_800_000_000.0
A, B = new_secret(), new_secret()


def refused(keyring: Keyring, token: str, **kw: float) -> str:
    with pytest.raises(TokenError) as info:
        keyring.verify(token, **kw)
    assert info.value.message.endswith(".")
    return info.value.reason


def test_round_trip_carries_every_claim() -> None:
    """A token issued by a keyring comes back as the same principal."""
    ring = Keyring((A,))
    token = ring.issue(role=Role.MODERATOR, sub="alice", servers=["eu-*"], ttl=3600, now=NOW, jti="j1")
    p = ring.verify(token, now=NOW + 10)
    assert (p.sub, p.role, p.servers, p.jti, p.expires) == ("alice", Role.MODERATOR, ("eu-*",), "j1", NOW + 3600)
    assert jwt.get_unverified_header(token)["kid"] == key_id(A)


def test_no_servers_claim_means_every_server() -> None:
    """`token issue` without --servers sees everything."""
    ring = Keyring((A,))
    p = ring.verify(ring.issue(role=Role.VIEWER, sub="bot", now=NOW), now=NOW)
    assert p.servers == ("*",) and p.may_see("anything")


def test_expired_token_refused_from_its_exp_on() -> None:
    """A token is good until exp, refused from then on: a gateway closes a connection when
    its token expires, so it must not accept one that already has (no skew leeway here)."""
    ring = Keyring((A,))
    token = ring.issue(role=Role.ADMIN, sub="x", ttl=60, now=NOW)
    ring.verify(token, now=NOW + 59)
    assert refused(ring, token, now=NOW + 60) == "expired"
    assert refused(ring, token, now=NOW + 61) == "expired"


def forge(claims: dict, secret: str = A) -> str:
    """A token signed with a keyring's secret but with claims ``issue`` would never write."""
    base = {"sub": "x", "role": "viewer", "iat": int(NOW), "exp": int(NOW) + 3600, "jti": "j", "aud": "resofleet"}
    return jwt.encode({**base, **claims}, secret, algorithm="HS256", headers={"kid": key_id(secret)})


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"exp": int(NOW + MAX_TTL + 86400)}, "an exp beyond the longest lifetime"),
        ({"iat": int(NOW), "exp": int(NOW + MAX_TTL + 2 * LEEWAY)}, "a lifetime beyond the longest one"),
        ({"iat": int(NOW + LEEWAY + 60)}, "issued in the future"),
        ({"servers": None}, "servers: null (all servers is written by leaving servers out)"),
        ({"role": "adm\u0131n"}, "a dotless i that upper-cases to ADMIN"),
        ({"role": "Admin"}, "a role not written as its label"),
        ({"role": "ADMIN"}, "a role not written as its label"),
    ],
)
def test_claims_issue_never_writes_are_refused(claims: dict, why: str) -> None:
    """A token is refused unless its claims are exactly what `token issue` writes."""
    assert refused(Keyring((A,)), forge(claims), now=NOW) == "bad_claims", why


def test_iat_a_little_ahead_is_clock_skew() -> None:
    """A token issued by a host whose clock runs a few seconds ahead is accepted."""
    assert Keyring((A,)).verify(forge({"iat": int(NOW + LEEWAY - 1)}), now=NOW).role == Role.VIEWER


def test_expired_token_refused_on_the_real_clock() -> None:
    """Without an explicit clock PyJWT's own expiry check applies."""
    ring = Keyring((A,))
    token = ring.issue(role=Role.ADMIN, sub="x", ttl=1, now=time.time() - 3600)
    assert refused(ring, token) == "expired"


def test_tampered_token_refused() -> None:
    """Changing the role in the payload breaks the signature."""
    ring = Keyring((A,))
    token = ring.issue(role=Role.VIEWER, sub="x", now=NOW)
    header, payload, sig = token.split(".")
    forged_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"viewer"', b'"admin"')
    ).decode()
    assert refused(ring, f"{header}.{forged_payload}.{sig}", now=NOW) == "bad_signature"


def test_wrong_secret_refused() -> None:
    """A token from another deployment names a key this gateway does not hold."""
    assert refused(Keyring((B,)), Keyring((A,)).issue(role=Role.ADMIN, sub="x", now=NOW), now=NOW) == "unknown_key"


def test_forged_kid_with_wrong_secret_refused() -> None:
    """Claiming our kid does not help a token signed with another secret."""
    token = jwt.encode({"sub": "x", "role": "admin", "exp": NOW + 60, "jti": "j", "aud": "resofleet"},
                       B, algorithm="HS256", headers={"kid": key_id(A)})
    assert refused(Keyring((A,)), token, now=NOW) == "bad_signature"


def test_alg_none_refused() -> None:
    """An unsigned token is never accepted."""
    token = jwt.encode({"sub": "x", "role": "admin", "exp": NOW + 60, "jti": "j", "aud": "resofleet"},
                       None, algorithm="none", headers={"kid": key_id(A)})
    assert refused(Keyring((A,)), token, now=NOW) == "malformed"


def test_other_audience_refused() -> None:
    """A JWT minted for something else under the same secret is not a resofleet token."""
    token = jwt.encode({"sub": "x", "role": "admin", "exp": NOW + 60, "jti": "j", "aud": "other"},
                       A, algorithm="HS256", headers={"kid": key_id(A)})
    assert refused(Keyring((A,)), token, now=NOW) == "bad_claims"


@pytest.mark.parametrize("claims", [
    {"role": "root"}, {"role": None}, {"sub": ""}, {"servers": ["EU-1"]}, {"servers": "eu-*"},
    {"servers": []}, {"sub": "a\x1b[2J"},
])
def test_bad_claims_refused(claims: dict) -> None:
    """A well-signed token with nonsense claims is refused, not half-trusted."""
    base = {"sub": "x", "role": "admin", "exp": NOW + 60, "jti": "j", "aud": "resofleet", **claims}
    token = jwt.encode(base, A, algorithm="HS256", headers={"kid": key_id(A)})
    assert refused(Keyring((A,)), token, now=NOW) == "bad_claims"


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "x" * 5000])
def test_garbage_refused(garbage: str) -> None:
    """Anything that is not a JWT is refused with a reason."""
    assert refused(Keyring((A,)), garbage, now=NOW) in {"missing", "malformed"}


def test_rotation_old_secret_still_accepted_new_one_signs() -> None:
    """After rotation, old tokens work while the old secret is kept; new ones use the new key."""
    old = Keyring((A,)).issue(role=Role.OPERATOR, sub="x", now=NOW)
    rotated = Keyring((B, A))
    assert rotated.verify(old, now=NOW).role is Role.OPERATOR
    new = rotated.issue(role=Role.OPERATOR, sub="x", now=NOW)
    assert jwt.get_unverified_header(new)["kid"] == key_id(B)
    assert refused(Keyring((B,)), old, now=NOW) == "unknown_key"


def test_issue_refuses_bad_input() -> None:
    """Issuing checks its own arguments."""
    ring = Keyring((A,))
    for kw in ({"servers": ["Bad Name"]}, {"ttl": MAX_TTL + 1}, {"ttl": 0}, {"sub": ""}):
        with pytest.raises(ValueError):
            ring.issue(role=Role.ADMIN, **{"sub": "x", **kw})


@pytest.mark.parametrize(("text", "seconds"), [("30d", 2592000), ("12h", 43200), ("90m", 5400), ("3600", 3600), ("2w", 1209600)])
def test_parse_ttl(text: str, seconds: float) -> None:
    """Durations as people write them."""
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1d", "1y", "400d", "d"])
def test_parse_ttl_refuses(text: str) -> None:
    """Nonsense and over-long durations are refused."""
    with pytest.raises(ValueError):
        parse_ttl(text)


def test_revocations_expire_and_stay_bounded() -> None:
    """A revocation lasts until its time; the set never grows past its limit."""
    rev = Revocations(limit=3)
    assert rev.add("a", NOW + 10, now=NOW)
    assert not rev.add("a", NOW + 5, now=NOW)
    assert rev.revoked("a", now=NOW + 9) and not rev.revoked("a", now=NOW + 11)
    for i in range(10):
        rev.add(f"j{i}", NOW + 100 + i, now=NOW)
    assert len(rev) == 3 and rev.revoked("j9", now=NOW)
    assert not rev.add("old", NOW - 1, now=NOW)


def test_keyring_repr_hides_secrets() -> None:
    """A keyring that ends up in a log line does not print its secrets."""
    assert A not in repr(Keyring((A,)))
