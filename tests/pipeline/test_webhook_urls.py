"""Which receiver URLs are allowed (SSRF rules, docs/webhooks.md), and the
signature scheme, as pure functions."""
from __future__ import annotations

import hashlib
import hmac

from smsgw_api.webhooks import backoff_seconds, check_url, sign


def test_private_and_loopback_receivers_need_the_edge_setting():
    for url in ("http://127.0.0.1:8000/x", "http://10.1.2.3/x", "http://192.168.1.20/hook", "http://[::1]/x"):
        assert check_url(url, allow_private=True, resolve=True) is None, url
        assert "WEBHOOK_ALLOW_PRIVATE" in check_url(url, allow_private=False, resolve=True), url


def test_a_name_is_judged_by_what_it_resolves_to():
    assert "private" in check_url("http://localhost:9/x", allow_private=False, resolve=True)
    assert check_url("http://localhost:9/x", allow_private=True, resolve=True) is None


def test_metadata_multicast_and_unspecified_addresses_are_never_receivers():
    for url in ("http://169.254.169.254/latest", "http://[fe80::1]/x", "http://224.0.0.1/x", "http://0.0.0.0/x",
                "http://[::ffff:169.254.169.254]/x"):
        assert "not a routable" in check_url(url, allow_private=True, resolve=False), url


def test_only_plain_http_urls_without_credentials_are_accepted():
    assert check_url("https://hooks.example.org/sms", allow_private=False, resolve=False) is None
    assert "credentials" in check_url("https://u:p@hooks.example.org/", allow_private=True, resolve=False)
    assert "http or https" in check_url("file:///etc/passwd", allow_private=True, resolve=False)
    assert "http or https" in check_url("gopher://127.0.0.1/", allow_private=True, resolve=False)
    assert "host" in check_url("http:///nohost", allow_private=True, resolve=False)
    assert "valid URL" in check_url("http://127.0.0.1:99999/", allow_private=True, resolve=False)
    assert "2000" in check_url("http://a.example/" + "x" * 2000, allow_private=True, resolve=False)


def test_the_signature_covers_timestamp_and_body():
    body = b'{"id":"1","type":"message.sent"}'
    expected = hmac.new(b"k" * 20, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k" * 20, "1700000000", body) == "sha256=" + expected
    assert sign("k" * 20, "1700000001", body) != sign("k" * 20, "1700000000", body)


def test_backoff_doubles_with_jitter_and_a_cap():
    for attempt, nominal in ((1, 10), (2, 20), (3, 40), (4, 80)):
        assert nominal * 0.9 <= backoff_seconds(attempt, 10, 3600) <= nominal * 1.1
    assert backoff_seconds(30, 10, 3600) <= 3600 * 1.1
