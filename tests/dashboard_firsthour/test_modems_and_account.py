"""In the browser: the modems page and the Overview show the same problems,
each with what to do (none configured, a faulty modem, a working one), and
the account page changes the password, lists the own keys and signs out
everywhere. The screenshots of the three modem states go to
test-artifacts/dashboard/ (docs/screenshots/ keeps a copy)."""

from __future__ import annotations

import pytest
import requests
from dashboard.support import ARTIFACTS, PASSWORDS, login
from sqlalchemy import create_engine, delete
from sqlalchemy.orm import Session

from smsgw_common.models import Modem

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def engine(database_url):
    eng = create_engine(database_url)
    yield eng
    eng.dispose()


def problems_on(page, route: str) -> list[tuple[str, str]]:
    page.goto(f"/#/{route}")
    box = page.locator(f"main[data-view='{route}'] #problems")
    box.wait_for()
    return [(li.get_attribute("data-code"), li.inner_text()) for li in box.locator("li.problem").all()]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_the_modems_page_shows_each_problem_with_its_fix(page, nginx, alice_api, engine, database_url):
    login(page, "alice", PASSWORDS["alice"])

    # No modem at all: how to add one, on both pages.
    sims_page = problems_on(page, "sims")
    assert [code for code, _ in sims_page] == ["no_modem"]
    assert "make add-modem PORT=" in sims_page[0][1] and "What to do" in sims_page[0][1]
    shot(page, "modems-none.png")
    assert problems_on(page, "overview") == sims_page

    # A modem whose SIM wants a PIN, as the worker reports it.
    with Session(engine) as s:
        s.add(Modem(id="usb-faulty", online=False, last_error="pin_required: SIM PIN required", manufacturer="Quectel"))
        s.commit()
    try:
        sims_page = problems_on(page, "sims")
        assert [code for code, _ in sims_page] == ["pin_required"]
        assert "Modem usb-faulty" in sims_page[0][1] and "MODEM_PIN" in sims_page[0][1]
        assert "asks for a PIN" in page.locator("#modems tbody tr", has_text="usb-faulty").inner_text()
        shot(page, "modems-faulty.png")
        assert problems_on(page, "overview") == sims_page
    finally:
        with Session(engine) as s:
            s.execute(delete(Modem).where(Modem.id == "usb-faulty"))
            s.commit()


def test_a_working_modem_shows_no_problem(page, alice_api, modem):
    login(page, "alice", PASSWORDS["alice"])
    page.goto("/#/sims")
    page.locator("main[data-view] #problems.ok").wait_for()
    assert "No problem" in page.locator("#problems").inner_text()
    page.locator("#modems tbody tr", has_text=modem["modem_id"]).wait_for()
    shot(page, "modems-working.png")
    page.goto("/#/overview")
    page.locator("main[data-view] #problems.ok").wait_for()


def test_the_account_page_changes_the_password_and_signs_out_everywhere(page, nginx, personas):
    def me(key):
        return requests.get(nginx.url + "/api/me", headers={"X-API-Key": key}, timeout=10).status_code

    login(page, "bob", PASSWORDS["bob"])
    # Bob signs in on another device too (which rotates his login key), and
    # keeps a named key for a client.
    signed_in = requests.post(
        nginx.url + "/api/auth", json={"username": "bob", "password": PASSWORDS["bob"]}, timeout=10
    ).json()
    elsewhere = signed_in["api_key"]
    # Made with the session's JWT: a client's key, not derived from a sign-in key
    # (a key made with a sign-in key ends with it, docs/security.md).
    named = requests.post(
        nginx.url + "/api/api-keys",
        json={"name": "billing"},
        headers={"Authorization": f"Bearer {signed_in['token']}"},
        timeout=10,
    ).json()["api_key"]
    assert me(elsewhere) == 200 and me(named) == 200

    page.get_by_role("link", name="Account").click()
    assert page.locator("#account-name").inner_text() == "bob"
    page.locator("#my-keys tbody tr", has_text="billing").wait_for()
    assert page.locator("#my-keys tbody tr", has_text="login").count() == 1

    form = page.locator("#password-form")
    form.get_by_label("Current password").fill("not my password")
    form.get_by_label("New password", exact=True).fill("a brand new long passphrase")
    form.get_by_label("New password again").fill("a brand new long passphrase")
    form.get_by_role("button", name="Change password").click()
    page.locator("#password-form .form-error", has_text="match").wait_for()

    form.get_by_label("Current password").fill(PASSWORDS["bob"])
    form.get_by_label("New password again").fill("something else entirely")
    form.get_by_role("button", name="Change password").click()
    page.locator("#password-form", has_text="Type the same new password twice").wait_for()

    form.get_by_label("New password again").fill("a brand new long passphrase")
    form.get_by_role("button", name="Change password").click()
    page.locator("#toasts", has_text="Password changed").wait_for()
    shot(page, "account.png")
    # The change ended every session, this tab's too, and handed it a new
    # token: the tab goes on with it. Its next request, and its live socket
    # (dropped by the API within a second, then reconnected), stay signed in.
    page.wait_for_timeout(1500)
    page.get_by_role("link", name="Account").click()
    page.locator("#my-keys tbody tr", has_text="billing").wait_for()
    page.locator('#live-state[data-state="online"]').wait_for()
    assert page.locator("#account-name").inner_text() == "bob"

    # A danger button asks for a second click.
    page.locator("#sign-out-everywhere").click()
    page.locator("#sign-out-everywhere").click()
    page.get_by_role("button", name="Sign in").wait_for()
    assert me(elsewhere) == 401  # the other device's sign-in
    other_jwt = requests.get(
        nginx.url + "/api/me", headers={"Authorization": f"Bearer {signed_in['token']}"}, timeout=10
    ).status_code
    assert other_jwt == 401  # and its session token
    assert me(named) == 200  # a client's key is not a sign-in
    old = requests.post(nginx.url + "/api/auth", json={"username": "bob", "password": PASSWORDS["bob"]}, timeout=10)
    assert old.status_code == 401
    new = requests.post(
        nginx.url + "/api/auth", json={"username": "bob", "password": "a brand new long passphrase"}, timeout=10
    )
    assert new.status_code == 200
