"""Authentication over a real gateway: the four ways to present a token, the auth
timeout, /login, handshake refusals, expiry, renewal, revocation and clean logs.

Each runs over LocalBus and over RabbitMQ; no agent is needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from resofleet.bus import Bus
from resofleet.contracts import Revoke, Role
from resofleet.gateway import CLOSE_REVOKED, CLOSE_UNAUTHENTICATED, Security
from resofleet.gateway.tokens import Keyring
from resofleet.audit import AuditLog

from .client import WAIT, Client, http_get, wait_until

SECRET = "a" * 43
OTHER_SECRET = "b" * 43
KEYRING = Keyring((SECRET,))
#: A short auth timeout keeps the tests quick; the real one is 5 s.
AUTH_TIMEOUT = 0.5


def token(role: Role = Role.VIEWER, **options) -> str:
    options.setdefault("sub", "ann")
    return KEYRING.issue(role=role, **options)


async def closed(client: Client, timeout: float = WAIT) -> tuple[int | None, str]:
    """Wait until the gateway closes ``client``: the close code and reason it sent."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                client.skipped.append(json.loads(await client.ws.recv()))
            except ConnectionClosed as exc:
                return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
async def audit(tmp_path):
    log = AuditLog(tmp_path / "gateway.jsonl", source="gateway", flush_interval=0.01)
    await log.start()
    yield log
    await log.close()


@pytest.fixture
def secured(start_gateway, audit):
    """Start a gateway that requires tokens (and audits refusals)."""

    async def start(**options):
        options.setdefault("security", Security(keyring=KEYRING, auth_timeout=AUTH_TIMEOUT))
        return await start_gateway(audit=audit, **options)

    return start


async def identity(gateway) -> tuple[str, str] | None:
    """(sub, role) of the gateway's one session, once it has one."""
    session = await wait_until(lambda: next(iter(gateway.sessions), None), what="a session")
    p = session.principal
    return None if p is None else (p.sub, p.role.label)


# -- four ways in --------------------------------------------------------------------


async def test_bearer_header(secured):
    """Authorization: Bearer authenticates the handshake."""
    gateway = await secured()
    headers = {"Authorization": f"Bearer {token(Role.MODERATOR)}"}
    async with await Client.connect(gateway.url, additional_headers=headers) as client:
        assert (await client.request({"type": "get_servers"}))["type"] == "servers_update"
        assert await identity(gateway) == ("ann", "moderator")


async def test_query_token(secured):
    """?token= authenticates the handshake (browsers)."""
    gateway = await secured()
    async with await Client.connect(f"{gateway.url}?token={token()}") as client:
        assert (await client.request({"type": "get_servers"}))["type"] == "servers_update"
        assert await identity(gateway) == ("ann", "viewer")


async def test_cookie(secured):
    """The resofleet_token cookie authenticates the handshake."""
    gateway = await secured()
    headers = {"Cookie": f"theme=dark; resofleet_token={token(Role.OPERATOR)}"}
    async with await Client.connect(gateway.url, additional_headers=headers) as client:
        assert (await client.request({"type": "get_servers"}))["type"] == "servers_update"
        assert await identity(gateway) == ("ann", "operator")


async def test_auth_message(secured, tmp_path):
    """Without a token only auth and ping are answered; a valid auth opens the rest."""
    gateway = await secured()
    async with await Client.connect(gateway.url) as client:
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        refused = await client.request({"type": "get_servers"})
        assert (refused["type"], refused["code"]) == ("error", "unauthenticated")
        reply = await client.request({"type": "auth", "token": token(Role.ADMIN, sub="bot")})
        assert (reply["type"], reply["sub"], reply["role"]) == ("authenticated", "bot", "admin")
        assert reply["expires"] > time.time()
        assert (await client.request({"type": "get_servers"}))["type"] == "servers_update"
    await gateway.guard.audit.flush()
    [record] = [r for r in records(tmp_path / "gateway.jsonl") if r["outcome"] == "unauthenticated"]
    assert (record["command"], record["client"], record["who"]) == ("get_servers", "127.0.0.1", "-")


