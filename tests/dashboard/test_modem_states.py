"""What the modems page shows of real-modem trouble: received PDUs nothing
could decode (kept raw), registration, and USSD menus answered in session."""

from __future__ import annotations

import pytest

from .support import PASSWORDS, SIM_NUMBER, login

pytestmark = pytest.mark.browser

# SMS-DELIVER with DCS 20 (compressed): kept raw by the worker, not decoded.
COMPRESSED = "0004" + "0B915155001011F1" + "00" + "20" + "62115291505500" + "05E8329BFD06"


def test_an_admin_sees_an_undecodable_pdu_and_the_modems_registration(page, personas, modem):
    modem["emulator"].inject_pdu(COMPRESSED)
    login(page, "alice", PASSWORDS["alice"])
    page.goto("/#/sims")
    page.locator("#modems tbody tr", has_text=modem["modem_id"]).locator(".badge-home").wait_for()
    # The list is read when the page loads: reload until the worker has stored it.
    for _ in range(20):
        row = page.locator("#raw-pdus tbody tr", has_text=COMPRESSED)
        if row.count():
            break
        page.wait_for_timeout(500)
        page.reload()
    assert "compressed" in row.inner_text() and "undecodable" in row.inner_text()


def test_a_viewer_does_not_see_raw_pdus(page, personas):
    login(page, "vera", PASSWORDS["vera"])
    page.goto("/#/sims")
    page.locator("#modems").wait_for(state="attached")
    assert page.locator("#raw-pdus").count() == 0


def test_a_ussd_menu_is_answered_in_its_session_from_the_browser(page, personas, modem):
    login(page, "alice", PASSWORDS["alice"])
    page.goto("/#/sims")
    page.locator("#sims tbody tr", has_text=SIM_NUMBER).get_by_role("button", name="Balance").click()
    form = page.locator("#sim-editor form")
    form.get_by_label("USSD code").fill("*101#")
    form.get_by_role("button", name="Send USSD").click()
    form.locator(".secret", has_text="1 Balance 2 Bundles").wait_for(timeout=20000)
    form.get_by_text("The network waits for your choice").wait_for()
    form.get_by_label("USSD code").fill("1")
    form.get_by_role("button", name="Send USSD").click()
    form.locator(".secret", has_text="Your balance is 12.34 EUR").wait_for(timeout=20000)
    assert form.get_by_role("button", name="End session").is_hidden()
