"""The dashboard in a real browser (Debian's chromium), against real gateways, agents and
emulated consoles, over LocalBus and over RabbitMQ: signing in and out, the fleet list,
a server's worlds and users, moderation by role, and a hostile headless whose names hold
HTML, script and rich-text tags. Every test ends with no CSP violation, no console error
and no dialog (tests/e2e/dashboard_page.py watches for them).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from resofleet.agent.settings import AgentSettings
from resofleet.contracts import Role
from resofleet.gateway.security import Security
from resofleet.gateway.tokens import Keyring, new_secret

from .browser import WAIT, browser  # noqa: F401 (fixture)
from .conftest import emulated
from .test_commands import START_TIMEOUT, clean_env, running
from .dashboard_page import PHONE, Watched, open_dashboard, unnamed_controls

pytestmark = pytest.mark.browser
expect.set_options(timeout=WAIT * 1000)

#: The cookie /login sets.
COOKIE = "resofleet_token"
#: Seconds between an agent's status samples where the fleet's sparklines are watched
#: (5 s by default): a status_update each second at least (the uptime changes).
STATUS_INTERVAL = 0.25
#: Seconds a token lives in the expiry test: long enough to sign in on a loaded machine.
SHORT_TTL = 4
HOSTILE = Path(__file__).resolve().parents[1] / "support" / "scenarios" / "hostile.toml"


def home(gateway: Any) -> str:
    return f"http://127.0.0.1:{gateway.port}/"


async def sign_in(watched: Watched, token: str) -> None:
    page = watched.page
    try:
        await expect(page.get_by_role("textbox", name="Token")).to_be_visible()
    except AssertionError as exc:
        raise AssertionError(f"no sign-in form; the page saw: {watched.errors}") from exc
    await page.get_by_role("textbox", name="Token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def open_server(watched: Watched, server: str) -> None:
    await watched.page.get_by_role("link", name=server, exact=True).click()
    await expect(watched.page.get_by_role("heading", name=re.compile(f"^{server}"))).to_be_visible()


async def test_sign_in_keeps_the_token_from_scripts_and_sign_out_forgets_it(browser, fleet):
    """With a secret, / shows the sign-in form; a refused token says why; a good one signs
    in through an HttpOnly cookie that no script can read (nor any storage), sent in no
    address (proxies log addresses), survives a reload, and Sign out forgets it."""
    keyring = Keyring((new_secret(),))
    await fleet.agent("alpha")
    gateway = await fleet.gateway(security=Security(keyring=keyring))
    token = keyring.issue(role=Role.VIEWER, sub="alice", ttl=600)
    watched = await open_dashboard(browser, home(gateway))
    page = watched.page

    forged = Keyring((new_secret(),)).issue(role=Role.ADMIN, sub="mallory", ttl=600)
    await page.get_by_role("textbox", name="Token").fill(forged)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("Sign-in refused")
    await expect(page.get_by_role("link", name="alpha")).to_have_count(0)

    addresses: list[str] = []  # what an access log on the way records of each request
    page.on("request", lambda request: addresses.append(request.url))
    await sign_in(watched, token)
    await expect(page.get_by_role("link", name="alpha", exact=True)).to_be_visible()
    await expect(page.get_by_text("alice (viewer)")).to_be_visible()
    assert any("/login" in address for address in addresses)
    assert not [address for address in addresses if token in address]
    [cookie] = [c for c in await page.context.cookies() if c["name"] == COOKIE]
    assert (cookie["value"], cookie["httpOnly"], cookie["sameSite"]) == (token, True, "Strict")
    readable = await page.evaluate(
        "JSON.stringify([document.cookie, {...localStorage}, {...sessionStorage},"
        " document.documentElement.outerHTML])"
    )
    assert token not in readable

    await page.reload()
    await expect(page.get_by_role("link", name="alpha", exact=True)).to_be_visible()

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("textbox", name="Token")).to_be_visible()
    assert [c for c in await page.context.cookies() if c["name"] == COOKIE] == []
    await page.reload()
    await expect(page.get_by_role("textbox", name="Token")).to_be_visible()
    await watched.assert_clean(allow=("status of 401",))  # the forged token's answer


async def test_open_mode_loads_straight_in_and_the_fleet_follows_a_server_going_and_back(browser, fleet):
    """Without a secret the fleet shows at once, CPU and memory drawn live from
    status_update; a server whose agent stops turns offline, and running again when an
    agent serves it again; the filters narrow the list."""
    await fleet.agent("alpha", settings=AgentSettings(name="host-a", status_interval=STATUS_INTERVAL))
    beta = await fleet.agent("beta")
    gateway = await fleet.gateway()
    watched = await open_dashboard(browser, home(gateway))
    page = watched.page
    await expect(page.get_by_role("textbox", name="Token")).to_have_count(0)
    row = page.get_by_role("row", name=re.compile(r"^beta\b"))
    await expect(row).to_contain_text("running")
    await expect(row).to_contain_text("%")  # CPU and memory from status_update
    sparkline = page.get_by_role("img", name="Memory of alpha")
    await expect(sparkline.locator("polyline")).to_have_attribute("points", re.compile(r"^\S+( \S+){2,}$"))

    await beta.close()
    await expect(row).to_contain_text("offline")
    await expect(page.get_by_role("row", name=re.compile(r"^alpha\b"))).to_contain_text("running")
    await fleet.agent("beta")
    await expect(row).to_contain_text("running")

    await page.get_by_role("searchbox", name="Filter").fill("alp")
    await expect(page.get_by_role("link", name="beta")).to_have_count(0)
    await expect(page.get_by_role("link", name="alpha", exact=True)).to_be_visible()
    await page.get_by_role("searchbox", name="Filter").fill("")
    await page.get_by_role("combobox", name="State").select_option("offline")
    await expect(page.get_by_role("link", name="alpha", exact=True)).to_have_count(0)
    await watched.assert_clean()


async def test_the_server_page_shows_worlds_and_users_as_the_scenario_defines_them(browser, fleet):
    """The default scenario's two worlds with their settings, and each user as one row
    with role, presence and ping; at phone width nothing spills sideways."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    watched = await open_dashboard(browser, home(gateway), viewport=PHONE)
    page = watched.page
    await open_server(watched, "alpha")
    harbor = page.get_by_role("region", name="World Harbor Lounge")
    await expect(harbor).to_contain_text("A quiet place by the water")
    await expect(harbor).to_contain_text("chill, music, harbor")
    mira = harbor.get_by_role("row", name=re.compile(r"^Mira\b"))
    await expect(mira).to_contain_text("Builder")
    await expect(mira).to_contain_text("42 ms")
    await expect(harbor.get_by_role("row", name=re.compile(r"^Tobias\b"))).to_contain_text("Guest")
    night = page.get_by_role("region", name="World Night Market")
    await expect(night).to_contain_text("Private, hidden")
    await expect(night).to_contain_text("max 4")
    # open mode is admin: every control is offered
    for name in ("Kick", "Ban", "Silence", "Respawn", "Save", "Close", "Restart", "Stop"):
        await expect(page.get_by_role("button", name=name, exact=True).first).to_be_visible()
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a phone"
    await watched.assert_clean()