async def test_bad_auth_message_keeps_the_session_unauthenticated(secured):
    """A refused auth says why; the session still has no identity and no events."""
    gateway = await secured()
    async with await Client.connect(gateway.url) as client:
        bad = Keyring((OTHER_SECRET,)).issue(role=Role.ADMIN, sub="mallory")
        reply = await client.request({"type": "auth", "token": bad})
        assert (reply["type"], reply["code"]) == ("error", "unauthenticated")
        assert "secret" in reply["message"]
        assert await identity(gateway) is None


# -- the auth timeout ----------------------------------------------------------------


async def test_no_token_is_closed_4401_after_the_auth_timeout(secured):
    """A connection that never authenticates is closed with 4401 after auth_timeout."""
    gateway = await secured()
    async with await Client.connect(gateway.url) as client:
        started = time.monotonic()
        code, reason = await closed(client, timeout=AUTH_TIMEOUT + WAIT)
        assert (code, reason) == (CLOSE_UNAUTHENTICATED, "authentication required")
        assert AUTH_TIMEOUT * 0.9 <= time.monotonic() - started < AUTH_TIMEOUT + 2.0
        assert client.skipped == []  # not one event byte


# -- /login --------------------------------------------------------------------------


async def test_login_sets_a_cookie_that_opens_the_websocket(secured):
    """GET /login?token= answers a page and an HttpOnly, SameSite=Strict cookie."""
    gateway = await secured()
    tok = token(ttl=3600)
    async with asyncio.timeout(WAIT):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            f"GET /login?token={tok} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        data = (await reader.read()).decode()
        writer.close()
    head, _, body = data.partition("\r\n\r\n")
    lines = head.split("\r\n")
    assert lines[0].split()[1] == "200"
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "no-referrer"
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"resofleet_token={tok}; ")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert 3590 <= int(cookie.split("Max-Age=")[1].split(";")[0]) <= 3600
    assert "ann" in body and "viewer" in body
    pair = cookie.split(";")[0]
    async with await Client.connect(gateway.url, additional_headers={"Cookie": pair}) as client:
        assert (await client.request({"type": "get_servers"}))["type"] == "servers_update"


async def test_login_refuses_a_bad_token_and_logout_clears(secured):
    """A bad token at /login is a 401 page; /logout expires the cookie."""
    gateway = await secured()
    status, body = await http_get(gateway.port, "/login?token=nonsense")
    assert status == 401 and "not a resofleet token" in body
    status, _ = await http_get(gateway.port, "/logout")
    assert status == 200


async def test_login_in_open_mode_says_no_login_is_needed(start_gateway):
    """Open mode: /login answers 200 and sets nothing."""
    gateway = await start_gateway()
    status, body = await http_get(gateway.port, "/login?token=x")
    assert status == 200 and "no login needed" in body


# -- handshake refusals --------------------------------------------------------------


def _tampered() -> str:
    head, claims, signature = token().split(".")
    return f"{head}.{claims}.{signature[:-4]}AAAA"


REFUSED = {
    "tampered": (_tampered, "bad_signature"),
    "expired": (lambda: token(ttl=60, now=time.time() - 3600), "expired"),
    "wrong secret": (lambda: Keyring((OTHER_SECRET,)).issue(role=Role.ADMIN, sub="x"), "unknown_key"),
    "garbage": (lambda: "not-a-jwt", "malformed"),
    "revoked": (lambda: token(jti="gone"), "revoked"),
}


@pytest.mark.parametrize("kind", REFUSED)
async def test_refused_token_is_401_at_the_handshake(secured, tmp_path, kind):
    """A token presented and refused: HTTP 401 saying why, and an audit record."""
    make, reason = REFUSED[kind]
    gateway = await secured(
        security=Security(keyring=KEYRING, auth_timeout=AUTH_TIMEOUT, revoked=("gone",))
    )
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{gateway.url}?token={make()}", open_timeout=WAIT)
    assert refused.value.response.status_code == 401
    assert refused.value.response.body.decode().startswith("unauthorized: ")
    await gateway.guard.audit.flush()
    [record] = records(tmp_path / "gateway.jsonl")
    assert (record["outcome"], record["reason"], record["command"]) == (
        "handshake_refused", reason, "handshake",
    )


# -- expiry, renewal, revocation -----------------------------------------------------


async def test_expiry_closes_4401(secured):
    """When the session's token expires without renewal: close 4401 "token expired"."""
    gateway = await secured()
    short = token(ttl=1)
    async with await Client.connect(f"{gateway.url}?token={short}") as client:
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        assert await closed(client, timeout=3 + WAIT) == (CLOSE_UNAUTHENTICATED, "token expired")


