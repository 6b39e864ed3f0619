"""GET /api/logs: the audit trail (seed fields plus actor, ip, request id).
Who reads which lines: core/auditview.py."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import select

from smsgw_api.core.auditview import redact_log_row, visible_logs
from smsgw_api.core.listings import paginate, time_filters
from smsgw_api.core.openapi import INT, PAGINATION_REF, STR, TIME, array, nullable, ok, register, stored_row
from smsgw_api.core.rowjson import flag_unreadable, safe_seed_time, serialise_rows
from smsgw_api.core.security import Principal, current_principal, require_role
from smsgw_api.core.web import Page, query
from smsgw_api.domain.requests import LogQuery
from smsgw_common.models import Log

bp = Blueprint("logs", __name__)
L = Log.__table__.c


@bp.get("/api/logs")
@require_role("viewer")
def list_logs():
    args = query(LogQuery)
    page = Page(args)
    stmt = select(
        L.id, L.action, L.details, L.status, L.timestamp, L.sender_sim, L.user_id, L.actor, L.ip, L.request_id
    )
    if args.action:
        stmt = stmt.where(L.action == args.action)
    if args.status:
        stmt = stmt.where(L.status == args.status)
    if args.user_id is not None:
        stmt = stmt.where(L.user_id == args.user_id)
    stmt = time_filters(stmt, L.timestamp, args)
    me = current_principal()
    rows, meta = paginate(visible_logs(stmt, L, me), L.id, page)
    lines = serialise_rows(rows, lambda r: _log_row(r, me), lambda r: r.get("id"))
    return jsonify({"logs": lines, "count": len(rows), "pagination": meta})


def _log_row(r: dict, me: Principal) -> dict:
    flag_unreadable(r, dict(r), ("timestamp",))
    r.update(safe_seed_time(r["timestamp"]))
    return redact_log_row(r, me)


_LOG = {
    "id": INT,
    "action": STR,
    "details": nullable(STR),
    "status": nullable(STR),
    "timestamp": nullable(INT),
    "created_at": TIME,
    "sender_sim": nullable(STR),
    "user_id": nullable(INT),
    "actor": nullable(STR),
    "ip": nullable(STR),
    "request_id": nullable(STR),
}
register(
    "/api/logs",
    "GET",
    {
        "summary": "Audit trail, newest first (seed)",
        "tags": ["logs"],
        "responses": {"200": ok({"logs": array(stored_row(_LOG)), "count": INT, "pagination": PAGINATION_REF})},
    },
    query=LogQuery,
)