async def test_a_moderator_kicks_and_a_viewer_is_offered_no_kick(browser, fleet):
    """A moderator's Kick asks first, then the user's row goes and the console's answer is
    shown; a viewer sees the same users with no moderation control at all."""
    keyring = Keyring((new_secret(),))
    await fleet.agent("alpha")
    gateway = await fleet.gateway(security=Security(keyring=keyring))
    moderator = await open_dashboard(browser, home(gateway))
    await sign_in(moderator, keyring.issue(role=Role.MODERATOR, sub="mo", ttl=600))
    await open_server(moderator, "alpha")
    page = moderator.page
    harbor = page.get_by_role("region", name="World Harbor Lounge")
    tobias = harbor.get_by_role("row", name=re.compile(r"^Tobias\b"))
    await tobias.get_by_role("button", name="Kick").click()
    confirm = page.get_by_role("alertdialog")
    await expect(confirm).to_contain_text("Kick Tobias")
    await confirm.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_role("status").filter(has_text="kick Tobias")).to_contain_text("Tobias kicked!")
    await expect(tobias).to_have_count(0)
    await expect(harbor.get_by_role("row", name=re.compile(r"^Mira\b"))).to_be_visible()
    # below operator: no world actions, no container actions
    for name in ("Save", "Close", "Stop"):
        await expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)

    viewer = await open_dashboard(browser, home(gateway))
    await sign_in(viewer, keyring.issue(role=Role.VIEWER, sub="vi", ttl=600))
    await open_server(viewer, "alpha")
    vpage = viewer.page
    await expect(vpage.get_by_role("region", name="World Harbor Lounge")
                 .get_by_role("row", name=re.compile(r"^Mira\b"))).to_be_visible()
    for name in ("Kick", "Ban", "Silence", "Respawn", "Role", "Save", "Stop"):
        await expect(vpage.get_by_role("button", name=name, exact=True)).to_have_count(0)
    # typed by hand, the gateway refuses it, and the page says why
    await vpage.get_by_role("button", name="Console", exact=True).click()
    await vpage.get_by_role("textbox", name="Command").fill("kick Mira")
    await vpage.get_by_role("textbox", name="Command").press("Enter")
    await expect(vpage.get_by_role("status").filter(has_text="kick Mira:")).to_contain_text("moderator")
    await moderator.assert_clean()
    await viewer.assert_clean()


