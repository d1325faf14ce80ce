"""Security from a real browser (Debian's chromium): the login cookie and browser origins.

Each test runs a gateway with a secret in front of a real agent on an emulated console,
over LocalBus and over RabbitMQ, and talks to it from JavaScript in a page, so the
browser itself decides which cookies and which ``Origin`` go with the handshake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from resofleet.contracts import Role
from resofleet.gateway.security import Security
from resofleet.gateway.tokens import Keyring, new_secret
from tests.integration.gateway.client import Client

from .browser import WAIT, browser, new_page, page_at, websocket  # noqa: F401 (fixture)
from .conftest import servers_online

pytestmark = pytest.mark.browser

#: The cookie ``GET /login`` sets.
COOKIE = "resofleet_token"
#: A page's origin that is neither the gateway's nor resolvable: Playwright serves it.
ELSEWHERE = "http://dash.example.test"
#: Seconds an unauthenticated session lives here: short, so the 4401 close comes quickly.
AUTH_TIMEOUT = 1.0


@dataclass
class Secured:
    gateway: Any
    #: ``http://127.0.0.1:<port>``: the gateway's own origin.
    origin: str
    #: A viewer token for "alice", valid for ten minutes.
    token: str

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.gateway.port}/ws"


async def secured(fleet: Any, *, origins: tuple[str, ...] = ()) -> Secured:
    """A gateway with a secret (and ``origins``), its agent's server "alpha" online."""
    keyring = Keyring((new_secret(),))
    await fleet.agent("alpha")
    gateway = await fleet.gateway(
        security=Security(keyring=keyring, origins=origins, auth_timeout=AUTH_TIMEOUT)
    )
    token = keyring.issue(role=Role.VIEWER, sub="alice", ttl=600)
    client = await Client.connect(gateway.url, additional_headers={"Authorization": f"Bearer {token}"})
    fleet.clients.append(client)
    await servers_online(client, ["alpha"])
    return Secured(gateway, f"http://127.0.0.1:{gateway.port}", token)


async def test_login_sets_an_httponly_samesite_strict_cookie(browser, fleet):
    """GET /login?token= sets the token as a cookie that the page's JavaScript cannot read."""
    s = await secured(fleet)
    page = await new_page(browser)
    response = await page.goto(f"{s.origin}/login?token={s.token}")
    assert response is not None and response.status == 200

    [cookie] = [c for c in await page.context.cookies() if c["name"] == COOKIE]
    assert cookie["value"] == s.token
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/")
    assert s.token not in await page.evaluate("document.cookie")


async def test_login_with_a_bad_token_is_401_and_sets_no_cookie(browser, fleet):
    """GET /login with a token not signed by the gateway's secret is 401, and no cookie."""
    s = await secured(fleet)
    forged = Keyring((new_secret(),)).issue(role=Role.ADMIN, sub="mallory", ttl=600)
    page = await new_page(browser)
    response = await page.goto(f"{s.origin}/login?token={forged}")
    assert response is not None and response.status == 401
    assert [c for c in await page.context.cookies() if c["name"] == COOKIE] == []


async def test_a_page_with_the_login_cookie_gets_status_over_its_websocket(browser, fleet):
    """After /login, a page of the same origin opens a WebSocket authenticated by the cookie alone."""
    s = await secured(fleet)
    page = await new_page(browser, f"{s.origin}/login?token={s.token}")
    # The login page itself forbids scripts and connections (its CSP is default-src 'none'),
    # as it should; a page of the gateway's origin (the dashboard, later) is what connects.
    await page.goto(f"{s.origin}/healthz")
    talk = await websocket(page, s.ws, send=[{"type": "get_status", "id": 1}], until={"id": 1})
    assert talk.opened
    reply = talk.messages[-1]
    assert (reply["type"], reply["server"], reply["id"]) == ("status_update", "alpha", 1), talk


async def test_a_page_without_the_cookie_is_unauthenticated_then_closed_4401(browser, fleet):
    """A same-origin page with no cookie connects, is refused get_status, and is closed 4401."""
    s = await secured(fleet)
    page = await new_page(browser, f"{s.origin}/healthz")
    talk = await websocket(page, s.ws, send=[{"type": "get_status", "id": 1}])
    assert talk.opened
    replies = [m for m in talk.messages if m.get("id") == 1]
    assert [(m["type"], m.get("code")) for m in replies] == [("error", "unauthenticated")], talk
    assert talk.closed is not None and talk.closed["code"] == 4401, talk


async def test_a_page_from_another_origin_is_refused_at_the_handshake(browser, fleet):
    """A page from an origin not configured never opens: the handshake is answered 403."""
    s = await secured(fleet)
    page = await page_at(browser, ELSEWHERE)
    # The page only sees 1006; chromium reports the handshake's status on the console.
    async with page.expect_console_message(
        lambda m: "WebSocket handshake" in m.text, timeout=WAIT * 1000
    ) as console:
        talk = await websocket(page, s.ws, send=[{"type": "auth", "token": s.token, "id": 1}])
    assert not talk.opened and talk.messages == [], talk
    assert talk.closed is not None and talk.closed["code"] == 1006, talk
    assert "Unexpected response code: 403" in (await console.value).text


async def test_a_page_from_a_configured_origin_connects_and_authenticates(browser, fleet):
    """A page from an origin listed in the gateway's origins connects and can auth."""
    s = await secured(fleet, origins=(ELSEWHERE,))
    page = await page_at(browser, ELSEWHERE)
    talk = await websocket(page, s.ws, send=[{"type": "auth", "token": s.token, "id": 1}], until={"id": 1})
    assert talk.opened
    reply = talk.messages[-1]
    assert (reply["type"], reply["sub"], reply["role"]) == ("authenticated", "alice", "viewer"), talk


async def test_a_same_origin_page_connects_when_other_origins_are_configured(browser, fleet):
    """Configuring origins does not shut out the gateway's own origin."""
    s = await secured(fleet, origins=(ELSEWHERE,))
    page = await new_page(browser, f"{s.origin}/healthz")
    talk = await websocket(page, s.ws, send=[{"type": "auth", "token": s.token, "id": 1}], until={"id": 1})
    assert talk.opened
    reply = talk.messages[-1]
    assert (reply["type"], reply["sub"]) == ("authenticated", "alice"), talk
