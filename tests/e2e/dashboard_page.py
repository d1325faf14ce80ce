"""The dashboard in a real browser, for tests/e2e/test_dashboard*.py.

:func:`open_dashboard` opens the gateway's ``/`` in a fresh chromium context (no cookies)
at a given width and watches the page: every ``securitypolicyviolation`` event (recorded by
a listener installed before any page script runs), every console error and every uncaught
exception. :meth:`Watched.assert_clean` fails the test with what was seen. Tests find
things by role and accessible name, as a person would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .browser import WAIT

#: Roles of controls, each of which must have an accessible name.
CONTROLS = frozenset({"button", "link", "textbox", "searchbox", "combobox", "checkbox", "spinbutton", "tab"})

#: Viewports the tests use: a laptop and a phone held upright.
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Runs in every page before its own scripts: records CSP violations where the test can
# read them, and any dialog (alert/confirm/prompt) a script might open.
_WATCH = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__violations.push({directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample});
});
"""


@dataclass
class Watched:
    page: Any
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    async def violations(self) -> list[dict[str, Any]]:
        return list(await self.page.evaluate("window.__violations"))

    async def assert_clean(self, *, allow: tuple[str, ...] = ()) -> None:
        """No CSP violation, no dialog, and no console error or page exception other than
        those containing one of ``allow``."""
        violations = await self.violations()
        errors = [e for e in self.errors if not any(a in e for a in allow)]
        assert (violations, errors, self.dialogs) == ([], [], []), (violations, errors, self.dialogs)


async def open_dashboard(browser: Any, url: str, *, viewport: dict[str, int] = DESKTOP) -> Watched:
    """A fresh context at ``url`` (the gateway's ``http://127.0.0.1:<port>/``), watched."""
    context = await browser.new_context(viewport=viewport)
    context.set_default_timeout(WAIT * 1000)
    await context.add_init_script(_WATCH)
    page = await context.new_page()
    watched = Watched(page)
    page.on("console", lambda m: watched.errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: watched.errors.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: watched.errors.append(f"request failed: {r.url} {r.failure}"))

    async def dialog(d: Any) -> None:
        watched.dialogs.append(d.message)
        await d.dismiss()

    page.on("dialog", dialog)
    await page.goto(url)
    return watched


async def unnamed_controls(page: Any) -> list[str]:
    """Controls on the page whose accessible name (as chromium computes it, read through
    the DevTools accessibility tree) is empty."""
    session = await page.context.new_cdp_session(page)
    try:
        tree = await session.send("Accessibility.getFullAXTree")
    finally:
        await session.detach()
    unnamed = []
    for node in tree["nodes"]:
        role = (node.get("role") or {}).get("value")
        if node.get("ignored") or role not in CONTROLS:
            continue
        if not str((node.get("name") or {}).get("value") or "").strip():
            unnamed.append(f"{role} (node {node.get('backendDOMNodeId')})")
    return unnamed
