"""Outbound HTTP to receivers a user named (webhooks): SSRF rules and pinning.

Receivers are checked against SSRF rules at registration and again at every
delivery; the delivery connects to exactly the address that was checked (no
second DNS lookup), ignores proxy settings from the environment and never
follows redirects. Signatures: docs/webhooks.md.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import sys
import threading
import time
from collections import namedtuple
from functools import partial
from urllib.parse import SplitResult, urlsplit

import psutil
import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.poolmanager import PoolKey, _default_key_normalizer
from urllib3.util import connection as urllib3_connection

USER_AGENT = "smsgw-webhooks/1"


# WEBHOOK_ALLOW_PRIVATE covers exactly these: the LAN ranges an edge box's
# receivers live in. Loopback needs WEBHOOK_ALLOW_LOOPBACK; link-local (cloud
# metadata), CGNAT, multicast, unspecified and other special ranges are never
# receivers.
LAN_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT
NAT64_WKP = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: DNS64 answers for IPv4-only hosts
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use translation prefix
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d

_NOT_ROUTABLE = "is not a routable receiver address"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The host's own addresses, re-read at most this often: interfaces come and
# go (DHCP, a VPN, a container restart) and a check must see the new ones.
OWN_ADDRESSES_TTL = 10.0
_own_lock = threading.Lock()
_own_cache: tuple[float, frozenset] = (float("-inf"), frozenset())


def own_addresses() -> frozenset:
    """Every address of this host's interfaces (in a container: the container's).

    Loopback is only one way to reach the gateway's own services: its LAN or
    ULA address (`fd00::2`) reaches the same listeners, and allowing the LAN
    must not open them."""
    global _own_cache
    with _own_lock:
        read_at, cached = _own_cache
        if time.monotonic() - read_at < OWN_ADDRESSES_TTL:
            return cached
        found = set()
        try:
            interfaces = psutil.net_if_addrs()
        except OSError:
            interfaces = {}
        for addrs in interfaces.values():
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    try:
                        found.add(ipaddress.ip_address(a.address.split("%", 1)[0]))
                    except ValueError:
                        continue
        _own_cache = (time.monotonic(), frozenset(found))
        return _own_cache[1]


def _ip_refusal(ip: IPAddress, allow_private: bool, allow_loopback: bool = False) -> str | None:
    """Why a receiver at `ip` is refused, or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        if ip.ipv4_mapped is not None:
            # ::ffff:a.b.c.d is a socket to a.b.c.d: the very same rules.
            v4 = ip.ipv4_mapped
            reason = _ip_refusal(v4, allow_private, allow_loopback)
            return f"{ip} is the IPv4 address {v4}: {reason}" if reason else None
        embedded = None
        if ip.sixtofour is not None:
            embedded = ("6to4", ip.sixtofour)
        elif ip in NAT64_WKP:
            embedded = ("NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if embedded is not None:
            # A translated address stands for the IPv4 host it embeds; only a
            # public one is a receiver (never the LAN, loopback or metadata
            # of whatever box translates it).
            form, v4 = embedded
            if _ip_refusal(v4, allow_private=False, allow_loopback=False):
                return f"{ip} embeds {v4} ({form}) and {_NOT_ROUTABLE}"
            return None
        if ip in NAT64_LOCAL or (ip in IPV4_COMPATIBLE and int(ip) > 1):
            return f"{ip} {_NOT_ROUTABLE}"
    # Link-local covers cloud metadata endpoints (169.254.169.254): never a receiver.
    if ip.is_unspecified or ip.is_multicast or ip.is_link_local:
        return f"{ip} {_NOT_ROUTABLE}"
    if ip.is_loopback:
        return None if allow_loopback else f"{ip} is a loopback address and WEBHOOK_ALLOW_LOOPBACK is off"
    if not allow_loopback and ip in own_addresses():
        return f"{ip} is an address of this host and WEBHOOK_ALLOW_LOOPBACK is off"
    if ip in SHARED_ADDRESS_SPACE:
        return f"{ip} is in the shared (carrier-grade NAT) range 100.64.0.0/10 and {_NOT_ROUTABLE}"
    if any(ip in net for net in LAN_NETWORKS):
        return None if allow_private else f"{ip} is a private address and WEBHOOK_ALLOW_PRIVATE is off"
    if not ip.is_global:
        return f"{ip} {_NOT_ROUTABLE}"
    return None


def _literal_ip(host: str) -> IPAddress | None:
    """`host` as an address if it is one, including the shorthand forms the
    resolver accepts (`127.1`, `0x7f000001`, `2130706433`)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _is_localhost_name(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name in ("localhost", "localhost.localdomain") or name.endswith(".localhost")


def _parse(url) -> tuple[str | None, SplitResult | None]:
    if not isinstance(url, str) or not url.strip():
        return "must be an http or https URL", None
    if len(url) > 2000:
        return "must be at most 2000 characters", None
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        return f"is not a valid URL ({exc})", None
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL", None
    if not parts.hostname:
        return "must name a host", None
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials; authenticate the sender by its signature", None
    return None, parts


def resolve_url(
    url: str, allow_private: bool, allow_loopback: bool = False, resolve: bool = True
) -> tuple[str | None, list[str]]:
    """(why `url` may not receive webhooks or None, the checked addresses to
    connect to). Every address the name resolves to must pass: a name that
    mixes a public and an internal address is refused."""
    reason, parts = _parse(url)
    # _parse gives parts with a host name, or a reason.
    if parts is None or not parts.hostname:
        return reason, []
    host = parts.hostname
    literal = _literal_ip(host)
    if literal is not None:
        reason = _ip_refusal(literal, allow_private, allow_loopback)
        return reason, ([] if reason else [str(literal)])
    if _is_localhost_name(host):
        reason = _ip_refusal(ipaddress.ip_address("127.0.0.1"), allow_private, allow_loopback)
        if reason:
            return f"{host} names the loopback interface and WEBHOOK_ALLOW_LOOPBACK is off", []
    if not resolve:
        return None, []
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except OSError:
        return f"host {host} does not resolve", []
    addresses: list[str] = []
    for info in infos:
        if info[0] not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(info[4][0])
        reason = _ip_refusal(ip, allow_private, allow_loopback)
        if reason:
            return f"host {host} resolves to {ip}: {reason}", []
        if str(ip) not in addresses:
            addresses.append(str(ip))
    if not addresses:
        return f"host {host} does not resolve", []
    return None, addresses


def check_url(url: str, allow_private: bool, resolve: bool, allow_loopback: bool = False) -> str | None:
    """Why `url` may not receive webhooks, or None if it may."""
    return resolve_url(url, allow_private, allow_loopback, resolve)[0]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


# --- HTTP to a checked address --------------------------------------------------
#
# requests would resolve the host again when it connects, and a DNS server
# that answers differently the second time (rebinding) would steer the POST
# to an address that was never checked. These connections open their socket
# to the pinned address instead; everything else (the Host header, TLS SNI,
# certificate verification against the hostname) still uses the URL's host.


class _PinnedMixin:
    def __init__(self, *args, pinned_ip: str | None = None, **kw):
        super().__init__(*args, **kw)
        self.pinned_ip = pinned_ip

    def _new_conn(self):
        if self.pinned_ip is None:
            raise NewConnectionError(self, "refusing to connect: no checked address for this host")
        try:
            sock = urllib3_connection.create_connection(
                (self.pinned_ip, self.port),
                self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} ({self.pinned_ip}) timed out. (connect timeout={self.timeout})"
            ) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection to {self.pinned_ip}: {exc}") from exc
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock


class _PinnedHTTPConnection(_PinnedMixin, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedMixin, HTTPSConnection):
    pass


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


# Pools are kept per (host, port, ..., address): a kept-alive connection is
# only reused for the address it was opened to.
_PinnedPoolKey = namedtuple("_PinnedPoolKey", PoolKey._fields + ("key_pinned_ip",))  # type: ignore[misc]  # fields known at run time


class PinnedAdapter(HTTPAdapter):
    """Sends a PreparedRequest carrying `pinned_ip` to that address only."""

    def init_poolmanager(self, *args, **kw):
        super().init_poolmanager(*args, **kw)
        pm = self.poolmanager
        pm.pool_classes_by_scheme = {"http": _PinnedHTTPPool, "https": _PinnedHTTPSPool}
        pm.key_fn_by_scheme = {s: partial(_default_key_normalizer, _PinnedPoolKey) for s in ("http", "https")}

    def proxy_manager_for(self, proxy, **proxy_kwargs):  # pragma: no cover - never configured
        raise requests.exceptions.InvalidProxyURL("webhook deliveries never go through a proxy")

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        pool_kwargs["pinned_ip"] = getattr(request, "pinned_ip", None)
        return host_params, pool_kwargs


def http_session() -> requests.Session:
    """A session for deliveries: pinned connections, no proxies or netrc from
    the environment (HTTP(S)_PROXY would otherwise carry every POST through
    whatever proxy the process environment names)."""
    session = requests.Session()
    session.trust_env = False
    session.proxies = {}
    adapter = PinnedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _connect_failed(exc: Exception) -> bool:
    """True if `exc` happened before anything was sent (safe to try the next address)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError) and exc.args:
        return isinstance(getattr(exc.args[0], "reason", None), NewConnectionError)
    return False


def post_pinned(
    session: requests.Session, url: str, addresses: list[str], *, data: bytes, headers: dict, timeout: float
) -> requests.Response:
    """POST `data` to `url`, connecting only to `addresses` (already checked),
    trying the next one when a connection cannot be opened. Redirects are
    never followed: a 3xx could point the gateway anywhere (SSRF)."""
    last: Exception = requests.exceptions.ConnectionError(f"no checked address for {url}")
    for ip in addresses[:4]:
        prepared = session.prepare_request(requests.Request("POST", url.strip(), data=data, headers=headers))
        prepared.pinned_ip = ip  # type: ignore[attr-defined]  # requests has no slot for it; PinnedAdapter reads it
        try:
            return session.send(prepared, timeout=timeout, allow_redirects=False, proxies={})
        except requests.RequestException as exc:
            if not _connect_failed(exc):
                raise
            last = exc
    raise last
