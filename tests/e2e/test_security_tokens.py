"""Security end to end: tokens. Where a client may present one, what happens without one,
and every way a token is refused: expired, tampered, forged, wrong secret, revoked (which
also closes its open connections on every gateway), rotation of the secret, and renewal
in band before expiry.

Each test runs a real gateway (or several) with a secret in front of an agent driving an
emulated console, over LocalBus and over RabbitMQ.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid

import jwt
import pytest

from resofleet.contracts import Revoke, Role
from resofleet.gateway.security import Security
from resofleet.gateway.settings import Limits
from resofleet.gateway.tokens import Keyring, key_id, new_secret
from tests.integration.gateway.client import RecordingClient, handshake_status

from .conftest import servers_online
from .test_commands import clean_env, resofleet

#: Seconds an unauthenticated connection may stay open in these tests (default 5 s).
AUTH_TIMEOUT = 1.0


def bearer(token: str) -> dict:
    return {"additional_headers": {"Authorization": f"Bearer {token}"}}


def cookie(token: str) -> dict:
    return {"additional_headers": {"Cookie": f"theme=dark; resofleet_token={token}"}}


def query(url: str, token: str) -> str:
    return f"{url}?token={token}"


def tampered(token: str, **claims: object) -> str:
    """``token`` with its claims changed and its signature kept (base64url, no padding)."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    payload = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


async def marker_on(client: RecordingClient, server: str) -> None:
    """Type a unique harmless command on ``server`` and wait for its echo on the stream:
    every event published before it has reached ``client`` by then."""
    marker = f"unban marker-{uuid.uuid4().hex[:8]}"
    await client.request({"type": "command", "command": marker, "server": server})
    await client.seen(lambda m: m["type"] == "container_output" and m["output"].endswith(">" + marker))


async def test_a_token_is_accepted_in_a_header_a_query_a_cookie_or_an_auth_message(fleet):
    """The same token works as Authorization: Bearer, ?token=, the resofleet_token cookie,
    and a first auth message (answered authenticated with who, role and expiry)."""
    keyring = Keyring((new_secret(),))
    await fleet.agent("t-1")
    gateway = await fleet.gateway(security=Security(keyring=keyring, auth_timeout=AUTH_TIMEOUT))
    token = keyring.issue(role=Role.OPERATOR, sub="olga", ttl=600)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]

    in_header = await fleet.client(gateway.url, cls=RecordingClient, **bearer(token))
    in_query = await fleet.client(query(gateway.url, token), cls=RecordingClient)
    in_cookie = await fleet.client(gateway.url, cls=RecordingClient, **cookie(token))
    in_band = await fleet.client(gateway.url, cls=RecordingClient)
    authenticated = await in_band.request({"type": "auth", "token": token, "id": "a1"})
    assert authenticated == {"type": "authenticated", "sub": "olga", "role": "operator", "expires": exp, "id": "a1"}

    for client in (in_header, in_query, in_cookie, in_band):
        await servers_online(client, ["t-1"])
        reply = await client.request({"type": "command", "command": "gc", "server": "t-1"})
        assert reply["output"] == "GC finished"
    await marker_on(in_header, "t-1")  # everyone sees the output of everyone's commands
    for client in (in_query, in_cookie, in_band):
        echoes = client.received(lambda m: m["type"] == "container_output" and m["output"].endswith(">gc"))
        assert len(echoes) == 4


