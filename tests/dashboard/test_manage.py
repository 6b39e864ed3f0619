"""Managing the gateway from the browser: SIMs, API keys, users, webhooks,
statistics, logs, and the phone-sized layout."""

from __future__ import annotations

import pytest
import requests

from .support import ARTIFACTS, PASSWORDS, SIM_NUMBER, login, wait_for

pytestmark = pytest.mark.browser


def test_an_admin_adds_edits_disables_and_deletes_a_sim(page, personas, alice_api):
    login(page, "alice", PASSWORDS["alice"])
    page.get_by_role("link", name="SIMs & modems").click()
    page.get_by_role("button", name="Add a SIM").click()
    form = page.locator("#sim-editor form")
    form.get_by_label("Number").fill("+15550007777")
    form.get_by_label("Label").fill("spare <b>card</b>")
    form.get_by_label("Limit per day (segments, empty = none)").fill("500")
    form.get_by_role("button", name="Add SIM").click()
    row = page.locator("#sims tbody tr", has_text="+15550007777")
    row.wait_for()
    assert "spare <b>card</b>" in row.inner_text()
    assert "0 / 500 per day" in row.inner_text()

    row.get_by_role("button", name="Edit").click()
    form = page.locator("#sim-editor form")
    form.get_by_label("Limit per minute (segments, empty = none)").fill("5")
    form.get_by_role("button", name="Save").click()
    page.locator("#sims tbody tr", has_text="0 / 5 per minute").wait_for()
    page.screenshot(path=str(ARTIFACTS / "sims_with_limits.png"), full_page=True)

    row = page.locator("#sims tbody tr", has_text="+15550007777")
    row.get_by_role("button", name="Disable").click()
    row.locator(".badge-inactive").wait_for()
    sim = next(s for s in alice_api.get("/api/sim-cards").json()["sim_cards"] if s["number"] == "+15550007777")
    assert sim["status"] == "inactive" and sim["limit_per_minute"] == 5 and sim["limit_per_day"] == 500

    delete = row.get_by_role("button", name="Delete")
    delete.click()
    row.get_by_role("button", name="Confirm: Delete").click()
    page.locator("#sims tbody tr", has_text="+15550007777").wait_for(state="detached")
    assert all(s["number"] != "+15550007777" for s in alice_api.get("/api/sim-cards").json()["sim_cards"])


def test_an_admin_checks_a_sims_balance_by_ussd(page, personas, modem):
    login(page, "alice", PASSWORDS["alice"])
    page.goto("/#/sims")
    row = page.locator("#sims tbody tr", has_text=SIM_NUMBER)
    row.get_by_role("button", name="Balance").click()
    form = page.locator("#sim-editor form")
    assert form.get_by_label("USSD code").input_value() == "*100#"
    form.get_by_role("button", name="Send USSD").click()
    form.locator(".secret", has_text="Your balance is 12.34").wait_for(timeout=20000)


def test_the_sim_form_shows_the_servers_validation_errors(page, personas):
    login(page, "alice", PASSWORDS["alice"])
    page.goto("/#/sims")
    page.get_by_role("button", name="Add a SIM").click()
    form = page.locator("#sim-editor form")
    form.get_by_label("Number").fill("not a number")
    form.get_by_role("button", name="Add SIM").click()
    number = form.get_by_label("Number")
    page.locator("#" + number.get_attribute("id") + "-err").wait_for()
    assert number.get_attribute("aria-invalid") == "true"


def test_a_user_creates_a_named_key_sees_it_once_and_revokes_it(page, personas, nginx):
    login(page, "bob", PASSWORDS["bob"])
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name of the new key").fill("billing <system>")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key-value").inner_text()
    assert len(key) > 20
    page.locator("#copy-key").click()
    assert requests.get(nginx.url + "/api/me", headers={"X-API-Key": key}, timeout=5).status_code == 200
    row = page.locator("#keys tbody tr", has_text="billing <system>")
    row.wait_for()
    assert key not in page.locator("#keys").inner_text()
    # Shown once: a reload lists the key by prefix only.
    page.reload()
    page.locator("#keys tbody tr", has_text="billing <system>").wait_for()
    assert page.locator("#new-key-value").count() == 0
    assert key not in page.content()
    row = page.locator("#keys tbody tr", has_text="billing <system>")
    row.get_by_role("button", name="Revoke key billing <system>").click()
    row.get_by_role("button", name="Confirm: Revoke key billing <system>").click()
    row.locator(".badge-revoked").wait_for()
    assert requests.get(nginx.url + "/api/me", headers={"X-API-Key": key}, timeout=5).status_code == 401


