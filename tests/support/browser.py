"""Pages in Debian's headless Chromium (Playwright), each watched for what
it did besides what the test looks at."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


class PageProbe:
    """Dialogs (an XSS payload that ran would open one), console errors,
    uncaught page errors."""

    def __init__(self, page):
        self.dialogs: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))

    def _dialog(self, dialog):
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


def open_page(browser, request, base_url):
    """A fresh browser context on base_url (a generator for a fixture); a
    screenshot of the end state is kept under test-artifacts/ whatever the outcome."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=base_url)
    context.set_default_timeout(10000)
    pg = context.new_page()
    pg.probe = PageProbe(pg)
    yield pg
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    try:
        pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    finally:
        context.close()