async def test_renewal_extends_the_session(secured):
    """A new auth before expiry replaces the principal; the session outlives the old token,
    while a session that kept it is closed at its expiry."""
    gateway = await secured()
    short = token(ttl=1)
    async with (
        await Client.connect(f"{gateway.url}?token={short}") as client,
        await Client.connect(f"{gateway.url}?token={short}") as kept,
    ):
        reply = await client.request({"type": "auth", "token": token(Role.OPERATOR, ttl=3600)})
        assert (reply["type"], reply["role"]) == ("authenticated", "operator")
        # the old token's expiry has come when the session that kept it is closed for it
        assert await closed(kept, timeout=3 + WAIT) == (CLOSE_UNAUTHENTICATED, "token expired")
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        await wait_until(lambda: len(gateway.sessions) == 1, what="the expired session to end")
        assert await identity(gateway) == ("ann", "operator")


async def test_revocation_closes_4403_and_is_refused_after(secured, bus_factory):
    """A Revoke on the bus closes the sessions of that token (4403) and refuses it."""
    gateway = await secured()
    tok = token(jti="j-revoke")
    async with await Client.connect(f"{gateway.url}?token={tok}") as client:
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        sender = await bus_factory()
        await sender.broadcast(Revoke(jti="j-revoke", until=time.time() + 3600))
        assert await closed(client) == (CLOSE_REVOKED, "token revoked")
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{gateway.url}?token={tok}", open_timeout=WAIT)
    assert refused.value.response.status_code == 401


async def test_gateway_started_later_learns_revocations_from_a_peer(secured, bus_factory):
    """Gossip: a gateway that starts after a revocation learns it when it discovers."""
    first = await secured()
    sender: Bus = await bus_factory()
    await sender.broadcast(Revoke(jti="j-old", until=time.time() + 3600))
    await wait_until(lambda: first.guard.is_revoked("j-old"), what="the first gateway to learn it")
    late = await secured()
    await wait_until(lambda: late.guard.is_revoked("j-old"), what="the late gateway to learn it")


# -- logs ----------------------------------------------------------------------------


async def test_no_token_in_any_log_line(secured, caplog):
    """Connections with ?token= (accepted and refused) and /login leave no token in logs."""
    caplog.set_level(logging.DEBUG)
    gateway = await secured()
    tok, bad = token(), _tampered()
    async with await Client.connect(f"{gateway.url}?token={tok}") as client:
        await client.request({"type": "auth", "token": bad})
        await client.request({"type": "command", "command": "users", "server": "zz"})
    with pytest.raises(InvalidStatus):
        await connect(f"{gateway.url}?token={bad}", open_timeout=WAIT)
    await http_get(gateway.port, f"/login?token={tok}")
    await http_get(gateway.port, f"/login?token={bad}")
    # The test's own client logs its request line: only the gateway's side is checked.
    text = "\n".join(
        caplog.handler.format(r) for r in caplog.records if not r.name.startswith("websockets.client")
    )
    assert "GET /ws?token=[redacted]" in text and "127.0.0.1" in text  # lines were captured
    for secret in (tok, bad, tok.split(".")[2], bad.split(".")[2]):
        assert secret not in text


# -- refusals carry what routing decided ---------------------------------------------