async def test_without_a_token_only_ping_and_auth_are_answered_then_the_connection_closes_4401(
    audit_file, fleet
):
    """A client with no token gets pong, `unauthenticated` for every other request (with its
    id), no event and no server name, and is closed with 4401 after the auth timeout."""
    audit = await audit_file("gateway")
    keyring = Keyring((new_secret(),))
    await fleet.agent("t-1")
    gateway = await fleet.gateway(
        security=Security(keyring=keyring, auth_timeout=AUTH_TIMEOUT, limits=Limits(pre_auth_burst=10)),
        audit=audit.log,
    )
    admin = await fleet.client(gateway.url, cls=RecordingClient, **bearer(keyring.issue(role=Role.ADMIN, sub="root", ttl=600)))
    await servers_online(admin, ["t-1"])

    connected = time.monotonic()
    anonymous = await fleet.client(gateway.url, cls=RecordingClient)
    assert await anonymous.request({"type": "ping", "id": "p"}) == {"type": "pong", "id": "p"}
    requests = [
        {"type": "get_servers"}, {"type": "get_status"}, {"type": "get_worlds", "server": "t-1"},
        {"type": "get_output", "server": "t-1"}, {"type": "subscribe", "servers": "*"},
        {"type": "command", "command": "unban anonymous-probe", "server": "t-1"},
        {"type": "container", "action": "restart", "server": "t-1"},
    ]
    for i, request in enumerate(requests):
        reply = await anonymous.request({**request, "id": f"u{i}"})
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "unauthenticated", f"u{i}"), reply
        assert "auth" in reply["message"]

    await marker_on(admin, "t-1")  # output flows now; the anonymous client must not get it
    code = await anonymous.closed(timeout=AUTH_TIMEOUT + 5)
    closed_after = time.monotonic() - connected
    assert code == 4401
    assert AUTH_TIMEOUT * 0.9 <= closed_after <= AUTH_TIMEOUT + 2, closed_after
    replies = [json.loads(f) for f in anonymous.frames]
    assert all("id" in m for m in replies), [m for m in replies if "id" not in m][:3]  # no event
    assert not any("t-1" in f for f in anonymous.frames)
    assert not any(m["type"] == "container_output" and "anonymous-probe" in m["output"] for m in map(json.loads, admin.frames))

    # Each request, then the timeout; alike ones from one address share a record.
    records = await audit.refusals("unauthenticated", len(requests) + 1)
    assert len(records) == len(requests) + 1
    assert all(r["who"] == "-" and r["client"] == "127.0.0.1" for r in records)
    assert "get_servers" in [r["command"] for r in records]
    print(f"\nunauthenticated connection closed 4401 after {closed_after:.2f} s (auth_timeout {AUTH_TIMEOUT} s)")


async def test_refused_tokens_get_401_in_every_place_and_are_audited_but_never_logged(audit_file, fleet, caplog):
    """Expired, tampered, forged, wrong-secret, malformed, unsigned and revoked tokens are
    refused with 401 at the handshake (header, query, cookie) and `unauthenticated` in band;
    each refusal is audited with its reason, and no token appears in any log or audit line."""
    caplog.set_level(logging.DEBUG)
    audit = await audit_file("gateway")
    secret = new_secret()
    keyring = Keyring((secret,))
    await fleet.agent("t-1")
    gateway = await fleet.gateway(
        security=Security(keyring=keyring, revoked=("revoked-id",), auth_timeout=AUTH_TIMEOUT), audit=audit.log
    )
    good = keyring.issue(role=Role.VIEWER, sub="vera", ttl=600)
    claims = jwt.decode(good, options={"verify_signature": False})
    refused = {
        "expired": keyring.issue(role=Role.VIEWER, sub="vera", ttl=60, now=time.time() - 3600),
        "bad_signature": tampered(good, role="admin"),
        "forged": jwt.encode(claims, new_secret(), algorithm="HS256", headers={"kid": key_id(secret)}),
        "unknown_key": Keyring((new_secret(),)).issue(role=Role.VIEWER, sub="vera", ttl=600),
        "malformed": "not-a-token",
        "unsigned": jwt.encode({**claims, "role": "admin"}, None, algorithm="none"),
        "revoked": keyring.issue(role=Role.VIEWER, sub="vera", ttl=600, jti="revoked-id"),
    }
    reasons = {"expired": "expired", "bad_signature": "bad_signature", "forged": "bad_signature",
               "unknown_key": "unknown_key", "malformed": "malformed", "unsigned": "malformed",
               "revoked": "revoked"}

    for name, token in refused.items():
        for place, url, kwargs in (("header", gateway.url, bearer(token)), ("query", query(gateway.url, token), {}),
                                   ("cookie", gateway.url, cookie(token))):
            assert await handshake_status(url, **kwargs) == 401, (name, place)
        client = await fleet.client(gateway.url, cls=RecordingClient)
        reply = await client.request({"type": "auth", "token": token, "id": "a"})
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "unauthenticated", "a"), (name, reply)
        still = await client.request({"type": "get_servers", "id": "s"})
        assert still["code"] == "unauthenticated", (name, still)
    viewer = await fleet.client(query(gateway.url, good), cls=RecordingClient)
    await servers_online(viewer, ["t-1"])  # the genuine token still works

    handshakes = await audit.refusals("handshake_refused", 3 * len(refused))
    assert sorted(r["reason"] for r in handshakes) == sorted(reasons[n] for n in refused for _ in range(3))
    records = await audit.records()
    in_band = [r for r in records if r["outcome"] == "unauthenticated" and r["command"] == "auth"]
    assert sorted(r["reason"] for r in in_band) == sorted(reasons.values())
    written = audit.path.read_text()
    # The gateway's own loggers (and websockets' server side); the test's clients may log theirs.
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("websockets.client"))
    for token in (*refused.values(), good):
        assert token not in written and token not in logged
        signature = token.rsplit(".", 1)[-1]
        if len(signature) >= 16:
            assert signature not in written and signature not in logged


