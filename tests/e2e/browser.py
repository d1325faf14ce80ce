"""A real browser for the tests: Debian's chromium, driven by Playwright's async API.

``browser`` launches ``RESOFLEET_CHROMIUM`` (default ``/usr/bin/chromium``, which
``tests/services.sh`` installs with apt) headless, once per test, and skips the test with
the reason when it is missing or when ``RESOFLEET_NO_BROWSER`` is set (the same knob
makes ``tests/services.sh`` skip the install). Import the fixture into the test module
(``from .browser import browser``) and mark the module ``browser``.

:func:`websocket` runs one WebSocket conversation *inside a page*, so the browser sends
its own ``Origin`` and cookies, and returns what happened: whether it opened, every
message received, and how it closed. It waits on the socket's events, never on a clock,
and gives up after a timeout on both sides (JavaScript and Python).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

#: Where Debian's package puts chromium; ``RESOFLEET_CHROMIUM`` overrides it.
DEFAULT_CHROMIUM = "/usr/bin/chromium"

#: Seconds any one browser wait (launch, navigation, a WebSocket conversation) may take
#: before the test fails: generous, a cold chromium start on CI takes a few seconds.
WAIT: float = 15.0

#: Chromium flags for tests as root in a container. ``--no-sandbox``: the sandbox needs
#: user namespaces root does not get here. ``--disable-background-networking``: no update
#: checks or safe-browsing fetches to an unreachable internet.
#: ``LocalNetworkAccessChecks``: chromium 156 refuses a page's WebSocket to loopback
#: (ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS) unless this is off.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-features=LocalNetworkAccessChecks",
)


def chromium_path() -> str:
    return os.environ.get("RESOFLEET_CHROMIUM") or DEFAULT_CHROMIUM


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless chromium for one test; every context it makes waits at most WAIT."""
    if os.environ.get("RESOFLEET_NO_BROWSER"):
        pytest.skip("RESOFLEET_NO_BROWSER is set")
    path = chromium_path()
    if not os.access(path, os.X_OK):
        pytest.skip(
            f"needs Debian's chromium at {path}: run tests/services.sh as root (it runs "
            "`apt-get install -y --no-install-recommends chromium`), or point "
            "RESOFLEET_CHROMIUM at a chromium"
        )
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=path, headless=True, args=list(CHROMIUM_ARGS), timeout=WAIT * 1000
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Any, url: str | None = None) -> Any:
    """A page in a fresh context (no cookies), at ``url`` when given."""
    context = await browser.new_context()
    context.set_default_timeout(WAIT * 1000)
    page = await context.new_page()
    if url is not None:
        await page.goto(url)
    return page


async def page_at(browser: Any, origin: str) -> Any:
    """A page in a fresh context whose origin is ``origin``, which need not exist.

    Playwright answers the navigation itself with a blank page, so no server or DNS is
    involved; the page's own requests (its WebSockets) go out for real, with
    ``Origin: <origin>``.
    """
    page = await new_page(browser)
    await page.route(
        f"{origin}/**",
        lambda route: route.fulfill(
            status=200, content_type="text/html", body="<!doctype html><title>elsewhere</title>"
        ),
    )
    await page.goto(f"{origin}/")
    return page


@dataclass
class Conversation:
    """What one WebSocket in a page saw."""

    opened: bool
    messages: list[dict[str, Any]] = field(default_factory=list)
    #: ``{"code": int, "reason": str, "clean": bool}`` once the socket closed, else None.
    closed: dict[str, Any] | None = None
    #: True when the JavaScript side gave up waiting.
    timed_out: bool = False
    #: Set when ``new WebSocket`` itself threw (a bad URL, a blocked scheme).
    error: str | None = None


# Runs in the page. Opens the socket; on open sends each message (JSON) in order; resolves
# with the transcript when a message matches every key of `until` (or, with `until` null,
# when the socket closes), or after `timeoutMs` with timedOut set. A close always resolves.
_CONVERSE = """
({url, send, until, timeoutMs}) => new Promise((resolve) => {
  const t = {opened: false, messages: [], closed: null, timedOut: false, error: null};
  let ws;
  const finish = () => { clearTimeout(timer); resolve(t); };
  const timer = setTimeout(() => { t.timedOut = true; resolve(t); }, timeoutMs);
  try { ws = new WebSocket(url); } catch (e) { t.error = String(e); finish(); return; }
  ws.onopen = () => { t.opened = true; for (const m of send) ws.send(JSON.stringify(m)); };
  ws.onmessage = (event) => {
    let m;
    try { m = JSON.parse(event.data); } catch (e) { m = {unparsed: String(event.data)}; }
    t.messages.push(m);
    if (until && Object.entries(until).every(([k, v]) => m[k] === v)) { ws.close(); finish(); }
  };
  ws.onclose = (event) => {
    t.closed = {code: event.code, reason: event.reason, clean: event.wasClean};
    finish();
  };
})
"""


async def websocket(
    page: Any,
    url: str,
    *,
    send: Sequence[Mapping[str, Any]] = (),
    until: Mapping[str, Any] | None = None,
    timeout: float = WAIT,
) -> Conversation:
    """Open a WebSocket to ``url`` from ``page``'s JavaScript and talk until ``until``.

    ``until`` matches a received message on every key it names (for example
    ``{"id": 1}``); None waits for the close. A JavaScript-side timeout fails the test
    with the transcript so far.
    """
    args = {"url": url, "send": list(send), "until": dict(until) if until else None,
            "timeoutMs": int(timeout * 1000)}
    async with asyncio.timeout(timeout + 5.0):  # the page's own timer fires first
        raw = await page.evaluate(_CONVERSE, args)
    conversation = Conversation(
        opened=raw["opened"], messages=raw["messages"], closed=raw["closed"],
        timed_out=raw["timedOut"], error=raw["error"],
    )
    if conversation.timed_out:
        what = f"a message matching {until}" if until else "the close"
        raise AssertionError(f"no {what} within {timeout} s from {url}: {conversation}")
    return conversation
