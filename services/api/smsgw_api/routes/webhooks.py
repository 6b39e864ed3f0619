"""Webhook registrations and their delivery log: /api/webhooks (docs/webhooks.md).

Delivery itself is pipeline/webhooks.py; the URL rules core/safe_http.py.
"""

from __future__ import annotations

import secrets
import uuid

from flask import Blueprint, Flask, jsonify
from sqlalchemy import func, select

from smsgw_api.core.errors import NotFound, ValidationError
from smsgw_api.core.extensions import db
from smsgw_api.core.openapi import BOOL, INT, NO_BODY, PAGINATION_REF, STR, TIME, array, obj, ok, register, stored_row
from smsgw_api.core.rowjson import flag_unreadable, safe_iso, serialise_rows
from smsgw_api.core.safe_http import check_url
from smsgw_api.core.security import current_principal, require_role
from smsgw_api.core.web import Page, audit, body, query, settings
from smsgw_api.domain.requests import CreateWebhook, DeliveryQuery
from smsgw_api.domain.webhooks import TEST_EVENT
from smsgw_common.models import Webhook, WebhookDelivery, utcnow

bp = Blueprint("webhooks", __name__)


def hook_json(hook: Webhook) -> dict:
    out = {
        "id": hook.id,
        "user_id": hook.user_id,
        "url": hook.url,
        "events": list(hook.events or []),
        "is_active": hook.is_active,
        "failing": hook.failing,
        "consecutive_failures": hook.consecutive_failures,
        "created_at": safe_iso(hook.created_at),
    }
    return flag_unreadable(out, hook, ("created_at",))


# What a non-admin reads instead of a connection error: refused, timed out,
# unreachable and refused by the address rules must look alike, or the log
# tells a user which LAN hosts and ports exist (docs/webhooks.md).
NO_ANSWER = "no HTTP answer from the receiver (unreachable, timed out, or its address is not allowed)"


def visible_error(d: WebhookDelivery, admin: bool) -> str | None:
    if admin or d.last_error is None:
        return d.last_error
    if d.last_status_code is not None:
        return f"receiver answered HTTP {d.last_status_code}"
    if d.last_error == "webhook is disabled":
        return d.last_error
    return NO_ANSWER


def delivery_json(d: WebhookDelivery, admin: bool = False) -> dict:
    out = {
        "id": d.id,
        "webhook_id": d.webhook_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": safe_iso(d.next_attempt_at) if d.status == "pending" else None,
        "last_status_code": d.last_status_code,
        "last_error": visible_error(d, admin),
        "created_at": safe_iso(d.created_at),
        "delivered_at": safe_iso(d.delivered_at),
        "payload": d.payload,
    }
    return flag_unreadable(out, d, ("next_attempt_at", "created_at", "delivered_at"))


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
    return jsonify({"webhooks": serialise_rows(hooks, hook_json, lambda h: h.id)})


@bp.post("/api/webhooks")
@require_role("user")
def create_webhook():
    me = current_principal()
    data = body(CreateWebhook)
    s = settings().pipeline
    url, events, secret = data.url, list(data.events), data.secret
    reason = check_url(url, s.webhook_allow_private, resolve=False, allow_loopback=s.webhook_allow_loopback)
    if reason:
        raise ValidationError({"url": reason})
    secret = secret or "whsec_" + secrets.token_urlsafe(32)
    hook = Webhook(user_id=me.user_id, url=url.strip(), events=sorted(set(events)), secret=secret)
    db.session.add(hook)
    db.session.flush()
    audit("webhook_create", f"webhook {hook.id} -> {hook.url} for {', '.join(hook.events)}")
    db.session.commit()
    # The secret is shown once: it is needed to verify signatures.
    return jsonify({"message": "Webhook created", "id": hook.id, "webhook": hook_json(hook), "secret": secret}), 201


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
        webhook_id=hook.id,
        event_id=event_id,
        event_type=TEST_EVENT,
        payload={
            "id": event_id,
            "type": TEST_EVENT,
            "created_at": now.isoformat(),
            "data": {"webhook_id": hook.id, "message": "test delivery from the SMS gateway"},
        },
        next_attempt_at=now,
    )
    db.session.add(delivery)
    db.session.commit()
    return jsonify({"message": "Test delivery queued", "delivery_id": delivery.id, "event_id": event_id}), 202


@bp.get("/api/webhooks/<int:hook_id>/deliveries")
@require_role("user")
def list_deliveries(hook_id: int):
    hook = _visible_hook(hook_id)
    args = query(DeliveryQuery)
    page = Page(args)
    q = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    count_q = select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    status = args.status
    if status:
        q = q.where(WebhookDelivery.status == status)
        count_q = count_q.where(WebhookDelivery.status == status)
    if page.before_id:
        q = q.where(WebhookDelivery.id < page.before_id)
        total = None
    else:
        q = q.offset(page.offset)
        total = db.session.scalar(count_q)
    rows = db.session.scalars(q.order_by(WebhookDelivery.id.desc()).limit(page.per_page + 1)).all()
    admin = current_principal().is_admin
    items = serialise_rows(rows, lambda d: delivery_json(d, admin), lambda d: d.id)
    return jsonify({"deliveries": items[: page.per_page], "pagination": page.meta(items, total)})


_HOOK = {
    "id": INT,
    "user_id": INT,
    "url": STR,
    "events": array(STR),
    "is_active": BOOL,
    "failing": BOOL,
    "consecutive_failures": INT,
    "created_at": TIME,
}
_DELIVERY = {
    "id": INT,
    "webhook_id": INT,
    "event_id": STR,
    "event_type": STR,
    "status": STR,
    "attempts": INT,
    "created_at": TIME,
}
_NOT_FOUND = {"404": {"description": "no such webhook (or not yours)"}}


def init_app(app: Flask) -> None:
    if "webhooks" in app.blueprints:
        return
    app.register_blueprint(bp)
    tags = ["webhooks"]
    register(
        "/api/webhooks",
        "GET",
        {
            "summary": "List webhooks (own; admin: all)",
            "tags": tags,
            "responses": {"200": ok({"webhooks": array(stored_row(_HOOK))})},
        },
    )
    register(
        "/api/webhooks",
        "POST",
        {
            "summary": "Register a webhook; the signing secret is returned once",
            "tags": tags,
            "responses": {"201": ok({"message": STR, "id": INT, "webhook": obj(_HOOK), "secret": STR}, "Created")},
        },
        body=CreateWebhook,
    )
    register(
        "/api/webhooks/<int:hook_id>",
        "DELETE",
        {"summary": "Delete a webhook", "tags": tags, "responses": {"200": ok({"message": STR}), **_NOT_FOUND}},
    )
    register(
        "/api/webhooks/<int:hook_id>/test",
        "POST",
        {
            "summary": "Queue a signed test delivery",
            "tags": tags,
            "responses": {"202": ok({"message": STR, "delivery_id": INT, "event_id": STR}, "Queued"), **_NOT_FOUND},
        },
        body=NO_BODY,
    )
    register(
        "/api/webhooks/<int:hook_id>/deliveries",
        "GET",
        {
            "summary": "Delivery log, newest first",
            "tags": tags,
            "responses": {
                "200": ok({"deliveries": array(stored_row(_DELIVERY, [])), "pagination": PAGINATION_REF}),
                **_NOT_FOUND,
            },
        },
        query=DeliveryQuery,
    )