async def test_an_expiring_token_closes_its_connection_4401_unless_renewed_in_band(fleet):
    """A connection whose token expires is closed with 4401 "token expired"; one that sent a
    fresh token in an auth message first keeps working past the old expiry."""
    keyring = Keyring((new_secret(),))
    await fleet.agent("t-1")
    gateway = await fleet.gateway(security=Security(keyring=keyring, auth_timeout=AUTH_TIMEOUT))
    issued = time.time()
    short = keyring.issue(role=Role.MODERATOR, sub="mo", ttl=1)  # expires in 1-2 s
    exp = jwt.decode(short, options={"verify_signature": False})["exp"]

    renewing = await fleet.client(gateway.url, cls=RecordingClient, **bearer(short))
    lapsing = await fleet.client(gateway.url, cls=RecordingClient, **bearer(short))
    fresh = keyring.issue(role=Role.MODERATOR, sub="mo", ttl=600)
    renewed = await renewing.request({"type": "auth", "token": fresh, "id": "renew"})
    assert renewed["type"] == "authenticated" and renewed["expires"] > exp + 500

    assert await lapsing.closed(timeout=10) == 4401
    closed_at = time.time()
    assert lapsing.ws.close_reason == "token expired"
    assert exp - 0.5 <= closed_at <= exp + 2, (closed_at - issued, exp - issued)
    await servers_online(renewing, ["t-1"])  # still authenticated after the old expiry
    reply = await renewing.request({"type": "command", "command": "unban Nobody", "server": "t-1"})
    assert reply["output"] == "Removed 0 matching bans"
    print(f"\nexpired token: closed {closed_at - exp:+.2f} s from its exp")


async def test_a_revoked_token_is_closed_4403_on_every_gateway_and_refused_from_then_on(audit_file, fleet):
    """Revoking a token id on the bus closes its connections on both gateways with 4403 at
    once; it is refused at the handshake and in band from then on, also by a gateway started
    later; other tokens are unaffected."""
    audit = await audit_file("gateway")
    keyring = Keyring((new_secret(),))
    await fleet.agent("t-1")
    security = Security(keyring=keyring, auth_timeout=AUTH_TIMEOUT)
    first = await fleet.gateway(security=security, audit=audit.log)
    second = await fleet.gateway(security=security)
    jti = f"jti-{uuid.uuid4().hex[:8]}"
    doomed_token = keyring.issue(role=Role.OPERATOR, sub="mallory", ttl=600, jti=jti)
    other_token = keyring.issue(role=Role.OPERATOR, sub="olga", ttl=600)

    doomed = [
        await fleet.client(first.url, cls=RecordingClient, **bearer(doomed_token)),
        await fleet.client(second.url, cls=RecordingClient, **bearer(doomed_token)),
    ]
    in_band = await fleet.client(second.url, cls=RecordingClient)
    assert (await in_band.request({"type": "auth", "token": doomed_token}))["type"] == "authenticated"
    doomed.append(in_band)
    others = [await fleet.client(g.url, cls=RecordingClient, **bearer(other_token)) for g in (first, second)]
    for client in doomed + others:
        await servers_online(client, ["t-1"])

    revoker = await fleet.bus_factory()
    started = time.monotonic()
    await revoker.broadcast(Revoke(jti=jti, until=time.time() + 600))
    codes = await asyncio.gather(*(c.closed(timeout=5) for c in doomed))
    took = time.monotonic() - started
    assert codes == [4403, 4403, 4403]
    assert all(c.ws.close_reason == "token revoked" for c in doomed)

    for gateway in (first, second):
        assert await handshake_status(gateway.url, **bearer(doomed_token)) == 401
    third = await fleet.gateway(security=security)  # learns the revocation from the others
    assert await handshake_status(third.url, **bearer(doomed_token)) == 401
    late = await fleet.client(third.url, cls=RecordingClient)
    refused = await late.request({"type": "auth", "token": doomed_token})
    assert refused["code"] == "unauthenticated" and "revoked" in refused["message"]
    for client in others:
        assert (await client.request({"type": "ping", "id": "still"}))["type"] == "pong"
    await servers_online(await fleet.client(third.url, cls=RecordingClient, **bearer(other_token)), ["t-1"])

    records = [r for r in await audit.records() if r["outcome"] == "handshake_refused"]
    assert [r["reason"] for r in records] == ["revoked"]
    print(f"\nrevoked token: 3 connections on 2 gateways closed 4403 within {took * 1000:.1f} ms")


