"""SIM cards (seed shapes): GET|POST /api/sim-cards, PUT|DELETE /api/sim-cards/<id>.

Anyone may list; only an admin changes. Workers register SIMs they see by
ICCID; an admin adds or edits numbers, labels and sending limits.
"""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import func, select

from smsgw_api.core.errors import ApiError, Conflict, NotFound, ValidationError
from smsgw_api.core.extensions import db
from smsgw_api.core.openapi import BOOL, INT, STR, TIME, array, nullable, obj, ok, register
from smsgw_api.core.security import require_role
from smsgw_api.core.web import audit, body, iso
from smsgw_api.domain.capacity import Usage, sim_of
from smsgw_api.domain.requests import SimCardBody
from smsgw_api.domain.routing import no_sim_error
from smsgw_api.domain.seed_ids import imported_sim
from smsgw_api.routes.deps import router
from smsgw_common.models import QUEUED, SENDING, Message, Modem, SimCard

bp = Blueprint("simcards", __name__)

SIM_STATUSES = ("active", "inactive")
LIMITS = ("limit_per_minute", "limit_per_day", "limit_per_month")


def sim_dict(sim: SimCard, modem: Modem | None, usage: Usage | None) -> dict:
    usage = usage or Usage()
    return {
        "id": sim.id,
        "number": sim.number,
        "status": sim.status,
        "iccid": sim.iccid,
        "imsi": sim.imsi,
        "operator": sim.operator or (modem.operator if modem else None),
        "label": sim.label,
        "modem_id": sim.modem_id,
        "online": bool(modem and modem.online),
        "signal_quality": modem.signal_quality if modem else None,
        "registration": modem.registration if modem else None,
        "limit_per_minute": sim.limit_per_minute,
        "limit_per_day": sim.limit_per_day,
        "limit_per_month": sim.limit_per_month,
        "usage": {"minute": usage.minute, "day": usage.day, "month": usage.month},
        "last_seen_at": iso(sim.last_seen_at),
        "created_at": iso(sim.created_at),
    }


def _apply(sim: SimCard, data: SimCardBody, creating: bool) -> list[str]:
    given = data.model_fields_set - {"api_key"}
    changed = []
    if creating or "number" in given:
        if data.number is None:
            raise ValidationError(
                {"number": "is required and cannot be empty"},
                message="SIM card number is required and cannot be empty!",
            )
        sim.number = data.number
        changed.append(f"number={sim.number}")
    if "status" in given or creating:
        if "status" in given and data.status is None:
            raise ValidationError({"status": f"must be one of {', '.join(SIM_STATUSES)}"})
        sim.status = data.status or "active"
        changed.append(f"status={sim.status}")
    if "label" in given:
        sim.label = data.label
        changed.append("label")
    for name in LIMITS:
        if name in given:
            setattr(sim, name, getattr(data, name))
            changed.append(f"{name}={getattr(sim, name)}")
    return changed


def _get(sim_id: int) -> SimCard:
    sim = db.session.get(SimCard, sim_id)
    if sim is None:
        raise NotFound("SIM card not found!", code="sim_not_found")
    return sim


def _response(sim: SimCard) -> dict:
    modem = db.session.get(Modem, sim.modem_id) if sim.modem_id else None
    usage = router().usage(db.session.connection(), [sim_of((sim, modem and modem.online))]).get(sim.id)
    return sim_dict(sim, modem, usage)


@bp.get("/api/sim-cards")
@require_role("viewer")
def list_sims():
    rows = db.session.execute(
        select(SimCard, Modem).outerjoin(Modem, Modem.id == SimCard.modem_id).order_by(SimCard.id)
    ).all()
    # What the limits are checked against (the Redis counters of limited SIMs).
    usage = router().usage(db.session.connection(), [sim_of((s, m and m.online)) for s, m in rows])
    sims = [sim_dict(s, m, usage.get(s.id)) for s, m in rows]
    # Nothing can send: the same reason and fix as the 503 a send would get.
    guidance = None
    if not any(s.status == "active" for s, _ in rows):
        why = no_sim_error(db.session.connection())
        guidance = {"code": why.extra["reason"], "problem": why.message, "fix": why.extra["hint"]}
    return jsonify({"sim_cards": sims, "count": len(sims), "guidance": guidance})


@bp.post("/api/sim-cards")
@require_role("admin")
def add_sim():
    sim = SimCard()
    changed = _apply(sim, body(SimCardBody), creating=True)
    db.session.add(sim)
    db.session.flush()
    audit("add_sim_card", f"added SIM card {sim.id}: {', '.join(changed)}", sender_sim=sim.number)
    db.session.commit()
    router().invalidate()
    # 200, not 201: the seed's status code.
    return jsonify({"message": "SIM card added successfully", "id": sim.id, "sim_card": _response(sim)}), 200


