"""Listings: GET /api/sms/inbox, /api/sms/outbox and the seed's /api/sms-status.

Newest first, bounded pages, filters: status, number, sim_card_id,
since/until (creation time), q (text contains). Each list keeps the seed's
key (`messages`, `statuses`) and adds `pagination`.
"""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import or_, select

from smsgw_api.core.errors import ValidationError
from smsgw_api.core.listings import paginate, time_filters
from smsgw_api.core.openapi import INT, PAGINATION_REF, STR, TIME, array, nullable, ok, register, stored_row
from smsgw_api.core.rowjson import flag_unreadable, safe_iso, safe_seed_time, serialise_rows
from smsgw_api.core.security import require_role
from smsgw_api.core.web import Page, query
from smsgw_api.domain.requests import MessageQuery
from smsgw_api.routes.sms import PRIORITY_NAMES
from smsgw_common.models import OUTBOUND_STATES, RECEIVED, Message

bp = Blueprint("messages", __name__)

M = Message.__table__.c
LIST_COLUMNS = (
    M.id,
    M.direction,
    M.sender,
    M.recipient,
    M.message,
    M.status,
    M.encoding,
    M.segments,
    M.sim_card_id,
    M.sender_sim,
    M.priority,
    M.send_at,
    M.timestamp,
    M.sent_at,
    M.delivered_at,
    M.error_code,
    M.error_text,
    M.batch_id,
    M.received_at,
)


def _number(value: str) -> str:
    value = value.strip().replace(" ", "")
    return value if value.startswith("+") else "+" + value


def _filters(stmt, number_columns, args: MessageQuery):
    if args.status:
        states = [s.strip() for s in args.status.split(",") if s.strip()]
        bad = [s for s in states if s not in OUTBOUND_STATES + (RECEIVED,)]
        if bad:
            raise ValidationError(
                {"status": f"unknown state {bad[0]!r}; one of {', '.join(OUTBOUND_STATES + (RECEIVED,))}"}
            )
        stmt = stmt.where(M.status.in_(states)) if len(states) > 1 else stmt.where(M.status == states[0])
    if args.number:
        number = _number(args.number)
        stmt = stmt.where(or_(*[c == number for c in number_columns]))
    if args.sim_card_id is not None:
        stmt = stmt.where(M.sim_card_id == args.sim_card_id)
    if args.q:
        q = args.q
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(M.message.ilike(f"%{escaped}%", escape="\\"))
    return time_filters(stmt, M.timestamp, args)


_ROW_TIMES = ("send_at", "sent_at", "delivered_at", "received_at")


def _row(r: dict) -> dict:
    flag_unreadable(r, dict(r), ("timestamp",) + _ROW_TIMES)
    r.update(safe_seed_time(r["timestamp"]))
    for key in _ROW_TIMES:
        r[key] = safe_iso(r[key])
    r["priority"] = PRIORITY_NAMES.get(r["priority"], r["priority"])
    r["message_id"] = r["id"]
    return r


def _status_row(r: dict) -> dict:
    flag_unreadable(r, dict(r), ("timestamp",))
    r.update(safe_seed_time(r["timestamp"]))
    r["message_id"] = r["id"]
    return r


def _id(r: dict):
    return r.get("id")


def _listing(direction: str, number_columns):
    args = query(MessageQuery)
    page = Page(args)
    stmt = _filters(select(*LIST_COLUMNS).where(M.direction == direction), number_columns, args)
    rows, meta = paginate(stmt, M.id, page, count=not args.q)
    return jsonify({"messages": serialise_rows(rows, _row, _id), "count": len(rows), "pagination": meta})


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
    args = query(MessageQuery)
    page = Page(args)
    stmt = _filters(
        select(
            M.id,
            M.sender.label("sender_number"),
            M.recipient.label("receiver_number"),
            M.message,
            M.status,
            M.timestamp,
            M.direction,
            M.sim_card_id,
            M.error_code,
            M.error_text,
        ),
        (M.sender, M.recipient),
        args,
    )
    rows, meta = paginate(stmt, M.id, page, count=not args.q)
    return jsonify({"statuses": serialise_rows(rows, _status_row, _id), "count": len(rows), "pagination": meta})


_ROW = {
    "id": INT,
    "message_id": INT,
    "direction": STR,
    "sender": nullable(STR),
    "recipient": nullable(STR),
    "message": STR,
    "status": STR,
    "sim_card_id": nullable(INT),
    "timestamp": nullable(INT),
    "created_at": TIME,
}
_STATUS_ROW = {
    "id": INT,
    "message_id": INT,
    "sender_number": nullable(STR),
    "receiver_number": nullable(STR),
    "message": STR,
    "status": STR,
    "timestamp": nullable(INT),
    "created_at": TIME,
}
for _path, _summary in (
    ("/api/sms/inbox", "Received messages, newest first (seed)"),
    ("/api/sms/outbox", "Sent and queued messages, newest first (seed)"),
):
    register(
        _path,
        "GET",
        {
            "summary": _summary,
            "tags": ["sms"],
            "responses": {"200": ok({"messages": array(stored_row(_ROW)), "count": INT, "pagination": PAGINATION_REF})},
        },
        query=MessageQuery,
    )
register(
    "/api/sms-status",
    "GET",
    {
        "summary": "Statuses of all messages (seed SDK)",
        "tags": ["sms"],
        "responses": {
            "200": ok({"statuses": array(stored_row(_STATUS_ROW)), "count": INT, "pagination": PAGINATION_REF})
        },
    },
    query=MessageQuery,
)