async def test_routing_refusals_are_audited_with_the_role_and_the_scope_routing_decided(secured, tmp_path):
    """Forbidden requests record the role they need; unknown_server ones record the server
    refused and why (malformed, outside the token's servers, pinned to another server),
    for requests and subscriptions alike, while the client reads the same refusals."""
    gateway = await secured()
    lab_viewer = token(Role.VIEWER, servers=["lab-*"])
    async with await Client.connect(f"{gateway.url}?token={lab_viewer}") as client:
        for request, code in [
            ({"type": "command", "command": "kick Mira", "server": "lab-1"}, "forbidden"),
            ({"type": "container", "action": "stop", "server": "lab-1"}, "forbidden"),
            ({"type": "command", "command": "users", "server": "prod-1"}, "unknown_server"),
            ({"type": "get_status", "server": "Bad Id"}, "unknown_server"),
            ({"type": "subscribe", "servers": ["lab-1", "prod-2", "lab-3"]}, "unknown_server"),
        ]:
            reply = await client.request(request)
            assert (reply["type"], reply["code"]) == ("error", code), (request, reply)
    async with await Client.connect(f"{gateway.url}/lab-1?token={lab_viewer}") as pinned:
        for request in (
            {"type": "command", "command": "users", "server": "lab-2"},
            {"type": "subscribe", "servers": ["lab-2"]},
        ):
            assert (await pinned.request(request))["code"] == "unknown_server"
    await gateway.guard.audit.flush()
    audited = [
        (r["outcome"], r["reason"], r["command"], r["server"])
        for r in records(tmp_path / "gateway.jsonl")
    ]
    assert audited == [
        ("forbidden", "needs moderator", "kick Mira", "lab-1"),
        ("forbidden", "needs admin", "container stop", "lab-1"),
        ("out_of_scope", "outside the token's servers", "users", "prod-1"),
        ("rejected_input", "malformed server id", "get_status", "Bad Id"),
        ("out_of_scope", "outside the token's servers", "subscribe", "prod-2"),
        ("out_of_scope", "pinned to another server", "users", "lab-2"),
        ("out_of_scope", "pinned to another server", "subscribe", "lab-2"),
    ]


async def test_rejected_input_is_audited_with_what_could_be_read_of_it(secured, tmp_path):
    """A frame that does not fit the protocol is recorded with its command text, else its
    type, else nothing, as far as it could be read."""
    gateway = await secured()
    async with await Client.connect(f"{gateway.url}?token={token(Role.ADMIN)}") as client:
        for frame in (
            '{"type": "command", "command": "kick Mira\\nshutdown", "id": 1}',
            '{"type": "command", "command": "ban Mira", "id": {"not": "an id"}}',
            '{"type": "container", "action": "explode", "id": 2}',
            '{"type": "teleport", "id": 3}',
            "not json",
        ):
            await client.send(frame)
            assert (await client.recv())["type"] == "error"
    await gateway.guard.audit.flush()
    audited = [(r["outcome"], r.get("command")) for r in records(tmp_path / "gateway.jsonl")]
    assert audited == [
        ("rejected_input", "kick Mira\nshutdown"),
        ("rejected_input", "ban Mira"),
        ("rejected_input", "container"),
        ("rejected_input", "teleport"),
        ("rejected_input", None),
    ]


async def test_a_token_that_just_expired_is_refused_at_auth(secured):
    """A token that expired a moment ago (within any clock-skew leeway) is refused with
    `unauthenticated`, not accepted and then closed."""
    gateway = await secured()
    stale = KEYRING.issue(role=Role.ADMIN, sub="ann", ttl=60, now=time.time() - 62)
    async with await Client.connect(gateway.url) as client:
        reply = await client.request({"type": "auth", "token": stale, "id": 1})
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "unauthenticated", 1)
        assert "expired" in reply["message"]
        assert (await client.request({"type": "ping"}))["type"] == "pong"  # still open, unauthenticated


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example.test"},
        {"Origin": "null"},
    ],
    ids=["cross-site", "same-site", "foreign-origin", "null-origin"],
)
async def test_login_and_logout_from_another_site_are_refused(secured, headers):
    """Login CSRF: a page of another site that makes the browser load /login?token=<the
    attacker's> (an image, a link, a form) must not set (or, with /logout, clear) the
    victim's cookie; the browser's own Sec-Fetch-Site and Origin headers say who asked."""
    gateway = await secured()
    for path in (f"/login?token={token(Role.ADMIN)}", "/logout"):
        status, body = await http_get(gateway.port, path, headers=headers)
        assert status == 403 and "another site" in body, (path, status, body)


async def test_login_typed_or_from_the_gateways_own_pages_sets_the_cookie(secured):
    """An address typed or bookmarked (Sec-Fetch-Site: none), a page of the gateway's own
    origin, and clients that send neither header (scripts) still log in."""
    gateway = await secured()
    port = gateway.port
    for headers in (
        {"Sec-Fetch-Site": "none"},
        {"Sec-Fetch-Site": "same-origin", "Origin": f"http://127.0.0.1:{port}"},
        {},
    ):
        status, _ = await http_get(port, f"/login?token={token(Role.ADMIN)}", headers=headers)
        assert status == 200, headers
