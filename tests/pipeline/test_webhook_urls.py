"""Which receiver URLs are allowed (SSRF rules, docs/webhooks.md), that a
delivery connects to the address that was checked, and the signature scheme."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import socket
import ssl
import subprocess
import threading

import pytest
import requests

from smsgw_api.core.safe_http import check_url, http_session, post_pinned, resolve_url, sign
from smsgw_api.core.settings import PipelineSettings
from smsgw_api.pipeline.webhooks import Dispatcher, backoff_seconds


def test_lan_receivers_follow_allow_private_and_loopback_needs_its_own_setting():
    for url in ("http://10.1.2.3/x", "http://172.16.0.9/x", "http://192.168.1.20/hook", "http://[fd00::7]/x"):
        assert check_url(url, allow_private=True, resolve=True) is None, url
        assert "WEBHOOK_ALLOW_PRIVATE" in check_url(url, allow_private=False, resolve=True), url
    for url in (
        "http://127.0.0.1:8000/x",
        "http://127.9.9.9/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://2130706433/x",
        "http://127.1/x",
        "http://0x7f000001/x",
    ):
        # Allowing the LAN does not open the gateway's own loopback services.
        assert "WEBHOOK_ALLOW_LOOPBACK" in check_url(url, allow_private=True, resolve=False), url
        assert check_url(url, allow_private=True, resolve=False, allow_loopback=True) is None, url


def test_a_name_is_judged_by_what_it_resolves_to():
    assert "WEBHOOK_ALLOW_LOOPBACK" in check_url("http://localhost:9/x", allow_private=True, resolve=True)
    assert "WEBHOOK_ALLOW_LOOPBACK" in check_url("http://app.localhost./x", allow_private=True, resolve=False)
    assert check_url("http://localhost:9/x", allow_private=True, resolve=True, allow_loopback=True) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest",  # cloud metadata (link-local)
        "http://169.254.1.1/x",
        "http://[fe80::1]/x",
        "http://[fe80::1%25eth0]/x",
        "http://224.0.0.1/x",  # multicast
        "http://[ff02::1]/x",
        "http://0.0.0.0/x",  # unspecified
        "http://[::]/x",
        "http://100.64.0.1/x",  # carrier-grade NAT shared space
        "http://100.127.255.254/x",
        "http://[::ffff:169.254.169.254]/x",  # IPv4-mapped
        "http://[::ffff:100.64.0.1]/x",
        "http://[::ffff:0.0.0.0]/x",
        "http://[2002:a9fe:a9fe::1]/x",  # 6to4 of 169.254.169.254
        "http://[2002:7f00:1::1]/x",  # 6to4 of 127.0.0.1
        "http://[2002:0a00:0001::1]/x",  # 6to4 of 10.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/x",  # NAT64 of 169.254.169.254
        "http://[64:ff9b::7f00:1]/x",  # NAT64 of 127.0.0.1
        "http://[64:ff9b::c0a8:101]/x",  # NAT64 of 192.168.1.1
        "http://[64:ff9b:1::a9fe:a9fe]/x",  # local-use NAT64 prefix
        "http://[::7f00:1]/x",  # IPv4-compatible (deprecated)
        "http://192.0.2.10/x",  # documentation / reserved
        "http://255.255.255.255/x",
    ],
)
def test_special_addresses_are_never_receivers_whatever_is_allowed(url):
    reason = check_url(url, allow_private=True, resolve=False, allow_loopback=True)
    assert reason and "not a routable" in reason, (url, reason)


def test_public_addresses_and_their_ipv6_translations_are_receivers():
    for url in (
        "http://8.8.8.8/x",
        "http://[2606:4700::1111]/x",
        "http://[64:ff9b::808:808]/x",
        "http://[2002:808:808::1]/x",
        "https://hooks.example.org/sms",
    ):
        assert check_url(url, allow_private=False, resolve=False) is None, url


def test_only_plain_http_urls_without_credentials_are_accepted():
    assert check_url("https://hooks.example.org/sms", allow_private=False, resolve=False) is None
    assert "credentials" in check_url("https://u:p@hooks.example.org/", allow_private=True, resolve=False)
    assert "http or https" in check_url("file:///etc/passwd", allow_private=True, resolve=False)
    assert "http or https" in check_url("gopher://127.0.0.1/", allow_private=True, resolve=False)
    assert "host" in check_url("http:///nohost", allow_private=True, resolve=False)
    assert "valid URL" in check_url("http://127.0.0.1:99999/", allow_private=True, resolve=False)
    assert "2000" in check_url("http://a.example/" + "x" * 2000, allow_private=True, resolve=False)


def test_a_name_with_any_refused_address_is_refused(monkeypatch):
    real = socket.getaddrinfo

    def fake(host, port, *a, **kw):
        if host == "mixed.test":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port)),
            ]
        return real(host, port, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    assert "169.254.169.254" in check_url("http://mixed.test/x", allow_private=True, resolve=True)


def test_the_signature_covers_timestamp_and_body():
    body = b'{"id":"1","type":"message.sent"}'
    expected = hmac.new(b"k" * 20, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k" * 20, "1700000000", body) == "sha256=" + expected
    assert sign("k" * 20, "1700000001", body) != sign("k" * 20, "1700000000", body)


def test_backoff_doubles_with_jitter_and_a_cap():
    for attempt, nominal in ((1, 10), (2, 20), (3, 40), (4, 80)):
        assert nominal * 0.9 <= backoff_seconds(attempt, 10, 3600) <= nominal * 1.1
    assert backoff_seconds(30, 10, 3600) <= 3600 * 1.1


# --- Connecting to the checked address ------------------------------------------


class _Recorder:
    def __init__(self, tls: ssl.SSLContext | None = None):
        self.hits: list[dict] = []
        self.sni: list[str | None] = []
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                rec.hits.append({"headers": dict(self.headers), "body": body, "path": self.path})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: rec.sni.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    made = []

    def make(tls=None):
        rec = _Recorder(tls)
        made.append(rec)
        return rec

    yield make
    for rec in made:
        rec.close()


def _rebinding_dns(monkeypatch, name: str, answers: list[str]) -> list[str]:
    """`name` resolves to answers[0] the first time, answers[1] after that."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def fake(host, port, *a, **kw):
        if host == name:
            asked.append(host)
            ip = answers[min(len(asked) - 1, len(answers) - 1)]
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, port, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return asked