def test_an_admin_adds_a_user_and_changes_its_role(page, personas, alice_api):
    login(page, "alice", PASSWORDS["alice"])
    page.get_by_role("link", name="Users").click()
    form = page.get_by_role("form", name="Add a user")
    form.get_by_label("Username").fill("dora")
    form.get_by_label("Password").fill("dora-" + PASSWORDS["bob"])
    form.get_by_label("Role").select_option("viewer")
    form.get_by_role("button", name="Add user").click()
    row = page.locator("#users tbody tr", has_text="dora")
    row.wait_for()
    row.get_by_label("Role of dora").select_option("user")
    wait_for(
        lambda: (
            next(u for u in alice_api.get("/api/users").json()["users"] if u["username"] == "dora")["role"] == "user"
        ),
        10,
        0.2,
        "dora to become a user",
    )


def test_a_user_adds_a_webhook_tests_it_and_sees_the_delivery(page, personas):
    login(page, "bob", PASSWORDS["bob"])
    page.get_by_role("link", name="Webhooks").click()
    page.get_by_label("URL").fill("http://127.0.0.1:9/hook")
    page.get_by_role("button", name="Add webhook").click()
    assert page.locator("#webhook-secret code").inner_text().strip() != ""
    row = page.locator("#webhooks tbody tr", has_text="http://127.0.0.1:9/hook")
    row.get_by_role("button", name="Test").click()
    page.locator("#deliveries tbody tr", has_text="webhook.test").wait_for(timeout=15000)


def test_the_webhook_form_shows_a_bad_url_next_to_the_field(page, personas):
    login(page, "bob", PASSWORDS["bob"])
    page.goto("/#/webhooks")
    url = page.get_by_label("URL")
    url.fill("ftp://example")
    page.get_by_role("button", name="Add webhook").click()
    err = page.locator("#" + url.get_attribute("id") + "-err")
    err.wait_for()
    assert err.inner_text().strip() != ""


def test_statistics_are_drawn_as_charts(page, personas, modem, alice_api):
    assert (
        alice_api.post("/api/sms", json={"recipient": "+15557654323", "message": "for the charts"}).status_code == 200
    )
    login(page, "vera", PASSWORDS["vera"])
    page.get_by_role("link", name="Statistics").click()
    page.locator("#stats svg.chart").first.wait_for()
    assert page.locator("#stats figure").count() == 6
    assert page.locator("#stats svg.chart rect.bar").count() > 0
    assert int(page.locator("#stat-total").inner_text()) > 0
    page.get_by_label("Period").select_option("24h")
    page.get_by_role("figure", name="Messages per hour").wait_for()


def test_logs_are_filtered_by_the_server(page, personas, alice_api):
    login(page, "alice", PASSWORDS["alice"])
    page.get_by_role("link", name="Logs").click()
    page.locator("#logs tbody tr").first.wait_for()
    actions = set(page.locator("#logs tbody tr td:nth-child(2)").all_inner_texts())
    assert len(actions) >= 1
    wanted = sorted(actions)[0]
    page.get_by_label("Action").fill(wanted)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state("networkidle")
    shown = set(page.locator("#logs tbody tr td:nth-child(2)").all_inner_texts())
    assert shown == {wanted}


def test_it_works_on_a_phone_sized_screen_with_the_keyboard(browser, nginx, personas, modem):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, base_url=nginx.url, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    try:
        page.goto("/")
        page.keyboard.press("Tab")  # the skip link comes first
        page.get_by_label("Username").focus()
        page.keyboard.type("bob")
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORDS["bob"])
        page.keyboard.press("Enter")
        page.locator("#who-name").wait_for(state="attached")
        nav = page.locator("nav.nav")
        assert not nav.is_visible()
        menu = page.get_by_role("button", name="Menu")
        menu.focus()
        page.keyboard.press("Enter")
        assert nav.is_visible() and menu.get_attribute("aria-expanded") == "true"
        nav.get_by_role("link", name="Send").focus()
        page.keyboard.press("Enter")
        page.get_by_label("Message").fill("Grüße 😀")
        assert page.locator("#count-encoding").inner_text() == "UCS-2"
        assert page.locator("#count-remaining").inner_text() == str(70 - 8)
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways ({width}px)"
        page.screenshot(path=str(_artifact("phone_send.png")), full_page=True)
        page.goto("/#/overview")
        page.locator("[data-modem]").first.wait_for()
        page.screenshot(path=str(_artifact("phone_overview.png")), full_page=True)
    finally:
        context.close()


def _artifact(name):
    from .support import ARTIFACTS

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
