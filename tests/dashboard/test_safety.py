"""Hostile data stays text, roles are enforced in the UI, sessions end cleanly."""

from __future__ import annotations

import pytest

from .support import PASSWORDS, login, wait_for

pytestmark = pytest.mark.browser

PROBES = ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>"]


def test_it_shows_hostile_sms_text_as_text_and_runs_nothing(page, personas, modem, alice_api):
    sender = "+15559990666"
    for body in PROBES:
        modem["emulator"].inject_sms(sender, body)
        r = alice_api.post("/api/sms", json={"recipient": sender, "message": body})
        assert r.status_code == 200, r.text
    out_id = r.json()["message_id"]
    wait_for(
        lambda: alice_api.get("/api/sms/inbox", params={"number": sender}).json()["pagination"]["total"] == 2,
        20,
        0.3,
        "both probes to be received",
    )
    login(page, "alice", PASSWORDS["alice"])
    # The overview's live feed, then every view that prints message text.
    page.goto("/#/messages/inbox")
    for body in PROBES:
        page.locator("#messages-table td.text", has_text=body).first.wait_for()
    page.goto("/#/messages/outbox")
    page.locator("#messages-table td.text", has_text=PROBES[1]).first.wait_for()
    page.goto(f"/#/messages/conversations/{sender.replace('+', '%2B')}")
    page.locator("#thread .bubble", has_text=PROBES[0]).first.wait_for()
    page.goto(f"/#/messages/detail/{out_id}")
    assert page.locator("#detail-text").inner_text() == PROBES[1]
    # The feed shows what arrives while the overview is open: open it first.
    page.goto("/#/overview")
    page.locator("#feed").wait_for(state="attached")
    modem["emulator"].inject_sms(sender, PROBES[0] + " live")
    page.locator("#feed li", has_text=PROBES[0] + " live").wait_for(timeout=20000)
    page.goto("/#/logs")
    page.locator("#logs table").wait_for()
    page.goto("/#/messages/inbox")
    page.locator("#messages-table td.text", has_text=PROBES[1]).first.wait_for()
    page.wait_for_timeout(500)
    assert page.probe.dialogs == []
    assert page.locator("#app img, #app script").count() == 0
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"], script:not([src])').length") == 0


def test_a_viewer_has_no_way_to_send(page, personas, modem, nginx):
    login(page, "vera", PASSWORDS["vera"])
    nav = page.locator("nav.nav")
    assert nav.get_by_role("link", name="Send").count() == 0
    assert nav.get_by_role("link", name="Users").count() == 0
    page.goto("/#/send")
    page.get_by_role("heading", name="Not available").wait_for()
    assert page.locator("#send-button").count() == 0
    page.goto("/#/sims")
    page.locator("#sims table").wait_for()
    assert page.get_by_role("button", name="Add a SIM").count() == 0
    assert page.locator("#sims button").count() == 0
    # The server agrees: the UI is a convenience, not the guard.
    token = page.evaluate("() => JSON.parse(sessionStorage.getItem('smsgw.session')).token")
    r = page.request.post(
        nginx.url + "/api/sms",
        headers={"Authorization": f"Bearer {token}"},
        data={"recipient": "+15557654321", "message": "nope"},
    )
    assert r.status == 403


def test_it_puts_api_errors_next_to_the_field_they_concern(page, personas, modem):
    login(page, "bob", PASSWORDS["bob"])
    page.goto("/#/send")
    recipient = page.get_by_label("Recipient (international format)")
    recipient.fill("0151 12345")
    page.get_by_label("Message").fill("hi")
    page.get_by_role("button", name="Send SMS").click()
    assert "international format" in page.locator("#" + recipient.get_attribute("id") + "-err").inner_text()
    assert recipient.get_attribute("aria-invalid") == "true"
    # Valid for the browser, too long for the server (MAX_SEGMENTS=10): the
    # server's words appear under the message field.
    recipient.fill("+15557654321")
    page.get_by_label("Message").fill("a" * 1531)
    assert page.locator("#count-segments").inner_text() == "11"
    page.get_by_role("button", name="Send SMS").click()
    message = page.get_by_label("Message")
    err = page.locator("#" + message.get_attribute("id") + "-err")
    err.wait_for()
    assert "11 segments" in err.inner_text()
    assert message.get_attribute("aria-invalid") == "true"
    assert page.locator("#" + recipient.get_attribute("id") + "-err").inner_text() == ""


def test_an_expired_session_returns_to_the_login_page(page, personas):
    login(page, "bob", PASSWORDS["bob"])
    page.evaluate("""() => {
        const s = JSON.parse(sessionStorage.getItem('smsgw.session'));
        s.token = s.token.slice(0, -4) + 'AAAA';
        sessionStorage.setItem('smsgw.session', JSON.stringify(s));
    }""")
    page.reload()
    page.get_by_role("button", name="Sign in").wait_for()
    assert "expired" in page.locator(".login .form-error").inner_text()
    assert page.evaluate("() => sessionStorage.getItem('smsgw.session')") is None


def test_signing_out_forgets_the_token(page, personas):
    login(page, "bob", PASSWORDS["bob"])
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in").wait_for()
    assert page.evaluate("() => sessionStorage.getItem('smsgw.session')") is None
    assert page.evaluate("() => localStorage.length") == 0
    assert page.context.cookies() == []


def test_a_wrong_password_is_refused_with_a_message(page, personas):
    page.goto("/")
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password").fill("not-the-password")
    page.keyboard.press("Enter")
    alert = page.locator(".login .form-error")
    alert.wait_for()
    assert alert.inner_text().strip() != ""
    assert page.locator("#who-name").count() == 0


def test_it_signs_out_by_itself_when_the_token_expires_while_the_page_is_open(page, personas):
    login(page, "bob", PASSWORDS["bob"])
    page.evaluate("""() => {
        const s = JSON.parse(sessionStorage.getItem('smsgw.session'));
        s.expires_at = new Date(Date.now() + 1500).toISOString();
        sessionStorage.setItem('smsgw.session', JSON.stringify(s));
    }""")
    page.reload()
    page.locator("#who-name").wait_for()
    page.get_by_role("button", name="Sign in").wait_for(timeout=10000)
    assert "expired" in page.locator(".login .form-error").inner_text()
