"""Shared by the dashboard tests and their fixtures."""

from __future__ import annotations

import secrets

from support.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ROOT
from support.waits import wait_until

__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "MODEM_ID",
    "PASSWORDS",
    "ROOT",
    "SIM_NUMBER",
    "login",
    "wait_for",
]

MODEM_ID = "emu-dash"
SIM_NUMBER = "+15550001111"

# Alice is the admin, Bob a user who sends, Vera a viewer.
PASSWORDS = {
    "alice": "alice-" + secrets.token_urlsafe(12),
    "bob": "bob-" + secrets.token_urlsafe(12),
    "vera": "vera-" + secrets.token_urlsafe(12),
}


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """support.waits.wait_until, where a page or an API still loading (any
    exception but a failed assertion) means "not yet"."""
    return wait_until(predicate, timeout, interval, what, ignore=(Exception,))


def login(page, username: str, password: str):
    """Sign in through the form and wait until the live link is up."""
    page.goto("/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#who-name").wait_for()
    page.wait_for_selector("#live-state[data-state='online']", timeout=15000)
