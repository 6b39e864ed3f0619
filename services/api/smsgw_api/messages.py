"""Listings: GET /api/sms/inbox, /api/sms/outbox and the seed's /api/sms-status.

Newest first, bounded pages, filters: status, number, sim_card_id,
since/until (creation time), q (text contains). Each list keeps the seed's
key (`messages`, `statuses`) and adds `pagination`.
"""
from __future__ import annotations

from flask import Blueprint, jsonify, request
from sqlalchemy import or_, select

from smsgw_common.models import OUTBOUND_STATES, RECEIVED, Message

from .errors import ValidationError
from .listings import int_arg, paginate, time_filters
from .openapi import PAGINATION_PARAMS, query, register
from .security import require_role
from .sms import PRIORITY_NAMES
from .web import Page, iso, seed_time

bp = Blueprint("messages", __name__)

M = Message.__table__.c
LIST_COLUMNS = (M.id, M.direction, M.sender, M.recipient, M.message, M.status, M.encoding, M.segments,
                M.sim_card_id, M.sender_sim, M.priority, M.send_at, M.timestamp, M.sent_at, M.delivered_at,
                M.error_code, M.error_text, M.batch_id, M.received_at)


def _number(value: str) -> str:
    value = value.strip().replace(" ", "")
    return value if value.startswith("+") else "+" + value


def _filters(stmt, number_columns):
    args = request.args
    if args.get("status"):
        states = [s.strip() for s in args["status"].split(",") if s.strip()]
        bad = [s for s in states if s not in OUTBOUND_STATES + (RECEIVED,)]
        if bad:
            raise ValidationError({"status": f"unknown state {bad[0]!r}; one of {', '.join(OUTBOUND_STATES + (RECEIVED,))}"})
        stmt = stmt.where(M.status.in_(states)) if len(states) > 1 else stmt.where(M.status == states[0])
    if args.get("number"):
        number = _number(args["number"])
        stmt = stmt.where(or_(*[c == number for c in number_columns]))
    sim = int_arg("sim_card_id")
    if sim is not None:
        stmt = stmt.where(M.sim_card_id == sim)
    if args.get("q"):
        q = args["q"]
        if len(q) > 200:
            raise ValidationError({"q": "at most 200 characters"})
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(M.message.ilike(f"%{escaped}%", escape="\\"))
    return time_filters(stmt, M.timestamp)


def _row(r: dict) -> dict:
    r.update(seed_time(r["timestamp"]))
    for key in ("send_at", "sent_at", "delivered_at", "received_at"):
        r[key] = iso(r[key])
    r["priority"] = PRIORITY_NAMES.get(r["priority"], r["priority"])
    r["message_id"] = r["id"]
    return r


def _listing(direction: str, number_columns):
    page = Page()
    stmt = _filters(select(*LIST_COLUMNS).where(M.direction == direction), number_columns)
    rows, meta = paginate(stmt, M.id, page, count=not request.args.get("q"))
    return jsonify({"messages": [_row(r) for r in rows], "count": len(rows), "pagination": meta})


@bp.get("/api/sms/inbox")
@require_role("viewer")
def inbox():
    return _listing("inbound", (M.sender,))


@bp.get("/api/sms/outbox")
@require_role("viewer")
def outbox():
    return _listing("outbound", (M.recipient,))


@bp.get("/api/sms-status")
@require_role("viewer")
def sms_status():
    page = Page()
    stmt = _filters(
        select(M.id, M.sender.label("sender_number"), M.recipient.label("receiver_number"), M.message, M.status,
               M.timestamp, M.direction, M.sim_card_id, M.error_code, M.error_text),
        (M.sender, M.recipient),
    )
    rows, meta = paginate(stmt, M.id, page, count=not request.args.get("q"))
    for r in rows:
        r.update(seed_time(r["timestamp"]))
        r["message_id"] = r["id"]
    return jsonify({"statuses": rows, "count": len(rows), "pagination": meta})


_FILTERS = PAGINATION_PARAMS + [
    query("status", description="state, or several separated by commas"),
    query("number", description="the other party's number"),
    query("sim_card_id", "integer"),
    query("since", description="created at or after (ISO 8601 or Unix time)"),
    query("until", description="created before (ISO 8601 or Unix time)"),
    query("q", description="text contains (case-insensitive)"),
]
register("/api/sms/inbox", "GET", {"summary": "Received messages, newest first (seed)", "tags": ["sms"],
                                   "parameters": _FILTERS})
register("/api/sms/outbox", "GET", {"summary": "Sent and queued messages, newest first (seed)", "tags": ["sms"],
                                    "parameters": _FILTERS})
register("/api/sms-status", "GET", {"summary": "Statuses of all messages (seed SDK)", "tags": ["sms"],
                                    "parameters": _FILTERS})
