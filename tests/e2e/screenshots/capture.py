#!/usr/bin/env python3
"""Screenshots of the dashboard for the README: not a test.

Starts ``resofleet up --demo`` on a free port (its audit log in a temporary directory),
opens the dashboard it prints in Debian's chromium (``RESOFLEET_CHROMIUM``, default
``/usr/bin/chromium``) at a desktop and a phone width, and writes the fleet, the demo
server and its console into this folder::

    .venv/bin/python tests/e2e/screenshots/capture.py

The PNGs are committed; run this again when the dashboard's look changes.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright, expect

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))

from tests.e2e.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402

#: Seconds to wait for the demo to start and for the page to show what is captured.
WAIT = 30.0
#: Points a sparkline should have before the fleet is captured (one per status sample,
#: every 5 s): a line, not a dot.
SPARK_POINTS = 3
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
DASHBOARD = re.compile(r"^resofleet: dashboard at (http://\S+/)$")


async def start_demo(audit: str) -> tuple[asyncio.subprocess.Process, str]:
    resofleet = Path(sys.executable).with_name("resofleet")
    env = {**os.environ, "RESOFLEET_AUDIT_DIR": audit, "RESOFLEET_LOG_LEVEL": "WARNING"}
    env.pop("RESOFLEET_SECRET", None)
    process = await asyncio.create_subprocess_exec(
        str(resofleet), "up", "--demo", "--port", "0", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    async with asyncio.timeout(WAIT):
        while True:
            line = (await process.stdout.readline()).decode().strip()
            if not line:
                raise SystemExit("capture: resofleet up --demo stopped before printing its dashboard")
            if match := DASHBOARD.match(line):
                return process, match.group(1)


async def capture(url: str) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            for label, viewport in VIEWPORTS.items():
                context = await browser.new_context(viewport=viewport)
                context.set_default_timeout(WAIT * 1000)
                page = await context.new_page()
                await page.goto(url)
                await page.wait_for_function(
                    "n => [...document.querySelectorAll('.spark polyline')].some("
                    "p => p.getAttribute('points').split(' ').length >= n)",
                    arg=SPARK_POINTS, timeout=WAIT * 1000,
                )
                # the agent's first worlds poll has reached the fleet list
                await expect(page.locator("td[data-label=Worlds]").first).not_to_have_text("0")
                await page.screenshot(path=HERE / f"fleet-{label}.png")
                await page.get_by_role("link", name="demo", exact=True).click()
                await expect(page.get_by_role("region", name=re.compile("^World "))).not_to_have_count(0)
                await page.screenshot(path=HERE / f"server-{label}.png")
                await page.get_by_role("button", name="Console", exact=True).click()
                command = page.get_by_role("textbox", name="Command")
                for line in ("worlds", "users"):
                    await command.fill(line)
                    await command.press("Enter")
                    await expect(page.get_by_role("status").filter(has_text=f"{line}: done")).to_be_visible()
                await page.get_by_role("log", name="Console").evaluate("e => { e.scrollTop = e.scrollHeight; }")
                await command.blur()
                await page.evaluate("window.scrollTo(0, 0)")
                await page.screenshot(path=HERE / f"console-{label}.png")
                await context.close()
                print(f"capture: {label} screenshots written to {HERE.relative_to(REPO)}")
        finally:
            await browser.close()


async def main() -> None:
    with tempfile.TemporaryDirectory() as audit:
        process, url = await start_demo(audit)
        try:
            await capture(url)
        finally:
            process.terminate()
            await process.wait()


if __name__ == "__main__":
    asyncio.run(main())