def _dispatcher(**settings) -> tuple[Dispatcher, list]:
    """The real delivery path without a database: what it would record is captured."""
    d = object.__new__(Dispatcher)
    d.settings = PipelineSettings(**settings)
    d.http = http_session()
    outcomes: list = []
    d._record = lambda row, status_code, error: outcomes.append((status_code, error))
    return d, outcomes


def _row(url: str) -> dict:
    return {
        "id": 1,
        "event_id": "e1",
        "event_type": "webhook.test",
        "payload": {"id": "e1"},
        "attempts": 0,
        "hook_id": 1,
        "url": url,
        "secret": "s" * 32,
        "is_active": True,
    }


def test_a_delivery_connects_to_the_address_that_was_checked(monkeypatch, recorder):
    """DNS rebinding: the name answers a permitted address for the check and
    the metadata address afterwards; the POST still goes to the checked one."""
    rec = recorder()
    asked = _rebinding_dns(monkeypatch, "rebind.test", ["127.0.0.1", "169.254.169.254"])
    dispatcher, outcomes = _dispatcher(webhook_allow_loopback=True, webhook_timeout=3)
    dispatcher.deliver(_row(f"http://rebind.test:{rec.port}/hook"))
    assert outcomes == [(200, None)]
    assert len(rec.hits) == 1 and len(asked) == 1  # resolved once, for the check
    assert rec.hits[0]["headers"]["Host"] == f"rebind.test:{rec.port}"


def test_a_name_that_now_resolves_to_metadata_is_not_contacted(monkeypatch, recorder):
    rec = recorder()
    _rebinding_dns(monkeypatch, "rebind.test", ["169.254.169.254"])
    dispatcher, outcomes = _dispatcher(webhook_allow_loopback=True)
    dispatcher.deliver(_row(f"http://rebind.test:{rec.port}/hook"))
    assert outcomes[0][0] is None and "169.254.169.254" in outcomes[0][1] and not rec.hits


def test_proxy_settings_in_the_environment_are_ignored(monkeypatch, recorder):
    rec, proxy = recorder(), recorder()
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.port}")
    dispatcher, outcomes = _dispatcher(webhook_allow_loopback=True, webhook_timeout=3)
    assert dispatcher.http.trust_env is False
    dispatcher.deliver(_row(f"http://127.0.0.1:{rec.port}/hook"))
    assert outcomes == [(200, None)] and len(rec.hits) == 1 and not proxy.hits


def test_the_next_checked_address_is_tried_when_one_cannot_be_reached(recorder):
    rec = recorder()  # listens on 127.0.0.1 only: 127.0.0.2 refuses the connection
    url = f"http://receiver.test:{rec.port}/hook"
    resp = post_pinned(http_session(), url, ["127.0.0.2", "127.0.0.1"], data=b"{}", headers={}, timeout=3)
    assert resp.status_code == 200 and len(rec.hits) == 1


def _self_signed(tmp_path, name: str):
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
        ],
        check=True,
        capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx, str(cert)


def test_https_to_a_pinned_address_verifies_the_certificate_against_the_hostname(tmp_path, recorder):
    ctx, ca = _self_signed(tmp_path, "hooks.test")
    rec = recorder(ctx)
    session = http_session()
    session.verify = ca
    resp = post_pinned(
        session,
        f"https://hooks.test:{rec.port}/hook",
        ["127.0.0.1"],
        data=b'{"a":1}',
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert resp.status_code == 200
    assert rec.sni == ["hooks.test"]  # SNI names the host, not the address
    assert rec.hits[0]["headers"]["Host"] == f"hooks.test:{rec.port}" and rec.hits[0]["body"] == b'{"a":1}'


def test_https_to_a_pinned_address_refuses_a_certificate_for_another_name(tmp_path, recorder):
    ctx, ca = _self_signed(tmp_path, "other.test")
    rec = recorder(ctx)
    session = http_session()
    session.verify = ca
    with pytest.raises(requests.exceptions.SSLError):
        post_pinned(session, f"https://hooks.test:{rec.port}/hook", ["127.0.0.1"], data=b"{}", headers={}, timeout=5)
    assert not rec.hits


def test_resolve_url_returns_only_checked_addresses(monkeypatch):
    _rebinding_dns(monkeypatch, "lan.test", ["192.168.1.20"])
    assert resolve_url("http://lan.test/x", allow_private=True) == (None, ["192.168.1.20"])
    assert resolve_url("http://lan.test/x", allow_private=False)[1] == []
