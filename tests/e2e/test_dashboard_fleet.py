"""The dashboard's fleet operations in a real browser (Debian's chromium), against real
gateways, agents and emulated consoles, over LocalBus and RabbitMQ: one command for the
servers the fleet's filters show (a bulk ``command``: each server's answer and the
``bulk_done`` summary; a viewer's refusals server by server), and on a server's page the
``schedule_run`` events and ``status_update``'s recovery fields (restarts, last exit code,
console health). Every test ends with no CSP violation, no console error and no dialog.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from resofleet.agent.schedules import ScheduleConfig
from resofleet.agent.settings import AgentSettings, ServerConfig
from resofleet.bus import RequestTimeout
from resofleet.contracts import BusRequest, Error, Role, RunCommand
from resofleet.gateway.routing import QUERY_TIMEOUT
from resofleet.gateway.security import Security
from resofleet.gateway.tokens import Keyring, new_secret
from tests.support.clock import ManualClock

from .browser import WAIT, browser  # noqa: F401 (fixture)
from .conftest import emulated
from .dashboard_page import PHONE, Watched, open_dashboard, unnamed_controls
from .test_dashboard import home, open_server, sign_in

pytestmark = pytest.mark.browser
expect.set_options(timeout=WAIT * 1000)

#: A slot of an ``every = "1h"`` schedule (a whole hour, UTC), on a clock the test holds.
SLOT = datetime(2026, 11, 30, 4, tzinfo=timezone.utc).timestamp()
#: The emulator's ``crash`` exits like an unhandled .NET exception (SIGABRT): 128 + 6.
CRASH_CODE = 134
SCENARIOS = Path(__file__).resolve().parents[1] / "support" / "scenarios"
WEDGE = str(SCENARIOS / "wedge.toml")
#: HTML, script and rich-text tags in every name the console prints.
HOSTILE = SCENARIOS / "hostile.toml"
#: Status every quarter second and a health check that decides within about a second, so
#: the page sees a restart and a hung console quickly.
QUICK = AgentSettings(name="host-a", status_interval=0.25, health_interval=0.2,
                      health_timeout=0.5, health_misses=2)


async def hang(bus: Any, server: str) -> None:
    """Make ``server``'s console stop answering for good (the wedge scenario's quirk), by a
    request with a short deadline: a client's long command would hold the console, and a
    console busy with a command is not judged (README, *Crash recovery*)."""
    try:
        reply = await bus.request(BusRequest(
            server=server, body=RunCommand(command="startWorldURL not-a-record"), timeout=1.0))
    except RequestTimeout:  # the requester's own clock ran out first
        return
    assert isinstance(reply.body, Error) and reply.body.code == "timeout", reply


def bulk_section(watched: Watched) -> Any:
    return watched.page.get_by_role("region", name="Command for the servers shown")


async def run_for_shown(watched: Watched, command: str) -> None:
    section = bulk_section(watched)
    await section.get_by_role("textbox", name="Command for these servers").fill(command)
    await section.get_by_role("button", name="Run on these servers").click()


def answer_row(watched: Watched, server: str) -> Any:
    answers = watched.page.get_by_role("table", name=re.compile("^Answers to "))
    return answers.get_by_role("row", name=re.compile(rf"^{re.escape(server)}\b"))


async def test_a_bulk_save_reaches_the_filtered_servers_and_shows_each_answer(browser, fleet):
    """The filter narrows the fleet to eu-*, one of them offline; the bulk command names
    those servers before it runs; a read-only `status` runs at once with each server's own
    answer; `save` asks first (Cancel sends nothing), then each server's answer and the
    summary are shown (the offline one's refusal among them), and the server the filter
    hides gets nothing."""
    await fleet.agent("eu-1", "eu-2", "lab")
    gone = await fleet.agent("eu-3")
    gateway = await fleet.gateway()
    watched = await open_dashboard(browser, home(gateway))
    page = watched.page
    section = bulk_section(watched)
    await expect(section).to_contain_text("Reaches the 4 servers the filters show: eu-1, eu-2, eu-3, lab.")
    await gone.close()
    await expect(page.get_by_role("row", name=re.compile(r"^eu-3\b"))).to_contain_text("offline")
    await page.get_by_role("searchbox", name="Filter").fill("eu-")
    await expect(section).to_contain_text("Reaches the 3 servers the filters show: eu-1, eu-2, eu-3.")
    box = section.get_by_role("textbox", name="Command for these servers")
    await expect(box).to_have_accessible_description(re.compile("eu-1, eu-2, eu-3"))

    await run_for_shown(watched, "status")
    await expect(section.get_by_role("status")).to_have_text("status: 2 ok; server_offline: eu-3")
    for server in ("eu-1", "eu-2"):
        await expect(answer_row(watched, server)).to_contain_text("Name: ")
    await expect(answer_row(watched, "lab")).to_have_count(0)
    await expect(page.get_by_role("alertdialog")).to_have_count(0)  # read-only: not asked

    await run_for_shown(watched, "save")
    confirm = page.get_by_role("alertdialog")
    await expect(confirm).to_contain_text('Run "save" on 3 servers (eu-1, eu-2, eu-3)?')
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(section.get_by_role("table", name="Answers to status")).to_be_visible()
    await section.get_by_role("button", name="Run on these servers").click()
    await page.get_by_role("alertdialog").get_by_role("button", name="Confirm").click()
    await expect(section.get_by_role("status")).to_have_text("save: 2 ok; server_offline: eu-3")
    answers = section.get_by_role("table", name="Answers to save")
    await expect(answers.get_by_role("row")).to_have_count(4)  # the header and three servers
    for server in ("eu-1", "eu-2"):
        await expect(answer_row(watched, server)).to_contain_text(re.compile(r"ok\s*\(done, no output\)"))
    await expect(answer_row(watched, "eu-3")).to_contain_text(re.compile(r"server_offline\s*Server 'eu-3' is offline"))
    assert await unnamed_controls(page) == []
    await watched.assert_clean()


async def test_a_scoped_viewer_sees_each_server_refuse_what_it_may_not_run(browser, fleet):
    """A viewer whose token covers eu-* sees only those servers; its bulk `worlds` answers
    from each, its bulk `save` (after confirming) is refused by each server with the
    gateway's reason, and the summary names them; at phone width nothing spills sideways."""
    keyring = Keyring((new_secret(),))
    await fleet.agent("eu-1", "eu-2", "lab")
    gateway = await fleet.gateway(security=Security(keyring=keyring))
    watched = await open_dashboard(browser, home(gateway), viewport=PHONE)
    await sign_in(watched, keyring.issue(role=Role.VIEWER, sub="vic", servers=["eu-*"], ttl=600))
    page = watched.page
    section = bulk_section(watched)
    await expect(section).to_contain_text("Reaches the 2 servers the filters show: eu-1, eu-2.")
    await expect(page.get_by_role("link", name="lab", exact=True)).to_have_count(0)

    await run_for_shown(watched, "worlds")
    await expect(section.get_by_role("status")).to_have_text("worlds: 2 ok")
    await expect(answer_row(watched, "eu-1")).to_contain_text("Harbor Lounge")

    await run_for_shown(watched, "save")
    await page.get_by_role("alertdialog").get_by_role("button", name="Confirm").click()
    await expect(section.get_by_role("status")).to_have_text("save: forbidden: eu-1, eu-2")
    for server in ("eu-1", "eu-2"):
        row = answer_row(watched, server)
        await expect(row).to_contain_text("forbidden")
        await expect(row).to_contain_text("operator")  # the gateway's sentence: who may
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a phone"
    await watched.assert_clean()


async def test_schedule_runs_appear_on_the_server_page(browser, fleet):
    """At the slot, each schedule's run appears on its server's page: its time, schedule,
    action, outcome and detail, newest first; a detail quoting a hostile console's HTML
    is shown as its characters."""
    clock = ManualClock(SLOT - 5)
    schedules = [
        ScheduleConfig(name="hourly-save", servers=("eu-*",), every="1h", action="save"),
        ScheduleConfig(name="hourly-status", servers=("eu-1",), every="1h", action="command",
                       command="status"),
        ScheduleConfig(name="hourly-worlds", servers=("evil",), every="1h", action="command",
                       command="worlds"),
    ]
    await fleet.agent(emulated("eu-1"), emulated("evil", scenario=str(HOSTILE)),
                      schedules=schedules, clock=clock)
    gateway = await fleet.gateway()
    watched = await open_dashboard(browser, home(gateway))
    page = watched.page
    await expect(page.get_by_role("link", name="evil", exact=True)).to_be_visible()
    await open_server(watched, "eu-1")
    await expect(page.get_by_role("region", name="World Harbor Lounge")).to_be_visible()
    runs = page.get_by_role("table", name="Schedule runs")
    await expect(runs).to_have_count(0)  # nothing ran yet
    await clock.asleep()

    clock.set(SLOT)
    rows = runs.get_by_role("row")
    await expect(rows).to_have_count(3)  # the header and eu-1's two runs
    await expect(rows.nth(1)).to_contain_text(re.compile(
        r"2026-11-30 04:00:00Z\s*hourly-status\s*command\s*ok\s*Name: "))
    await expect(rows.nth(2)).to_contain_text(re.compile(
        r"2026-11-30 04:00:00Z\s*hourly-save\s*save\s*ok\s*saved 2 worlds"))

    await page.get_by_role("link", name="All servers").click()
    await open_server(watched, "evil")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(1)).to_contain_text(re.compile(
        r"hourly-worlds\s*command\s*ok\s*.*<img src=x onerror=alert\(1\)>"))
    assert await runs.locator("img, script, iframe, svg").count() == 0
    await watched.assert_clean()


