"""Opt-outs: recipients who asked not to be messaged.

An inbound SMS whose whole text is an opt-out keyword (OPTOUT_KEYWORDS,
default STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT) adds its sender; an
opt-in keyword (OPTIN_KEYWORDS, default START, UNSTOP) removes it. Both are
idempotent, so a repeated event changes nothing. `POST /api/sms` refuses
opted-out recipients; admins view and edit the list here.

Postgres is the truth for which keywords have been applied, as for webhook
deliveries (pipeline/webhooks.py): the events leader reads the `messages` table past
a durable cursor of its own (`event_cursors` row `optouts.inbound_messages`)
and applies every inbound keyword in the transaction that moves the cursor
(pipeline/optouts.py). An inbound SMS whose MQTT copy never reached a leader
(lost with a leader's in-memory queue, published while the broker was down)
is still applied; MQTT only wakes the applier up early, so a STOP takes
effect within a second.
"""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify
from sqlalchemy import delete, func, select

from smsgw_api.core.errors import NotFound
from smsgw_api.core.extensions import db, emit
from smsgw_api.core.openapi import INT, PAGINATION_REF, STR, TIME, array, nullable, obj, ok, register
from smsgw_api.core.security import require_role
from smsgw_api.core.web import Page, audit, body, iso, query
from smsgw_api.domain.numbers import normalize_sender
from smsgw_api.domain.requests import AddOptOut, OptOutQuery
from smsgw_common.models import OptOut

bp = Blueprint("optouts", __name__)


def announce(change: dict) -> None:
    # Only admins manage the list, so only they are told about changes.
    emit("opt_out_update", change, min_role="admin")


def optout_json(row: OptOut) -> dict:
    return {
        "id": row.id,
        "number": row.number,
        "source": row.source,
        "note": row.note,
        "created_at": iso(row.created_at),
    }


@bp.get("/api/opt-outs")
@require_role("admin")
def list_optouts():
    args = query(OptOutQuery)
    page = Page(args)
    q = select(OptOut)
    count_q = select(func.count()).select_from(OptOut)
    term = args.q
    if term:
        like = f"%{normalize_sender(term)}%"
        q, count_q = q.where(OptOut.number.like(like)), count_q.where(OptOut.number.like(like))
    if page.before_id:
        q, total = q.where(OptOut.id < page.before_id), None
    else:
        q, total = q.offset(page.offset), db.session.scalar(count_q)
    rows = [optout_json(r) for r in db.session.scalars(q.order_by(OptOut.id.desc()).limit(page.per_page + 1))]
    return jsonify({"opt_outs": rows[: page.per_page], "pagination": page.meta(rows, total)})


@bp.post("/api/opt-outs")
@require_role("admin")
def add_optout():
    data = body(AddOptOut)
    number, note = data.number, data.note
    existing = db.session.scalar(select(OptOut).where(OptOut.number == number))
    if existing is not None:
        return jsonify({"message": f"{number} is already opted out", "opt_out": optout_json(existing)}), 200
    row = OptOut(number=number, source="admin", note=note)
    db.session.add(row)
    db.session.flush()
    audit("opt_out_add", f"{number} opted out by an admin")
    db.session.commit()
    announce({"number": number, "opted_out": True, "keyword": None})
    return jsonify({"message": f"{number} opted out", "opt_out": optout_json(row)}), 201


@bp.delete("/api/opt-outs/<path:number>")
@require_role("admin")
def remove_optout(number: str):
    number = normalize_sender(number)
    removed = db.session.execute(delete(OptOut).where(OptOut.number == number)).rowcount
    if not removed:
        raise NotFound(f"{number} is not on the opt-out list", code="opt_out_not_found")
    audit("opt_out_remove", f"{number} removed from the opt-out list by an admin")
    db.session.commit()
    announce({"number": number, "opted_out": False, "keyword": None})
    return jsonify({"message": f"{number} removed from the opt-out list"})


_OPT_OUT = {"id": INT, "number": STR, "source": nullable(STR), "note": nullable(STR), "created_at": TIME}


def init_app(app: Flask) -> None:
    if "optouts" in app.blueprints:
        return
    app.register_blueprint(bp)
    tags = ["opt-outs"]
    register(
        "/api/opt-outs",
        "GET",
        {
            "summary": "List opted-out numbers (admin)",
            "tags": tags,
            "responses": {"200": ok({"opt_outs": array(obj(_OPT_OUT)), "pagination": PAGINATION_REF})},
        },
        query=OptOutQuery,
    )
    register(
        "/api/opt-outs",
        "POST",
        {
            "summary": "Opt a number out (admin)",
            "tags": tags,
            "responses": {
                "201": ok({"message": STR, "opt_out": obj(_OPT_OUT)}, "Added"),
                "200": ok({"message": STR, "opt_out": obj(_OPT_OUT)}, "Already on the list"),
            },
        },
        body=AddOptOut,
    )
    register(
        "/api/opt-outs/<path:number>",
        "DELETE",
        {
            "summary": "Remove a number (admin)",
            "tags": tags,
            "responses": {"200": ok({"message": STR}), "404": {"description": "not on the list"}},
        },
    )
