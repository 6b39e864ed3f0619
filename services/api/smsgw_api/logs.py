"""GET /api/logs: the audit trail (seed fields plus actor, ip, request id)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request
from sqlalchemy import select

from smsgw_common.models import Log

from .listings import int_arg, paginate, time_filters
from .openapi import PAGINATION_PARAMS, query, register
from .security import require_role
from .web import Page, seed_time

bp = Blueprint("logs", __name__)
L = Log.__table__.c


@bp.get("/api/logs")
@require_role("viewer")
def list_logs():
    page = Page()
    stmt = select(L.id, L.action, L.details, L.status, L.timestamp, L.sender_sim, L.user_id, L.actor, L.ip,
                  L.request_id)
    if request.args.get("action"):
        stmt = stmt.where(L.action == request.args["action"])
    if request.args.get("status"):
        stmt = stmt.where(L.status == request.args["status"])
    user_id = int_arg("user_id")
    if user_id is not None:
        stmt = stmt.where(L.user_id == user_id)
    stmt = time_filters(stmt, L.timestamp)
    rows, meta = paginate(stmt, L.id, page)
    for r in rows:
        r.update(seed_time(r["timestamp"]))
    return jsonify({"logs": rows, "count": len(rows), "pagination": meta})


register("/api/logs", "GET", {
    "summary": "Audit trail, newest first (seed)", "tags": ["logs"],
    "parameters": PAGINATION_PARAMS + [query("action"), query("status"), query("user_id", "integer"),
                                       query("since"), query("until")]})