async def test_a_crash_and_a_hung_console_show_on_the_server_page(browser, fleet):
    """Under restart = "always", a `crash` typed in the console brings the headless back:
    the page shows one restart and the last exit code, 134. A console that stops answering
    (its agent's probes miss) is flagged unhealthy, in the danger colour, on its page and in the fleet list."""
    await fleet.agent(
        ServerConfig(id="crashy", runtime="emulator", emulator_args=("--startup-delay", "0"),
                     restart="always", restart_backoff=0.1),
        ServerConfig(id="wedged", runtime="emulator", scenario=WEDGE),
        settings=QUICK,
    )
    gateway = await fleet.gateway()
    watched = await open_dashboard(browser, home(gateway))
    page = watched.page
    await open_server(watched, "crashy")
    facts = page.locator("dl[aria-label=Recovery]")
    await expect(facts).to_contain_text(re.compile(r"Console\s*healthy"))
    await expect(facts).to_contain_text(re.compile(r"Restarts\s*0"))
    await expect(facts).not_to_contain_text("Last exit code")  # none before the first exit
    await page.get_by_role("button", name="Console", exact=True).click()
    await page.get_by_role("textbox", name="Command").fill("crash")
    await page.get_by_role("textbox", name="Command").press("Enter")
    await expect(facts).to_contain_text(re.compile(r"Restarts\s*1"))
    await expect(facts).to_contain_text(re.compile(rf"Last exit code\s*{CRASH_CODE}"))
    await expect(page.get_by_role("heading", name=re.compile("^crashy"))).to_contain_text("running")

    await page.get_by_role("link", name="All servers").click()
    await open_server(watched, "wedged")
    facts = page.locator("dl[aria-label=Recovery]")
    await expect(facts).to_contain_text(re.compile(r"Console\s*healthy"))
    await hang(await fleet.bus_factory(), "wedged")
    flag = facts.get_by_text("unhealthy", exact=True)
    # The page's own get_worlds, sent as it opened, may hold the hung console for its whole
    # deadline (QUERY_TIMEOUT, 15 s); probes meanwhile find it busy, which counts as
    # neither an answer nor a miss (README, *Crash recovery*): allow for that wait.
    await expect(flag).to_be_visible(timeout=(QUERY_TIMEOUT + 10) * 1000)
    await expect(facts).to_contain_text("it stopped answering")
    assert await flag.evaluate("e => getComputedStyle(e).color") == "rgb(255, 122, 122)"  # --bad
    await page.get_by_role("link", name="All servers").click()
    await expect(page.get_by_role("row", name=re.compile(r"^wedged\b"))).to_contain_text("unhealthy")
    await expect(page.get_by_role("row", name=re.compile(r"^crashy\b"))).not_to_contain_text("unhealthy")
    await watched.assert_clean()