@bp.put("/api/sim-cards/<int:sim_id>")
@require_role("admin")
def update_sim(sim_id: int):
    data = body(SimCardBody)
    sim = _get(sim_id)
    changed = _apply(sim, data, creating=False)
    if not changed:
        raise ApiError("nothing to update; send number, status, label or a limit", 400, "empty_update")
    audit("update_sim_card", f"updated SIM card {sim.id}: {', '.join(changed)}", sender_sim=sim.number)
    db.session.commit()
    router().invalidate()
    if data.model_fields_set & set(LIMITS):
        # Nothing counted the SIM while it had no limits: its counters start again from Postgres.
        router().forget([sim.id])
    return jsonify({"message": "SIM card updated successfully", "sim_card": _response(sim)})


@bp.delete("/api/sim-cards/<int:sim_id>")
@require_role("admin")
def delete_sim(sim_id: int):
    sim = _get(sim_id)
    pending = db.session.scalar(
        select(func.count())
        .select_from(Message)
        .where(Message.sim_card_id == sim.id, Message.status.in_((QUEUED, SENDING)))
    )
    if pending:
        raise Conflict(
            f"SIM card {sim.id} has {pending} queued or sending messages; cancel them or set the SIM inactive instead",
            code="sim_has_pending_messages",
            extra={"pending": pending},
        )
    audit("delete_sim_card", f"deleted SIM card {sim.id} ({sim.number})", sender_sim=sim.number)
    db.session.delete(sim)
    db.session.commit()
    router().invalidate()
    router().forget([sim_id])
    return jsonify({"message": "SIM card deleted successfully"})


# The seed's clients address SIMs by the UUIDs they stored (docs/migrating-from-the-seed.md);
# the role is checked before the lookup, so no one learns which seed ids exist
# without being allowed to change them.
def _imported(seed_id) -> int:
    sim_id = imported_sim(str(seed_id))
    if sim_id is None:
        raise NotFound("SIM card not found!", code="sim_not_found")
    return sim_id


@bp.put("/api/sim-cards/<uuid:seed_id>")
@require_role("admin")
def update_seed_sim(seed_id):
    body(SimCardBody)  # the body is refused before the lookup, as on /api/sim-cards/<int:sim_id>
    return update_sim(_imported(seed_id))


@bp.delete("/api/sim-cards/<uuid:seed_id>")
@require_role("admin")
def delete_seed_sim(seed_id):
    return delete_sim(_imported(seed_id))


_SIM = obj(
    {
        "id": INT,
        "number": STR,
        "status": STR,
        "iccid": nullable(STR),
        "imsi": nullable(STR),
        "operator": nullable(STR),
        "label": nullable(STR),
        "modem_id": nullable(STR),
        "online": BOOL,
        "signal_quality": nullable(INT),
        "registration": nullable(STR),
        "limit_per_minute": nullable(INT),
        "limit_per_day": nullable(INT),
        "limit_per_month": nullable(INT),
        "usage": obj({"minute": INT, "day": INT, "month": INT}),
        "last_seen_at": TIME,
        "created_at": TIME,
    }
)
register(
    "/api/sim-cards",
    "GET",
    {
        "summary": "List SIM cards (seed)",
        "tags": ["sim-cards"],
        "responses": {"200": ok({"sim_cards": array(_SIM), "count": INT})},
    },
)
register(
    "/api/sim-cards",
    "POST",
    {
        "summary": "Add a SIM card (seed; admin)",
        "tags": ["sim-cards"],
        "responses": {"200": ok({"message": STR, "id": INT, "sim_card": _SIM}, "Added (200, the seed's status code)")},
    },
    body=SimCardBody,
)
for _path in ("/api/sim-cards/<int:sim_id>", "/api/sim-cards/<uuid:seed_id>"):
    _seed = "seed_id" in _path
    register(
        _path,
        "PUT",
        {
            "summary": "Update a SIM card by the id the seed gave it (imported SIMs only)"
            if _seed
            else "Update a SIM card (seed; admin)",
            "tags": ["sim-cards"],
            "responses": {"200": ok({"message": STR, "sim_card": _SIM}), "404": {"description": "no such SIM"}},
        },
        body=SimCardBody,
    )
    register(
        _path,
        "DELETE",
        {
            "summary": "Delete a SIM card by the id the seed gave it (imported SIMs only)"
            if _seed
            else "Delete a SIM card (seed; admin)",
            "tags": ["sim-cards"],
            "responses": {
                "200": ok({"message": STR}),
                "404": {"description": "no such SIM"},
                "409": {"description": "the SIM has queued or sending messages"},
            },
        },
    )
