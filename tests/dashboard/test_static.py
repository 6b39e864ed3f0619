"""What the dashboard guarantees before it talks to the API: security headers,
compression, a segment counter that agrees with the server, and a readable
message when the API is down."""

from __future__ import annotations

import random

import pytest
import requests

from smsgw_common import segments

SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options")


def test_it_sends_a_strict_csp_and_the_other_security_headers_on_every_response(static_nginx):
    for path in ("/", "/js/app.js", "/css/app.css", "/nope", "/api/me"):
        r = requests.get(static_nginx.url + path, timeout=5)
        for name in SECURITY_HEADERS:
            assert name in r.headers, f"{name} missing on {path} ({r.status_code})"
        csp = r.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
        assert directives["script-src"] == "'self'", csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert directives["frame-ancestors"] == "'none'"
        assert directives["object-src"] == "'none'"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"


def test_it_serves_scripts_compressed(static_nginx):
    r = requests.get(static_nginx.url + "/js/views/messages.js", headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert r.status_code == 200
    assert r.headers.get("Content-Encoding") == "gzip"
    assert r.headers["Content-Type"].startswith(("application/javascript", "text/javascript"))


def test_it_hides_dotfiles_and_falls_back_to_the_app_shell(static_nginx):
    assert requests.get(static_nginx.url + "/.git/config", timeout=5).status_code == 404
    r = requests.get(static_nginx.url + "/some/deep/link", timeout=5)
    assert r.status_code == 200 and '<div id="app"' in r.text


def test_it_answers_in_the_api_error_format_when_the_api_is_down(static_nginx):
    r = requests.get(static_nginx.url + "/api/sim-cards", timeout=5)
    assert r.status_code == 503
    assert r.json()["code"] == "api_unavailable"


@pytest.mark.browser
def test_it_blocks_inline_script_through_the_csp(static_page):
    static_page.goto("/")
    ran = static_page.evaluate("""() => new Promise((resolve) => {
        document.addEventListener('securitypolicyviolation', () => resolve('blocked'));
        const s = document.createElement('script');
        s.textContent = 'window.__inline_ran = true';
        document.body.appendChild(s);
        setTimeout(() => resolve(window.__inline_ran ? 'ran' : 'silent'), 1000);
    })""")
    assert ran == "blocked"


def _samples() -> list[str]:
    rng = random.Random(20261125)
    basic = segments.GSM7_BASIC.replace("\x1b", "")
    ext = "".join(segments.GSM7_EXTENSION.values())
    bmp = "ąčęėįšųūžЖЯ中文ñ€∑ß"
    astral = "😀🎉𝄞👍🏽"
    pools = [basic, basic + ext, basic + bmp, basic + astral, ext, astral + bmp]
    out = [
        "",
        "a",
        "€",
        "😀",
        "{" * 80,
        "{" * 81,
        "a" * 160,
        "a" * 161,
        "a" * 306,
        "a" * 307,
        "ж" * 70,
        "ж" * 71,
        "ж" * 134,
        "ж" * 135,
        "😀" * 35,
        "😀" * 36,
        "a" * 152 + "€" + "a" * 10,
        "ж" * 66 + "😀" + "ж" * 5,
        "<img src=x onerror=alert(1)>",
        "line\nbreak\r\x0c",
    ]
    for _ in range(400):
        pool = rng.choice(pools)
        n = rng.choice([rng.randint(1, 80), rng.randint(140, 175), rng.randint(300, 480)])
        out.append("".join(rng.choice(pool) for _ in range(n)))
    return out


@pytest.mark.browser
def test_it_counts_characters_segments_and_encoding_exactly_like_the_server(static_page):
    static_page.goto("/")
    texts = _samples()
    got = static_page.evaluate(
        """async (texts) => {
        const m = await import('/js/segments.js');
        return texts.map((t) => m.analyze(t));
    }""",
        texts,
    )
    for text, js in zip(texts, got):
        py = segments.preview(text)
        assert js == py, f"{text!r}: browser {js} != server {py}"


@pytest.mark.browser
def test_it_shows_a_clear_message_when_the_api_cannot_be_reached(static_page):
    static_page.goto("/")
    static_page.get_by_label("Username").fill("alice")
    static_page.get_by_label("Password").fill("whatever-it-is")
    static_page.get_by_role("button", name="Sign in").click()
    alert = static_page.locator(".login .form-error")
    alert.wait_for()
    assert "not reachable" in alert.inner_text()
    assert static_page.probe.dialogs == []
