"""The dashboard's console in a real browser, over both buses: a command typed in
**Command** shows the console's reply in **Console**, the arrow keys recall it, search
finds lines, and through a gateway restart the console shows every line once, in order
(the lines it missed while disconnected fetched with ``get_output since``)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import expect

from resofleet.gateway import Gateway
from tests.integration.gateway.client import Client, wait_until

from .browser import WAIT, browser  # noqa: F401 (fixture)
from .conftest import emulated
from .dashboard_page import Watched, open_dashboard

pytestmark = pytest.mark.browser
expect.set_options(timeout=WAIT * 1000)

#: Engine log lines per second the emulator prints while the gateway restarts: enough that
#: a restart of a second misses dozens of them, few enough to read back quickly.
CHATTER_RATE = "40"
#: Lines the console prints while the page's gateway is down, at least, before it returns.
MISSED = 30
#: Tab presses a keyboard user may need to reach the command line from the page's top.
MAX_TABS = 40


def home(gateway: Any) -> str:
    return f"http://127.0.0.1:{gateway.port}/"


async def open_console(watched: Watched, server: str) -> Any:
    page = watched.page
    await page.get_by_role("link", name=server, exact=True).click()
    await page.get_by_role("button", name="Console", exact=True).click()
    return page.get_by_role("log", name="Console")


async def shown(console: Any) -> list[tuple[int, str]]:
    """The console's numbered lines as the page shows them: (seq, text)."""
    rows = await console.evaluate(
        "e => [...e.querySelectorAll('[data-seq]')].map(l => [Number(l.dataset.seq), l.textContent])"
    )
    return [(seq, text) for seq, text in rows]


async def ring(client: Client, server: str) -> dict[int, str]:
    """Every line the agent still holds for ``server``, by seq (paged as the API says)."""
    lines: dict[int, str] = {}
    since = 0
    while True:
        reply = await client.request({"type": "get_output", "server": server, "since": since})
        lines.update({line["seq"]: line["output"] for line in reply["lines"]})
        if reply["complete"] or not reply["lines"]:
            return lines
        since = reply["lines"][-1]["seq"]


async def test_a_command_typed_in_the_console_shows_the_reply_and_the_keyboard_reaches_it(browser, fleet):
    """`users` typed in Command and Enter: the console's reply appears in Console; the
    line clears, ArrowUp brings the command back; search finds a line; a keyboard user
    reaches Command with Tab."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    watched = await open_dashboard(browser, home(gateway))
    page = watched.page
    console = await open_console(watched, "alpha")
    await expect(console).to_contain_text("World running...")  # the history, from get_output

    command = page.get_by_role("textbox", name="Command")
    await command.fill("users")  # the focused world's users: the headless's own account
    await command.press("Enter")
    await expect(console).to_contain_text("Night Market>users")
    await expect(console).to_contain_text("HarborHost\tID: U-1a2B3c4D5e\tRole: Admin")
    await expect(command).to_have_value("")
    await command.press("ArrowUp")
    await expect(command).to_have_value("users")
    await command.press("ArrowDown")
    await expect(command).to_have_value("")

    search = page.get_by_role("searchbox", name="Search console")
    await search.fill("u-1a2b3c4d5e")
    await search.press("Enter")
    await expect(page.get_by_text(re.compile(r"^1 of 1$"))).to_be_visible()

    await page.get_by_role("link", name="All servers").focus()
    for _ in range(MAX_TABS):
        await page.keyboard.press("Tab")
        if await command.evaluate("e => e === document.activeElement"):
            break
    else:
        raise AssertionError(f"Command not reached in {MAX_TABS} Tab presses")
    await page.keyboard.type("version")
    await page.keyboard.press("Enter")
    await expect(console).to_contain_text("2026.5.27.1300")
    await watched.assert_clean()


async def test_the_console_keeps_every_line_in_order_through_a_gateway_restart(browser, fleet):
    """While the page's gateway is down the console keeps printing; the page says it is
    reconnecting, and once back shows every line exactly once, in order, the missed ones
    included, as the agent numbered them. A second gateway, up throughout, lets the test
    see the agent's lines while the page's gateway is down."""
    await fleet.agent(emulated("alpha", "--chatter-rate", CHATTER_RATE))
    gateway = await fleet.gateway()
    observer = await fleet.client((await fleet.gateway()).url)
    watched = await open_dashboard(browser, home(gateway))
    page = watched.page
    console = await open_console(watched, "alpha")
    await expect(console).to_contain_text("SIGNALR")  # chatter flows
    before = (await shown(console))[-1][0]

    await gateway.close()
    await expect(page.get_by_role("status").filter(has_text="Reconnecting")).to_be_visible()
    await wait_until(
        lambda: _printed_past(observer, before + MISSED), what=f"{MISSED} lines printed meanwhile"
    )
    restarted = Gateway(await fleet.bus_factory(), host="127.0.0.1", port=gateway.port)
    await restarted.start()
    fleet.gateways.append(restarted)
    await expect(page.get_by_role("status").filter(has_text="Connected")).to_be_visible()

    held = await ring(observer, "alpha")
    last = max(held)
    await page.wait_for_function(
        "n => Number(document.querySelector('[role=log] [data-seq]:last-child')?.dataset.seq) >= n",
        arg=last, timeout=WAIT * 1000,
    )
    lines = await shown(console)
    seqs = [seq for seq, _ in lines]
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "a line is missing, repeated or out of order"
    assert seqs[0] <= before and before + MISSED <= last <= seqs[-1]
    mismatched = [(seq, text, held[seq]) for seq, text in lines if seq in held and held[seq] != text]
    assert mismatched == []
    # while the gateway was down the browser logged its refused connections (the WebSocket,
    # and the page asking /login whether its token was the reason)
    await watched.assert_clean(allow=("WebSocket connection to", "ERR_CONNECTION_REFUSED"))


async def _printed_past(client: Client, seq: int) -> bool:
    return max(await ring(client, "alpha"), default=0) >= seq


async def test_the_console_marks_an_agent_restart_and_shows_the_new_run_from_its_start(browser, fleet):
    """When the agent restarts (a new epoch, seq counting from 1 again), the console keeps
    the old run's lines, says the agent restarted, and shows the new run's lines from its
    first, once each and in order."""
    agent = await fleet.agent("alpha")
    gateway = await fleet.gateway()
    watched = await open_dashboard(browser, home(gateway))
    page = watched.page
    console = await open_console(watched, "alpha")
    await expect(console).to_contain_text("World running...")
    old = await shown(console)

    await agent.close()
    await fleet.agent("alpha")
    await expect(console).to_contain_text("the agent restarted")
    await page.wait_for_function(
        "() => document.querySelector('[role=log] .mark ~ [data-seq]:last-child')?.textContent === 'World running...'"
        " && document.querySelectorAll('[role=log] .mark ~ [data-seq]').length >= 2",
        timeout=WAIT * 1000,
    )
    marks = await console.evaluate("e => [...e.children].filter(c => c.classList.contains('mark')).length")
    assert marks == 1
    lines = await shown(console)
    assert lines[: len(old)] == old
    new = [seq for seq, _ in lines[len(old):]]
    assert new == list(range(1, len(new) + 1))
    assert lines[len(old)][1].startswith("Initializing App")
    await watched.assert_clean()
