"""The dashboard's text rules, run in chromium on the modules the gateway serves: how
Resonite rich text and ANSI colours become styled text, and what stays literal.

No fleet is needed: a gateway over an in-process bus serves the files, and the page imports
the modules themselves (what the page runs is what is tested)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from resofleet.bus import LocalBus
from resofleet.gateway import Gateway

from .browser import browser  # noqa: F401 (fixture)
from .dashboard_page import open_dashboard

pytestmark = pytest.mark.browser


@pytest.fixture
async def page(browser) -> AsyncIterator[Any]:
    bus = LocalBus()
    await bus.start()
    gateway = Gateway(bus, host="127.0.0.1", port=0)
    await gateway.start()
    try:
        watched = await open_dashboard(browser, f"http://127.0.0.1:{gateway.port}/")
        yield watched.page
        await watched.assert_clean()
    finally:
        await gateway.close()
        await bus.close()


async def rich(page: Any, text: str) -> list[dict[str, Any]]:
    """Segments of ``text`` as the page's richtext.parse gives them (styles that are off
    left out)."""
    return await page.evaluate(
        """async (text) => (await import('/app/richtext.js')).parse(text).map((s) => {
             const out = {text: s.text};
             for (const k of ['b', 'i', 'u', 's']) if (s[k]) out[k] = true;
             if (s.color) out.color = s.color;
             return out;
           })""",
        text,
    )


@pytest.mark.parametrize(("source", "segments"), [
    ("Harbor Lounge", [{"text": "Harbor Lounge"}]),
    ("<b>Bold</b><color=#f00>Red</color>", [{"text": "Bold", "b": True}, {"text": "Red", "color": "#f00"}]),
    ('<color="blue"><i>x</i></color>!', [{"text": "x", "i": True, "color": "blue"}, {"text": "!"}]),
    ("<size=120%>Big</size> <noparse>n</noparse><br>b", [{"text": "Big"}, {"text": " "}, {"text": "n"}, {"text": " "}, {"text": "b"}]),
    ("<img src=x onerror=alert(1)>", [{"text": "<img src=x onerror=alert(1)>"}]),
    ("<script>alert(1)</script>", [{"text": "<script>alert(1)</script>"}]),
    ("<color=red;background:url(//x)>t</color>", [{"text": "t"}]),  # not a colour: no style
    ("<u>a<s>b</s></u><closeall>c", [{"text": "a", "u": True}, {"text": "b", "u": True, "s": True}, {"text": "c"}]),
    ("5 < 6 > 4 <3", [{"text": "5 < 6 > 4 <3"}]),
])
async def test_rich_text(page, source, segments):
    """Resonite's tags are applied or dropped; anything else stays as its characters."""
    assert await rich(page, source) == segments


@pytest.mark.parametrize(("source", "runs"), [
    ("plain", [["plain", []]]),
    ("\x1b[31mred\x1b[0m then \x1b[1;32mbold green\x1b[m", [
        ["red", ["ansi-fg31"]], [" then ", []], ["bold green", ["ansi-bold", "ansi-fg32"]],
    ]),
    ("bell\x07 and\x1b[2Jclear", [["bell and", []], ["clear", []]]),
    ("tab\tkept", [["tab\tkept", []]]),
])
async def test_ansi_colours_become_classes_and_other_controls_go(page, source, runs):
    got = await page.evaluate(
        "async (t) => (await import('/app/console.js')).ansi(t).map((r) => [r.text, r.classes])", source
    )
    assert got == runs
