"""Signed webhooks (docs/webhooks.md).

Each event is written as one `webhook_deliveries` row per subscribed hook in
the same transaction as the event's other effects, so a delivery survives any
restart; the dispatcher (leader process only) POSTs due rows and retries
failures with exponential backoff up to WEBHOOK_MAX_ATTEMPTS, after which the
delivery is `failed` and the hook is marked failing until one succeeds again.

The event id is derived from the event itself (message, state, time), so a
repeated MQTT delivery of one event maps to the same row (unique per hook)
and a receiver can de-duplicate retries by `X-SMSGW-Event-Id`.
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
import threading
import time
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Flask, current_app, jsonify, request
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert

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


def _ip_refusal(ip: ipaddress._BaseAddress, allow_private: bool) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    # Link-local covers cloud metadata endpoints (169.254.169.254): never a receiver.
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return f"{ip} is not a routable receiver address"
    if ip.is_private or ip.is_loopback:
        return None if allow_private else f"{ip} is a private address and WEBHOOK_ALLOW_PRIVATE is off"
    if ip.is_reserved:
        return f"{ip} is not a routable receiver address"
    return None


def check_url(url: str, allow_private: bool, resolve: bool) -> str | None:
    """Why `url` may not receive webhooks, or None if it may."""
    if not isinstance(url, str) or not url.strip():
        return "must be an http or https URL"
    if len(url) > 2000:
        return "must be at most 2000 characters"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials; authenticate the sender by its signature"
    host = parts.hostname
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        return _ip_refusal(literal, allow_private)
    if not resolve:
        if not allow_private and host.lower() in ("localhost", "localhost.localdomain"):
            return "localhost is private and WEBHOOK_ALLOW_PRIVATE is off"
        return None
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except OSError:
        return f"host {host} does not resolve"
    for info in infos:
        reason = _ip_refusal(ipaddress.ip_address(info[4][0]), allow_private)
        if reason:
            return reason
    return None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


# --- Queueing events (called by the event consumer, in its transaction) -------


def event_id_for(*parts) -> str:
    return str(uuid.uuid5(EVENT_NS, "|".join(str(p) for p in parts)))


def _enqueue(session, event_type: str, event_id: str, data: dict, at, owner_id: int | None) -> int:
    """One pending delivery per active hook subscribed to `event_type`.
    `owner_id` limits non-admin hooks to the owner's own messages."""
    rows = session.execute(
        select(Webhook.id, Webhook.user_id, User.role)
        .join(User, User.id == Webhook.user_id)
        .where(Webhook.is_active, User.is_active, Webhook.events.contains([event_type]))
    ).all()
    body = {"id": event_id, "type": event_type, "created_at": at.isoformat(), "data": data}
    values = [
        {"webhook_id": hook_id, "event_id": event_id, "event_type": event_type, "payload": body}
        for hook_id, user_id, role in rows
        if owner_id is None or role == "admin" or user_id == owner_id
    ]
    if not values:
        return 0
    session.execute(
        insert(WebhookDelivery).values(values).on_conflict_do_nothing(index_elements=["webhook_id", "event_id"])
    )
    return len(values)


def enqueue_message_event(session, ev, msg, status: dict) -> int:
    event_type = STATE_EVENTS.get(ev.state)
    if event_type is None:
        return 0
    data = {
        "message_id": ev.message_id,
        "status": ev.state,
        "direction": status["direction"],
        "sender": status["sender_number"],
        "recipient": status["receiver_number"],
        "message": status["message"],
        "sim_card_id": status["sim_card_id"],
        "modem_id": ev.modem_id,
        "segments": status["segments"],
        "error_code": ev.error_code,
        "error_text": ev.error_text,
        "at": ev.at.isoformat(),
    }
    owner = msg.user_id if (msg is not None and status["direction"] == "outbound") else None
    event_id = event_id_for("message", ev.message_id, ev.state, ev.at.isoformat())
    return _enqueue(session, event_type, event_id, data, ev.at, owner)


def enqueue_modem_event(session, modem_id: str, st, status: dict) -> int:
    event_type = "modem.online" if st.online else "modem.offline"
    # A worker's last will carries the time it connected, so two deaths of one
    # worker can share a timestamp; repeats are already filtered by the
    # consumer's previous-state check, so each change gets a fresh id.
    event_id = str(uuid.uuid4())
    return _enqueue(session, event_type, event_id, status, st.ts, None)


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
    thread_name = "webhook-dispatcher"

    def __init__(self, app: Flask):
        super().__init__()
        self.app = app
        self.settings = pipeline_settings(app)
        self._free = self.settings.webhook_concurrency
        self._lock = threading.Lock()
        self.http = requests.Session()

    def run(self) -> None:
        while not self.stopping.is_set():
            claimed = 0
            try:
                with self._lock:
                    free = self._free
                if free:
                    claimed = self._dispatch_due(free)
            except Exception:
                log.exception("webhook dispatch round failed")
            if not claimed or claimed < free:
                self._wake.wait(self.settings.webhook_poll_interval)
                self._wake.clear()

    def _dispatch_due(self, limit: int) -> int:
        with session_scope(db.state(self.app).sessionmaker) as session:
            rows = session.execute(
                _CLAIM, {"n": limit, "lease": self.settings.webhook_timeout + 30}
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
            error = "webhook is disabled"
        else:
            error = check_url(row["url"], s.webhook_allow_private, resolve=True)
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
                # No redirects: a 3xx could point the gateway anywhere (SSRF).
                resp = self.http.post(row["url"], data=body, headers=headers,
                                      timeout=s.webhook_timeout, allow_redirects=False)
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
    reason = check_url(url, s.webhook_allow_private, resolve=False)
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