async def test_a_hostile_headless_is_shown_as_text_and_runs_nothing(browser, fleet):
    """World names, descriptions, tags, user names, bans and friend requests holding HTML,
    script and rich-text tags: the HTML appears as its characters, the rich text as styled
    text without its tags, and no element, script or dialog comes of any of it."""
    await fleet.agent(emulated("evil", scenario=str(HOSTILE)))
    gateway = await fleet.gateway()
    watched = await open_dashboard(browser, home(gateway))
    page = watched.page
    await open_server(watched, "evil")
    world = page.get_by_role("region", name="World <img src=x onerror=alert(1)>")
    await expect(world.get_by_role("heading", name="<img src=x onerror=alert(1)>")).to_be_visible()
    await expect(world).to_contain_text("<script>window.__pwned=1</script>bold and red")
    await expect(world).to_contain_text("<iframe src=javascript:alert(1)>, under")
    rich = world.get_by_role("row", name=re.compile(r"^BoldRed\b"))
    await expect(rich).to_be_visible()
    red = rich.get_by_text("Red", exact=True)
    assert await red.evaluate("e => getComputedStyle(e).color") == "rgb(255, 0, 0)"
    assert await rich.get_by_text("Bold", exact=True).evaluate("e => getComputedStyle(e).fontWeight") == "700"
    await expect(world.get_by_role("row", name=re.compile(r"^<svg onload=window.__pwned=1>"))).to_be_visible()

    await page.get_by_role("button", name="Bans").click()
    await expect(page.get_by_role("row", name=re.compile("click"))).to_contain_text(
        "<a href=javascript:window.__pwned=1>click</a>"
    )
    await page.get_by_role("button", name="Friend requests").click()
    await expect(page.get_by_role("listitem")).to_contain_text("<img src=x onerror=window.__pwned=1>")
    await page.get_by_role("button", name="Console").click()
    await expect(page.get_by_role("log", name="Console")).to_contain_text("World running...")

    injected = await page.evaluate(
        "document.querySelectorAll('#root img, #root script, #root iframe, #root svg, "
        "#root a[href^=\"javascript\"]').length"
    )
    assert injected == 0
    assert await page.evaluate("window.__pwned") is None
    await watched.assert_clean()