@pytest.mark.parametrize("transport", ["amqp"])  # the command line reaches gateways over RabbitMQ
async def test_resofleet_token_revoke_closes_the_connections_on_every_gateway(fleet, amqp_url, topology, tmp_path):
    """`resofleet token revoke ID --amqp URL` closes the token's connections on two gateways
    with 4403, and both refuse it afterwards."""
    keyring = Keyring((new_secret(),))
    await fleet.agent("t-1")
    security = Security(keyring=keyring)
    gateways = [await fleet.gateway(security=security), await fleet.gateway(security=security)]
    jti = f"jti-{uuid.uuid4().hex[:8]}"
    token = keyring.issue(role=Role.VIEWER, sub="vic", ttl=600, jti=jti)
    clients = [await fleet.client(g.url, cls=RecordingClient, **bearer(token)) for g in gateways]
    for client in clients:
        await servers_online(client, ["t-1"])

    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *resofleet(), "token", "revoke", jti, "--amqp", amqp_url, cwd=tmp_path,
        env=clean_env(RESOFLEET_BUS_PREFIX=topology.prefix),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    codes = await asyncio.gather(*(c.closed(timeout=10) for c in clients))
    assert codes == [4403, 4403]
    for gateway in gateways:
        assert await handshake_status(gateway.url, **bearer(token)) == 401
    print(f"\n`resofleet token revoke`: both connections closed {time.monotonic() - started:.2f} s after the command started")


async def test_rotation_accepts_old_secret_tokens_while_the_old_secret_is_still_listed(fleet):
    """During a rotation (new secret signs, old one still listed) tokens from both work;
    once the old secret is dropped its tokens get 401 and the new ones still work."""
    old, new = new_secret(), new_secret()
    await fleet.agent("t-1")
    rotating = await fleet.gateway(security=Security(keyring=Keyring((new, old))))
    rotated = await fleet.gateway(security=Security(keyring=Keyring((new,))))
    old_token = Keyring((old,)).issue(role=Role.VIEWER, sub="early", ttl=600)
    new_token = Keyring((new, old)).issue(role=Role.VIEWER, sub="late", ttl=600)
    assert jwt.get_unverified_header(new_token)["kid"] == key_id(new)

    for token in (old_token, new_token):
        client = await fleet.client(rotating.url, cls=RecordingClient, **bearer(token))
        await servers_online(client, ["t-1"])
        in_band = await fleet.client(rotating.url, cls=RecordingClient)
        assert (await in_band.request({"type": "auth", "token": token}))["type"] == "authenticated"

    assert await handshake_status(rotated.url, **bearer(old_token)) == 401
    in_band = await fleet.client(rotated.url, cls=RecordingClient)
    assert (await in_band.request({"type": "auth", "token": old_token}))["code"] == "unauthenticated"
    await servers_online(await fleet.client(rotated.url, cls=RecordingClient, **bearer(new_token)), ["t-1"])


def test_helpers_tamper_without_resigning():
    """tampered() keeps the signature, so a verifier must refuse the result."""
    keyring = Keyring((new_secret(),))
    token = keyring.issue(role=Role.VIEWER, sub="v", ttl=60)
    changed = tampered(token, role="admin")
    assert changed.split(".")[2] == token.split(".")[2] and changed != token
    assert jwt.decode(changed, options={"verify_signature": False})["role"] == "admin"
