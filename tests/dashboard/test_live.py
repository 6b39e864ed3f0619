"""Live behaviour: what an operator sees change without reloading."""

from __future__ import annotations

import pytest

from .support import ARTIFACTS, PASSWORDS, SIM_NUMBER, login, wait_for

pytestmark = pytest.mark.browser


def test_it_logs_in_and_shows_the_modem_card_live(page, personas, modem):
    login(page, "alice", PASSWORDS["alice"])
    card = page.locator(f"[data-modem='{modem['modem_id']}']")
    card.wait_for()
    card.locator(".badge-online").wait_for()
    assert SIM_NUMBER in card.inner_text()
    assert card.locator("svg.bars rect.on").count() >= 1
    assert page.locator("#who-role").inner_text() == "admin"
    assert page.probe.page_errors == []


def test_it_sends_an_sms_and_watches_it_turn_delivered_without_reloading(page, personas, modem):
    login(page, "bob", PASSWORDS["bob"])
    page.get_by_role("link", name="Send").click()
    page.get_by_label("Recipient (international format)").fill("+15557654321")
    page.get_by_label("Message").fill("Hello from the dashboard {tests}")
    # The counter mirrors the server: braces are GSM-7 extension characters.
    assert page.locator("#count-encoding").inner_text() == "GSM-7"
    assert page.locator("#count-chars").inner_text() == "32"
    assert page.locator("#count-remaining").inner_text() == str(160 - 34)
    page.get_by_role("button", name="Send SMS").click()
    page.locator("#sent-link").click()
    status = page.locator("#detail-status")
    status.wait_for()
    navigations = []
    page.on("framenavigated", lambda f: navigations.append(f.url))
    page.locator("#detail-status .badge-delivered").wait_for(timeout=30000)
    assert not any("#/messages/detail" not in u for u in navigations)
    timeline = page.locator("#timeline").inner_text()
    for state in ("queued", "sending", "sent", "delivered"):
        assert state in timeline
    page.screenshot(path=str(ARTIFACTS / "message_detail_delivered.png"), full_page=True)
    page.goto("/#/messages/outbox")
    row = page.locator("#messages-table tbody tr").first
    row.wait_for()
    assert "Hello from the dashboard {tests}" in row.inner_text()
    assert row.locator(".badge-delivered").count() == 1


def test_it_shows_an_outbox_row_change_state_live(page, personas, modem, alice_api):
    login(page, "alice", PASSWORDS["alice"])
    page.goto("/#/messages/outbox")
    page.locator("#messages-table table").wait_for()
    r = alice_api.post("/api/sms", json={"recipient": "+15557654322", "message": "row update"})
    assert r.status_code == 200, r.text
    mid = r.json()["message_id"]
    row = page.locator(f"#messages-table tr[data-id='{mid}']")
    row.locator(".badge-delivered").wait_for(timeout=30000)


def test_it_shows_an_inbound_sms_live_in_the_inbox_and_the_conversation(page, personas, modem):
    login(page, "vera", PASSWORDS["vera"])
    page.goto("/#/messages/inbox")
    page.locator("#messages-table table").wait_for()
    modem["emulator"].inject_sms("+15559990001", "Is the parcel on its way?")
    row = page.locator("#messages-table tbody tr", has_text="Is the parcel on its way?")
    row.wait_for(timeout=20000)
    assert "+15559990001" in row.inner_text()
    page.goto("/#/messages/conversations/%2B15559990001")
    page.locator("#thread .bubble.in", has_text="Is the parcel on its way?").wait_for()
    modem["emulator"].inject_sms("+15559990001", "Thanks, got it")
    page.locator("#thread .bubble.in", has_text="Thanks, got it").wait_for(timeout=20000)


def test_it_counts_todays_traffic_on_the_overview_live(page, personas, modem, alice_api):
    login(page, "alice", PASSWORDS["alice"])
    received = page.locator("#count-received")
    wait_for(lambda: received.inner_text() not in ("–", ""), 10, what="the counters to load")
    before = int(received.inner_text())
    modem["emulator"].inject_sms("+15559990002", "counter check")
    wait_for(lambda: int(received.inner_text()) == before + 1, 20, 0.2, "the received counter to go up")
    page.locator("#feed li", has_text="counter check").wait_for()
    assert page.locator("#feed li", has_text="received #").count() == 0


def test_it_reconnects_after_the_link_drops_and_catches_up_on_what_it_missed(page, personas, modem, nginx):
    login(page, "vera", PASSWORDS["vera"])
    page.goto("/#/messages/inbox")
    page.locator("#messages-table table").wait_for()
    nginx.stop()
    try:
        page.locator("#live-state[data-state='offline']").wait_for()
        modem["emulator"].inject_sms("+15559990003", "sent while you were away")
        page.wait_for_timeout(1500)
    finally:
        nginx.start()
    page.locator("#live-state[data-state='online']").wait_for(timeout=40000)
    page.locator("#messages-table tbody tr", has_text="sent while you were away").wait_for(timeout=10000)
