"""A webhook may not target the gateway host itself: not only loopback but
every address of its own interfaces (docs/webhooks.md, SSRF)."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading

import psutil
import pytest

from smsgw_api.core.safe_http import check_url, http_session
from smsgw_api.core.settings import PipelineSettings
from smsgw_api.pipeline.webhooks import Dispatcher


def _own_lan_address(families=(socket.AF_INET, socket.AF_INET6), lan_rule_passes=True) -> ipaddress._BaseAddress:
    """An address of this machine's own interfaces that the LAN rule alone
    would let through (or, with `lan_rule_passes` off, any that is not
    loopback: some machines have only a documentation-range IPv4 address)."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family not in families:
                continue
            ip = ipaddress.ip_address(a.address.split("%", 1)[0])
            if ip.is_loopback or ip.is_link_local:
                continue
            if not lan_rule_passes:
                return ip
            if check_url(f"http://{_host(ip)}/x", allow_private=True, resolve=False, allow_loopback=True) is None:
                return ip
    pytest.fail("this machine has no address of its own to test with")


def _host(ip) -> str:
    return f"[{ip}]" if ip.version == 6 else str(ip)


def test_an_address_of_the_hosts_own_interfaces_is_refused_like_loopback():
    ip = _own_lan_address()
    reason = check_url(f"http://{_host(ip)}:8080/hook", allow_private=True, resolve=True)
    assert reason is not None and "this host" in reason and "WEBHOOK_ALLOW_LOOPBACK" in reason
    assert check_url(f"http://{_host(ip)}:8080/hook", allow_private=True, resolve=False) is not None
    # The same switch that lets a test receiver on 127.0.0.1 through lets this one through.
    assert check_url(f"http://{_host(ip)}:8080/hook", allow_private=True, resolve=True, allow_loopback=True) is None


def test_an_ipv4_mapped_form_of_an_own_address_is_refused_too():
    ip = _own_lan_address((socket.AF_INET,), lan_rule_passes=False)
    reason = check_url(f"http://[::ffff:{ip}]/x", allow_private=True, resolve=False)
    assert reason is not None and "this host" in reason


def test_a_delivery_to_the_hosts_own_address_never_connects():
    ip = _own_lan_address()
    hits: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET

    server = Server((str(ip), 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        d = object.__new__(Dispatcher)
        d.settings = PipelineSettings(webhook_allow_private=True, webhook_timeout=3)
        d.http = http_session()
        outcomes: list = []
        d._record = lambda row, status_code, error: outcomes.append((status_code, error))
        d.deliver(
            {
                "id": 1,
                "event_id": "e1",
                "event_type": "webhook.test",
                "payload": {"id": "e1"},
                "attempts": 0,
                "hook_id": 1,
                "url": f"http://{_host(ip)}:{server.server_address[1]}/hook",
                "secret": "s" * 32,
                "is_active": True,
            }
        )
        assert hits == []
        assert len(outcomes) == 1 and outcomes[0][0] is None and "this host" in outcomes[0][1]
    finally:
        server.shutdown()
        server.server_close()
