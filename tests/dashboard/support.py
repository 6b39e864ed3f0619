"""Shared by the dashboard tests and their fixtures."""
from __future__ import annotations

import secrets
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
MODEM_ID = "emu-dash"
SIM_NUMBER = "+15550001111"

# Alice is the admin, Bob a user who sends, Vera a viewer.
PASSWORDS = {
    "alice": "alice-" + secrets.token_urlsafe(12),
    "bob": "bob-" + secrets.token_urlsafe(12),
    "vera": "vera-" + secrets.token_urlsafe(12),
}


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except AssertionError:
            raise
        except Exception as exc:  # still starting
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def login(page, username: str, password: str):
    """Sign in through the form and wait until the live link is up."""
    page.goto("/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#who-name").wait_for()
    page.wait_for_selector("#live-state[data-state='online']", timeout=15000)