async def test_an_admin_changes_settings_manages_worlds_bans_friends_and_the_container(browser, fleet):
    """World settings through the console's commands, Save, Close after confirming (and
    not after Cancel), a world started from a template, an unban, a friend request
    accepted and the headless restarted: each shows its answer and the page follows; every
    control on the way has an accessible name."""
    await fleet.agent("alpha")
    gateway = await fleet.gateway()
    watched = await open_dashboard(browser, home(gateway))
    page = watched.page
    await open_server(watched, "alpha")
    answer = page.locator(".answer")

    harbor = page.get_by_role("region", name="World Harbor Lounge")
    await harbor.get_by_text("World settings").click()
    settings = harbor.get_by_role("form", name="Settings of Harbor Lounge")
    await settings.get_by_role("spinbutton", name="Max users").fill("20")
    await settings.get_by_role("combobox", name="Access level").select_option("Contacts")
    await settings.get_by_role("checkbox", name="Hidden").check()
    await settings.get_by_role("button", name="Apply settings").click()
    await expect(answer).to_contain_text("World Harbor Lounge will now be hidden from listing")
    await expect(harbor).to_contain_text("max 20")
    await expect(harbor).to_contain_text("Contacts, hidden")
    assert await unnamed_controls(page) == []

    await harbor.get_by_role("button", name="Save", exact=True).click()
    await expect(answer).to_have_text("save: done")

    night = page.get_by_role("region", name="World Night Market")
    await night.get_by_role("button", name="Close", exact=True).click()
    await page.get_by_role("alertdialog").get_by_role("button", name="Cancel").click()
    await expect(page.get_by_role("alertdialog")).to_have_count(0)
    await night.get_by_role("button", name="Close", exact=True).click()
    await expect(page.get_by_role("alertdialog").get_by_role("button", name="Confirm")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("alertdialog")).to_have_count(0)
    await expect(night).to_be_visible()
    await night.get_by_role("button", name="Close", exact=True).click()
    await page.get_by_role("alertdialog").get_by_role("button", name="Confirm").click()
    await expect(night).to_have_count(0)

    await page.get_by_role("combobox", name="Template").select_option("SpaceWorld")
    await page.get_by_role("button", name="Start template").click()
    await expect(page.get_by_role("region", name=re.compile("^World "))).to_have_count(2)

    await page.get_by_role("button", name="Bans").click()
    spam = page.get_by_role("row", name=re.compile(r"^SpamBot\b"))
    await spam.get_by_role("button", name="Unban").click()
    await expect(answer).to_contain_text("Removed 1 matching bans")
    await expect(page.get_by_text("No bans.")).to_be_visible()

    await page.get_by_role("button", name="Friend requests").click()
    nadia = page.get_by_role("listitem").filter(has_text="Nadia")
    await nadia.get_by_role("button", name="Accept").click()
    await expect(answer).to_contain_text("Request accepted!")
    await expect(page.get_by_text("No friend requests.")).to_be_visible()
    assert await unnamed_controls(page) == []

    await page.get_by_role("group", name="Container").get_by_role("button", name="Restart").click()
    confirm = page.get_by_role("alertdialog")
    await expect(confirm).to_contain_text("Restart the headless alpha?")
    await confirm.get_by_role("button", name="Confirm").click()
    await expect(answer).to_contain_text("container restart: running")
    await watched.assert_clean()


async def test_resofleet_up_prints_the_dashboard_address_and_it_opens(browser, tmp_path):
    """`make demo`'s `resofleet up --demo` prints where the dashboard is, after the
    listening line; that address opens it, with the demo server running."""
    async with running("up", "--demo", "--port", "0", cwd=tmp_path, env=clean_env()) as up:
        assert up.process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            line = (await up.process.stdout.readline()).decode().strip()
        assert line == f"resofleet: dashboard at http://127.0.0.1:{up.port}/"
        watched = await open_dashboard(browser, line.rsplit(" ", 1)[1])
        await expect(watched.page.get_by_role("row", name=re.compile(r"^demo\b"))).to_contain_text("running")
        await watched.assert_clean()


async def test_a_session_whose_token_expires_returns_to_the_sign_in_form(browser, fleet):
    """When the gateway ends the session (the token expired: close 4401), the page goes
    back to the sign-in form and says why, rather than reconnecting in vain."""
    keyring = Keyring((new_secret(),))
    await fleet.agent("alpha")
    gateway = await fleet.gateway(security=Security(keyring=keyring))
    watched = await open_dashboard(browser, home(gateway))
    await sign_in(watched, keyring.issue(role=Role.VIEWER, sub="brief", ttl=SHORT_TTL))
    page = watched.page
    await expect(page.get_by_role("link", name="alpha", exact=True)).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text("sign in again", timeout=(SHORT_TTL + WAIT) * 1000)
    await expect(page.get_by_role("textbox", name="Token")).to_be_visible()
    await watched.assert_clean()
