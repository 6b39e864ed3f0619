"""Signed webhooks (docs/webhooks.md).

Postgres is the truth for what must be delivered. Message events
(`message.*`) are derived from the `message_events` table, the history every
state change is written to in the transaction that makes it: the dispatcher
(events leader only) reads the events after a durable cursor
(`event_cursors`), writes one `webhook_deliveries` row per subscribed hook and
advances the cursor in the same transaction. The insert is idempotent per
(hook, event), so a replay of the history never duplicates a delivery, and an
event is delivered even if its MQTT copy never reached a leader: MQTT only
wakes the dispatcher up early. Modem events (`modem.*`) have no history table;
the leader derives them from the modems' retained MQTT state (realtime.py).

Due rows are POSTed and failures retried with exponential backoff up to
WEBHOOK_MAX_ATTEMPTS, after which the delivery is `failed` and the hook is
marked failing until one succeeds again.

The event id is derived from the event itself (message, state, time of the
history row), so a receiver can de-duplicate retries and replays by
`X-SMSGW-Event-Id`.

Receivers are checked against SSRF rules at registration and again at every
delivery; the delivery connects to exactly the address that was checked (no
second DNS lookup), ignores proxy settings from the environment and never
follows redirects.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import sys
import threading
import time
import uuid
from collections import namedtuple
from datetime import timedelta, timezone
from functools import partial
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Flask, current_app, jsonify, request
from requests.adapters import HTTPAdapter
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.poolmanager import PoolKey, _default_key_normalizer
from urllib3.util import connection as urllib3_connection

from smsgw_common.db import session_scope
from smsgw_common.models import (
    DELIVERED, EXPIRED, FAILED, RECEIVED, SENT, User, Webhook, WebhookDelivery, utcnow,
)

from .errors import NotFound, ValidationError
from .extensions import db
from .openapi import PAGINATION_PARAMS, json_body as body_spec, query, register
from .realtime import WakeableLoop, pipeline_settings
from .security import current_principal, require_role
from .web import Page, audit, iso, json_body

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)

STATE_EVENTS = {
    RECEIVED: "message.received",
    SENT: "message.sent",
    DELIVERED: "message.delivered",
    FAILED: "message.failed",
    EXPIRED: "message.expired",
}
EVENT_TYPES = (
    "message.received", "message.sent", "message.delivered", "message.failed", "message.expired",
    "modem.offline", "modem.online",
)
TEST_EVENT = "webhook.test"
EVENT_NS = uuid.UUID("5b0d7a52-64c1-4b7e-9a43-5e0f1d8e2c11")
USER_AGENT = "smsgw-webhooks/1"


# --- URL safety ---------------------------------------------------------------

# WEBHOOK_ALLOW_PRIVATE covers exactly these: the LAN ranges an edge box's
# receivers live in. Loopback needs WEBHOOK_ALLOW_LOOPBACK; link-local (cloud
# metadata), CGNAT, multicast, unspecified and other special ranges are never
# receivers.
LAN_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT
NAT64_WKP = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: DNS64 answers for IPv4-only hosts
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use translation prefix
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d

_NOT_ROUTABLE = "is not a routable receiver address"


def _ip_refusal(ip: ipaddress._BaseAddress, allow_private: bool, allow_loopback: bool = False) -> str | None:
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
    if ip in SHARED_ADDRESS_SPACE:
        return f"{ip} is in the shared (carrier-grade NAT) range 100.64.0.0/10 and {_NOT_ROUTABLE}"
    if any(ip in net for net in LAN_NETWORKS):
        return None if allow_private else f"{ip} is a private address and WEBHOOK_ALLOW_PRIVATE is off"
    if not ip.is_global:
        return f"{ip} {_NOT_ROUTABLE}"
    return None


def _literal_ip(host: str) -> ipaddress._BaseAddress | None:
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


def _parse(url) -> tuple[str | None, object]:
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


def resolve_url(url: str, allow_private: bool, allow_loopback: bool = False,
                resolve: bool = True) -> tuple[str | None, list[str]]:
    """(why `url` may not receive webhooks or None, the checked addresses to
    connect to). Every address the name resolves to must pass: a name that
    mixes a public and an internal address is refused."""
    reason, parts = _parse(url)
    if reason:
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
                (self.pinned_ip, self.port), self.timeout,
                source_address=self.source_address, socket_options=self.socket_options)
        except socket.timeout as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} ({self.pinned_ip}) timed out. (connect timeout={self.timeout})"
            ) from exc
        except OSError as exc:
            raise NewConnectionError(
                self, f"Failed to establish a new connection to {self.pinned_ip}: {exc}") from exc
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
_PinnedPoolKey = namedtuple("_PinnedPoolKey", PoolKey._fields + ("key_pinned_ip",))


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


def post_pinned(session: requests.Session, url: str, addresses: list[str], *, data: bytes, headers: dict,
                timeout: float) -> requests.Response:
    """POST `data` to `url`, connecting only to `addresses` (already checked),
    trying the next one when a connection cannot be opened. Redirects are
    never followed: a 3xx could point the gateway anywhere (SSRF)."""
    if not addresses:
        raise requests.exceptions.ConnectionError(f"no checked address for {url}")
    last: Exception | None = None
    for ip in addresses[:4]:
        prepared = session.prepare_request(requests.Request("POST", url.strip(), data=data, headers=headers))
        prepared.pinned_ip = ip
        try:
            return session.send(prepared, timeout=timeout, allow_redirects=False, proxies={})
        except requests.RequestException as exc:
            if not _connect_failed(exc):
                raise
            last = exc
    raise last


# --- Queueing events ------------------------------------------------------------


def event_id_for(*parts) -> str:
    return str(uuid.uuid5(EVENT_NS, "|".join(str(p) for p in parts)))


def message_event_id(message_id: int, state: str, at) -> str:
    """The id receivers de-duplicate by: the history row's message, state and
    time (normalised to UTC, so it does not depend on a session's time zone)."""
    return event_id_for("message", message_id, state, at.astimezone(timezone.utc).isoformat())


def _active_hooks(session) -> list:
    return session.execute(
        select(Webhook.id, Webhook.user_id, User.role, Webhook.events)
        .join(User, User.id == Webhook.user_id)
        .where(Webhook.is_active, User.is_active)
    ).all()


def _delivery_values(hooks, event_type: str, event_id: str, data: dict, at, owner_id: int | None) -> list[dict]:
    """One pending delivery per hook subscribed to `event_type`; `owner_id`
    limits non-admin hooks to the owner's own messages."""
    body = {"id": event_id, "type": event_type, "created_at": at.isoformat(), "data": data}
    return [
        {"webhook_id": hook_id, "event_id": event_id, "event_type": event_type, "payload": body}
        for hook_id, user_id, role, events in hooks
        if event_type in (events or []) and (owner_id is None or role == "admin" or user_id == owner_id)
    ]


def _insert_deliveries(session, values: list[dict]) -> int:
    """Idempotent: (hook, event) is unique, so a replay inserts nothing."""
    if not values:
        return 0
    inserted = session.execute(
        insert(WebhookDelivery).values(values)
        .on_conflict_do_nothing(index_elements=["webhook_id", "event_id"])
        .returning(WebhookDelivery.id)
    ).all()
    return len(inserted)


def _enqueue(session, event_type: str, event_id: str, data: dict, at, owner_id: int | None) -> int:
    values = _delivery_values(_active_hooks(session), event_type, event_id, data, at, owner_id)
    return _insert_deliveries(session, values)


def message_event_data(row) -> dict:
    """The `data` of a message.* delivery, from a history row joined with its message."""
    outbound = row.direction == "outbound"
    return {
        "message_id": row.message_id,
        "status": row.state,
        "direction": row.direction,
        "sender": (row.sender_sim or row.sender) if outbound else row.sender,
        "recipient": row.recipient,
        "message": row.message,
        "sim_card_id": row.sim_card_id,
        "modem_id": row.modem_id,
        "segments": row.segments,
        "error_code": row.error_code,
        "error_text": row.error_text,
        "at": row.at.astimezone(timezone.utc).isoformat(),
    }


def message_event_deliveries(hooks, row) -> list[dict]:
    event_type = STATE_EVENTS.get(row.state)
    if event_type is None or row.direction is None:
        return []
    owner = row.user_id if row.direction == "outbound" else None
    at = row.at.astimezone(timezone.utc)
    return _delivery_values(hooks, event_type, message_event_id(row.message_id, row.state, row.at),
                            message_event_data(row), at, owner)


def enqueue_modem_event(session, modem_id: str, st, status: dict) -> int:
    event_type = "modem.online" if st.online else "modem.offline"
    # A worker's last will carries the time it connected, so two deaths of one
    # worker can share a timestamp; repeats are already filtered by the
    # consumer's previous-state check, so each change gets a fresh id.
    event_id = str(uuid.uuid4())
    return _enqueue(session, event_type, event_id, status, st.ts, None)


# --- Deriving message deliveries from the history (leader only) ----------------

CURSOR_NAME = "webhooks.message_events"

_EVENT_COLUMNS = """
    SELECT e.id, e.message_id, e.state, e.at, e.error_code, e.error_text,
           m.direction, m.sender, m.recipient, m.message, m.sim_card_id, m.sender_sim, m.segments,
           m.user_id, s.modem_id
    FROM message_events e
    JOIN messages m ON m.id = e.message_id
    LEFT JOIN sim_cards s ON s.id = m.sim_card_id
"""


class EventDeriver:
    """Turns `message_events` rows into webhook deliveries, past a durable cursor.

    The cursor (`event_cursors.last_id`) says: every event up to here has its
    deliveries. It moves in the transaction that inserts them, under a row
    lock, so two leaders overlapping at a handover serialise; the insert is
    idempotent, so moving it back (or losing this process's memory) replays
    without duplicates.

    Ids come from a sequence, and concurrent writers can commit out of order:
    id 11 may be visible while id 10 is still being written. The events after
    such a gap are handled at once (latency does not wait), but the cursor
    stays before the gap until the row shows up or `gap_settle` seconds pass
    (a rolled-back insert leaves a gap forever; writers' transactions are
    short). Gaps are remembered in memory only: a new leader re-reads from
    the cursor, which is safe.

    Other consumers of a history table reuse it by overriding `cursor_name`,
    `start_sql` (where a missing cursor starts), `rows_sql` (the rows, aliased
    `e`, with an `id` column) and `handle()` (optouts.py does).
    """

    cursor_name = CURSOR_NAME
    start_sql = "SELECT coalesce(max(id), 0) FROM message_events"
    rows_sql = _EVENT_COLUMNS

    def __init__(self, sessionmaker, batch: int = 500, gap_settle: float = 60.0, max_gaps: int = 200):
        self.sessionmaker = sessionmaker
        self.batch = batch
        self.gap_settle = gap_settle
        self.max_gaps = max_gaps
        self._cursor: int | None = None
        self._scanned_to = 0
        self._gaps: list[tuple[int, int, float]] = []  # (first id, last id, first seen)

    def _lock_cursor(self, session) -> int:
        last = session.execute(text("SELECT last_id FROM event_cursors WHERE name = :n FOR UPDATE"),
                               {"n": self.cursor_name}).scalar()
        if last is None:
            # The migration creates the row; if it was removed, start at the
            # present instead of re-delivering all of history.
            session.execute(text(
                f"INSERT INTO event_cursors (name, last_id) VALUES (:n, ({self.start_sql})) "
                "ON CONFLICT (name) DO NOTHING"),
                {"n": self.cursor_name})
            last = session.execute(text("SELECT last_id FROM event_cursors WHERE name = :n FOR UPDATE"),
                                   {"n": self.cursor_name}).scalar()
            log.warning("event cursor %s was missing; starting at id %s", self.cursor_name, last)
        return int(last)

    def run_once(self) -> tuple[int, bool]:
        """(deliveries inserted, whether more events are waiting)."""
        now = time.monotonic()
        with session_scope(self.sessionmaker) as session:
            cursor = self._lock_cursor(session)
            if cursor != self._cursor:
                # First round, another leader moved it, or an operator rewound it.
                scanned_to, gaps = cursor, []
            else:
                scanned_to, gaps = self._scanned_to, list(self._gaps)
            rows = []
            if gaps:
                clauses = " OR ".join(f"e.id BETWEEN :lo{i} AND :hi{i}" for i in range(len(gaps)))
                params = {}
                for i, (lo, hi, _) in enumerate(gaps):
                    params[f"lo{i}"], params[f"hi{i}"] = lo, hi
                late = session.execute(text(self.rows_sql + f" WHERE {clauses} ORDER BY e.id"), params).all()
                gaps = _subtract(gaps, [r.id for r in late])
                rows.extend(late)
            new = session.execute(text(self.rows_sql + " WHERE e.id > :after ORDER BY e.id LIMIT :n"),
                                  {"after": scanned_to, "n": self.batch}).all()
            expected = scanned_to + 1
            for r in new:
                if r.id > expected:
                    gaps.append((expected, r.id - 1, now))
                expected = r.id + 1
            if new:
                scanned_to = new[-1].id
            rows.extend(new)
            gaps = [g for g in gaps if now - g[2] < self.gap_settle][-self.max_gaps:]
            new_cursor = (gaps[0][0] - 1) if gaps else scanned_to
            inserted = self.handle(session, rows) if rows else 0
            if new_cursor != cursor:
                session.execute(text("UPDATE event_cursors SET last_id = :c, updated_at = now() WHERE name = :n"),
                                {"c": new_cursor, "n": self.cursor_name})
        # Committed: only now does this process believe it.
        self._cursor, self._scanned_to, self._gaps = new_cursor, scanned_to, gaps
        return inserted, len(new) >= self.batch

    def handle(self, session, rows) -> int:
        """Act on `rows` (new, or late after a gap) in the cursor's
        transaction, idempotently; returns how much it did."""
        hooks = _active_hooks(session)
        if not hooks:
            return 0
        values = [v for r in rows for v in message_event_deliveries(hooks, r)]
        return _insert_deliveries(session, values)

    def forget(self) -> None:
        self._cursor = None

    def run_round(self, what: str) -> bool:
        """One `run_once` for a background loop: True when more rows wait. A
        failure is logged and the in-memory position dropped, so the next
        round starts again from the committed cursor."""
        try:
            return self.run_once()[1]
        except Exception:
            self.forget()
            log.exception("%s failed", what)
            return False


def _subtract(gaps: list[tuple[int, int, float]], ids: list[int]) -> list[tuple[int, int, float]]:
    """The gap ranges without `ids` (ids that showed up late), in order."""
    out = []
    found = sorted(set(ids))
    for lo, hi, seen in gaps:
        start = lo
        for i in found:
            if i < start or i > hi:
                continue
            if i > start:
                out.append((start, i - 1, seen))
            start = i + 1
        if start <= hi:
            out.append((start, hi, seen))
    return sorted(out)


# --- The dispatcher (leader only) ---------------------------------------------


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Delay before attempt `attempts + 1`: base, 2*base, 4*base ... with
    +-10% jitter so that a receiver coming back is not hit by a thundering herd."""
    delay = min(cap, base * (2 ** max(attempts - 1, 0)))
    return delay * random.uniform(0.9, 1.1)


_CLAIM = text(
    """
    UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => :lease)
    FROM webhooks w
    WHERE d.webhook_id = w.id AND d.id IN (
        SELECT id FROM webhook_deliveries
        WHERE status = 'pending' AND next_attempt_at <= now()
        ORDER BY next_attempt_at, id
        LIMIT :n
        FOR UPDATE SKIP LOCKED)
    RETURNING d.id, d.event_id, d.event_type, d.payload, d.attempts, w.id AS hook_id, w.url, w.secret,
              w.is_active
    """
)


class Dispatcher(WakeableLoop):
    """Derives message deliveries from the history, then POSTs due rows.

    `wake()` (an MQTT event arrived, a delivery finished) starts a round at
    once; without one a round runs every WEBHOOK_POLL_SECONDS, so an event
    whose MQTT copy was lost waits at most that long.
    """

    thread_name = "webhook-dispatcher"

    def __init__(self, app: Flask):
        super().__init__()
        self.app = app
        self.settings = pipeline_settings(app)
        self._free = self.settings.webhook_concurrency
        self._lock = threading.Lock()
        self.http = http_session()
        self.deriver = EventDeriver(db.state(app).sessionmaker)

    def run(self) -> None:
        while not self.stopping.is_set():
            # Cleared before the round: a wake-up during it starts the next one.
            self._wake.clear()
            more = self.deriver.run_round("deriving webhook deliveries")
            try:
                with self._lock:
                    free = self._free
                if free:
                    claimed = self._dispatch_due(free)
                    more = more or claimed >= free
            except Exception:
                log.exception("webhook dispatch round failed")
            if not more:
                self._wake.wait(self.settings.webhook_poll_interval)

    def _dispatch_due(self, limit: int) -> int:
        with session_scope(db.state(self.app).sessionmaker) as session:
            rows = session.execute(
                _CLAIM, {"n": limit, "lease": self.settings.webhook_timeout * 4 + 30}
            ).mappings().all()
        for row in rows:
            with self._lock:
                self._free -= 1
            threading.Thread(target=self._deliver_guarded, args=(dict(row),), daemon=True).start()
        return len(rows)

    def _deliver_guarded(self, row: dict) -> None:
        try:
            self.deliver(row)
        except Exception:
            log.exception("webhook delivery %s crashed", row["id"])
        finally:
            with self._lock:
                self._free += 1
            self._wake.set()

    def deliver(self, row: dict) -> None:
        s = self.settings
        status_code, error = None, None
        if not row["is_active"]:
            error, addresses = "webhook is disabled", []
        else:
            # Resolve once, check every address, connect only to those.
            error, addresses = resolve_url(row["url"], s.webhook_allow_private, s.webhook_allow_loopback)
        if error is None:
            body = json.dumps(row["payload"], separators=(",", ":"), ensure_ascii=False).encode()
            ts = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "X-SMSGW-Event-Id": row["event_id"],
                "X-SMSGW-Event": row["event_type"],
                "X-SMSGW-Timestamp": ts,
                "X-SMSGW-Signature": sign(row["secret"], ts, body),
                "X-SMSGW-Delivery-Attempt": str(row["attempts"] + 1),
            }
            try:
                resp = post_pinned(self.http, row["url"], addresses, data=body, headers=headers,
                                   timeout=s.webhook_timeout)
                status_code = resp.status_code
                resp.close()
                if not 200 <= status_code < 300:
                    error = f"receiver answered HTTP {status_code}"
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {str(exc)[:300]}"
        self._record(row, status_code, error)

    def _record(self, row: dict, status_code: int | None, error: str | None) -> None:
        s = self.settings
        attempts = row["attempts"] + 1
        now = utcnow()
        with session_scope(db.state(self.app).sessionmaker) as session:
            delivery = session.get(WebhookDelivery, row["id"], with_for_update=True)
            hook = session.get(Webhook, row["hook_id"], with_for_update=True)
            if delivery is None or hook is None:
                return  # the hook was deleted meanwhile
            delivery.attempts = attempts
            delivery.last_status_code = status_code
            if error is None:
                delivery.status, delivery.delivered_at, delivery.last_error = "delivered", now, None
                hook.consecutive_failures, hook.failing = 0, False
            else:
                delivery.last_error = error
                hook.consecutive_failures = (hook.consecutive_failures or 0) + 1
                if attempts >= s.webhook_max_attempts or not row["is_active"]:
                    delivery.status = "failed"
                    hook.failing = True
                    log.warning("webhook delivery gave up", extra={
                        "webhook_id": hook.id, "delivery_id": delivery.id, "error": error})
                else:
                    delay = backoff_seconds(attempts, s.webhook_backoff_base, s.webhook_backoff_max)
                    delivery.next_attempt_at = now + timedelta(seconds=delay)


# --- Routes ---------------------------------------------------------------------


def hook_json(hook: Webhook) -> dict:
    return {
        "id": hook.id,
        "user_id": hook.user_id,
        "url": hook.url,
        "events": list(hook.events or []),
        "is_active": hook.is_active,
        "failing": hook.failing,
        "consecutive_failures": hook.consecutive_failures,
        "created_at": iso(hook.created_at),
    }


def delivery_json(d: WebhookDelivery) -> dict:
    return {
        "id": d.id,
        "webhook_id": d.webhook_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": iso(d.next_attempt_at) if d.status == "pending" else None,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "created_at": iso(d.created_at),
        "delivered_at": iso(d.delivered_at),
        "payload": d.payload,
    }


def _visible_hook(hook_id: int) -> Webhook:
    me = current_principal()
    hook = db.session.get(Webhook, hook_id)
    if hook is None or (not me.is_admin and hook.user_id != me.user_id):
        raise NotFound(f"webhook {hook_id} not found", code="webhook_not_found")
    return hook


@bp.get("/api/webhooks")
@require_role("user")
def list_webhooks():
    me = current_principal()
    q = select(Webhook).order_by(Webhook.id)
    if not me.is_admin:
        q = q.where(Webhook.user_id == me.user_id)
    hooks = db.session.scalars(q).all()
    return jsonify({"webhooks": [hook_json(h) for h in hooks]})


@bp.post("/api/webhooks")
@require_role("user")
def create_webhook():
    me = current_principal()
    data = json_body()
    s = pipeline_settings(current_app)
    fields = {}
    url = data.get("url")
    reason = check_url(url, s.webhook_allow_private, resolve=False, allow_loopback=s.webhook_allow_loopback)
    if reason:
        fields["url"] = reason
    events = data.get("events", list(EVENT_TYPES))
    if (not isinstance(events, list) or not events
            or not all(isinstance(e, str) for e in events)):
        fields["events"] = f"must be a non-empty list of: {', '.join(EVENT_TYPES)}"
    else:
        unknown = [e for e in events if e not in EVENT_TYPES]
        if unknown:
            fields["events"] = f"unknown event(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}"
    secret = data.get("secret")
    if secret is not None and (not isinstance(secret, str) or not 16 <= len(secret) <= 128):
        fields["secret"] = "must be a string of 16 to 128 characters (or leave it out to get one generated)"
    if fields:
        raise ValidationError(fields)
    secret = secret or "whsec_" + secrets.token_urlsafe(32)
    hook = Webhook(user_id=me.user_id, url=url.strip(), events=sorted(set(events)), secret=secret)
    db.session.add(hook)
    db.session.flush()
    audit("webhook_create", f"webhook {hook.id} -> {hook.url} for {', '.join(hook.events)}")
    db.session.commit()
    # The secret is shown once: it is needed to verify signatures.
    return jsonify({"message": "Webhook created", "id": hook.id, "webhook": hook_json(hook),
                    "secret": secret}), 201


@bp.delete("/api/webhooks/<int:hook_id>")
@require_role("user")
def delete_webhook(hook_id: int):
    hook = _visible_hook(hook_id)
    audit("webhook_delete", f"webhook {hook.id} -> {hook.url}")
    db.session.delete(hook)
    db.session.commit()
    return jsonify({"message": f"Webhook {hook_id} deleted"})


@bp.post("/api/webhooks/<int:hook_id>/test")
@require_role("user")
def test_webhook(hook_id: int):
    hook = _visible_hook(hook_id)
    now = utcnow()
    event_id = str(uuid.uuid4())
    delivery = WebhookDelivery(
        webhook_id=hook.id, event_id=event_id, event_type=TEST_EVENT,
        payload={"id": event_id, "type": TEST_EVENT, "created_at": now.isoformat(),
                 "data": {"webhook_id": hook.id, "message": "test delivery from the SMS gateway"}},
        next_attempt_at=now,
    )
    db.session.add(delivery)
    db.session.commit()
    return jsonify({"message": "Test delivery queued", "delivery_id": delivery.id, "event_id": event_id}), 202


@bp.get("/api/webhooks/<int:hook_id>/deliveries")
@require_role("user")
def list_deliveries(hook_id: int):
    hook = _visible_hook(hook_id)
    page = Page()
    q = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    count_q = select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    status = request.args.get("status")
    if status:
        if status not in ("pending", "delivered", "failed"):
            raise ValidationError({"status": "must be pending, delivered or failed"})
        q = q.where(WebhookDelivery.status == status)
        count_q = count_q.where(WebhookDelivery.status == status)
    if page.before_id:
        q = q.where(WebhookDelivery.id < page.before_id)
        total = None
    else:
        q = q.offset(page.offset)
        total = db.session.scalar(count_q)
    rows = db.session.scalars(q.order_by(WebhookDelivery.id.desc()).limit(page.per_page + 1)).all()
    items = [delivery_json(d) for d in rows]
    return jsonify({"deliveries": items[: page.per_page], "pagination": page.meta(items, total)})


_HOOK_SCHEMA = {
    "type": "object",
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "description": "http(s) URL, no credentials"},
        "events": {"type": "array", "items": {"type": "string", "enum": list(EVENT_TYPES)}},
        "secret": {"type": "string", "minLength": 16, "maxLength": 128},
    },
}


def init_app(app: Flask) -> None:
    if "webhooks" in app.blueprints:
        return
    app.register_blueprint(bp)
    tags = ["webhooks"]
    register("/api/webhooks", "GET", {"summary": "List webhooks (own; admin: all)", "tags": tags})
    register("/api/webhooks", "POST", {
        "summary": "Register a webhook; the signing secret is returned once", "tags": tags,
        "requestBody": body_spec(_HOOK_SCHEMA), "responses": {"201": {"description": "Created"}}})
    register("/api/webhooks/<int:hook_id>", "DELETE", {"summary": "Delete a webhook", "tags": tags})
    register("/api/webhooks/<int:hook_id>/test", "POST", {
        "summary": "Queue a signed test delivery", "tags": tags,
        "responses": {"202": {"description": "Queued"}}})
    register("/api/webhooks/<int:hook_id>/deliveries", "GET", {
        "summary": "Delivery log, newest first", "tags": tags,
        "parameters": PAGINATION_PARAMS + [query("status", description="pending | delivered | failed")]})
