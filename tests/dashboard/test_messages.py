"""Messages beyond the happy path: scheduling with a chosen SIM, cancel,
server-side filters and pagination."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest

from .support import PASSWORDS, SIM_NUMBER, login

pytestmark = pytest.mark.browser

# send_at may be at most a year ahead (docs/api-contract.md, "Validation").
LATER = datetime.now(UTC) + timedelta(days=200)


def test_a_user_schedules_an_sms_on_a_chosen_sim_and_cancels_it(page, personas, modem):
    login(page, "bob", PASSWORDS["bob"])
    page.get_by_role("link", name="Send").click()
    page.get_by_label("Recipient (international format)").fill("+15557650001")
    page.get_by_label("Message").fill("Reminder for next year")
    sim = page.get_by_label("SIM", exact=True)
    page.wait_for_function("() => document.querySelectorAll('select[name=sim_card_id] option').length > 1")
    sim.select_option(label=next(t for t in sim.locator("option").all_inner_texts() if SIM_NUMBER in t))
    page.get_by_label("Priority").select_option("high")
    page.get_by_label("Send at (optional, your local time)").fill(LATER.strftime("%Y-%m-%dT10:00"))
    page.get_by_role("button", name="Send SMS").click()
    page.locator("#sent-link").click()
    page.locator("#detail-status .badge-queued").wait_for()
    detail = page.locator("#message-detail").inner_text()
    assert "Send at" in detail and str(LATER.year) in detail and "high" in detail
    cancel = page.locator("#cancel-button")
    cancel.click()
    assert cancel.inner_text() == "Confirm: Cancel this message"
    cancel.click()
    page.locator("#detail-status .badge-cancelled").wait_for()
    assert "cancelled" in page.locator("#timeline").inner_text()
    assert page.locator("#cancel-button").count() == 0


def test_the_outbox_is_filtered_and_paginated_by_the_server(page, personas, modem, alice_api):
    # Scheduled far ahead so the worker leaves them queued.
    r = alice_api.post(
        "/api/sms/batch",
        json={
            "recipients": [f"+1555770{i:04d}" for i in range(60)],
            "message": "batch for paging",
            "send_at": LATER.strftime("%Y-%m-%dT00:00:00Z"),
        },
    )
    assert r.status_code == 201, r.text
    login(page, "alice", PASSWORDS["alice"])
    page.goto("/#/messages/outbox")
    table = page.locator("#messages-table")
    table.locator("tbody tr").first.wait_for()
    page.get_by_label("Search text").fill("batch for paging")
    page.get_by_label("Status").select_option("queued")
    page.get_by_role("button", name="Filter").click()
    pager = page.locator("#messages-table .pager [role=status]")
    next_button = page.get_by_role("button", name="Next →")
    wait_rows = lambda n: page.wait_for_function(  # noqa: E731
        f"() => document.querySelectorAll('#messages-table tbody tr').length === {n}"
    )
    wait_rows(50)
    assert next_button.is_enabled()
    next_button.click()
    pager.filter(has_text="Page 2").wait_for()
    wait_rows(10)
    assert not next_button.is_enabled()
    texts = set(table.locator("tbody td.text").all_inner_texts())
    assert texts == {"batch for paging"}
    page.get_by_label("Number").fill("+15557700007")
    page.get_by_role("button", name="Filter").click()
    pager.filter(has_text="Page 1").wait_for()
    wait_rows(1)
    assert "+15557700007" in table.locator("tbody tr").inner_text()


def test_a_user_sends_through_any_sim_of_a_site(page, personas, modem, api_env):
    """Site routing from the Send page (docs/deployment.md, "Site-aware routing"):
    the emulated modem is put at a site of this test's own for its duration."""
    from sqlalchemy import create_engine, text

    site = f"dash-{secrets.token_hex(2)}"
    engine = create_engine(api_env["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE modems SET site = :s WHERE id = :id"), {"s": site, "id": modem["modem_id"]})
    try:
        login(page, "bob", PASSWORDS["bob"])
        page.get_by_role("link", name="Send").click()
        page.get_by_label("Recipient (international format)").fill("+15557650009")
        page.get_by_label("Message").fill("Through the site")
        sim = page.get_by_label("SIM", exact=True)
        page.wait_for_function(
            f"() => !!document.querySelector('select[name=sim_card_id] option[value=\"site:{site}\"]')"
        )
        sim.select_option(f"site:{site}")
        page.get_by_label("Send at (optional, your local time)").fill(LATER.strftime("%Y-%m-%dT10:00"))
        page.get_by_role("button", name="Send SMS").click()
        page.locator("#sent-link").click()
        assert site in page.locator("#detail-site").inner_text()
        assert SIM_NUMBER in page.locator("#message-detail").inner_text()
        page.locator("#cancel-button").click()
        page.locator("#cancel-button").click()
        page.locator("#detail-status .badge-cancelled").wait_for()
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE modems SET site = NULL WHERE id = :id"), {"id": modem["modem_id"]})
        engine.dispose()
