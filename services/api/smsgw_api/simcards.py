"""SIM cards (seed shapes): GET|POST /api/sim-cards, PUT|DELETE /api/sim-cards/<id>.

Anyone may list; only an admin changes. Workers register SIMs they see by
ICCID; an admin adds or edits numbers, labels and sending limits.
"""
from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import func, select

from smsgw_common.models import QUEUED, SENDING, Message, Modem, SimCard

from .errors import ApiError, Conflict, NotFound, ValidationError
from .extensions import db
from .openapi import json_body as body_spec
from .openapi import register
from .routing import Usage, router, sim_of
from .security import require_role
from .sms import normalize_number
from .web import audit, iso, json_body, parse_int

bp = Blueprint("simcards", __name__)

SIM_STATUSES = ("active", "inactive")
LIMITS = ("limit_per_minute", "limit_per_day", "limit_per_month")
EDITABLE = {"number", "status", "label", *LIMITS}


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


def _apply(sim: SimCard, data: dict, creating: bool) -> list[str]:
    unknown = set(data) - EDITABLE - {"api_key"}
    if unknown:
        raise ValidationError({k: "unknown field" for k in sorted(unknown)})
    fields: dict[str, str] = {}
    changed = []
    if creating or "number" in data:
        value = data.get("number")
        if not isinstance(value, str) or not value.strip():
            raise ValidationError({"number": "is required and cannot be empty"},
                                  message="SIM card number is required and cannot be empty!")
        try:
            sim.number = normalize_number(value, "number")
            changed.append(f"number={sim.number}")
        except ValidationError as exc:
            fields.update(exc.fields)
    if "status" in data or creating:
        status = data.get("status", "active")
        if status not in SIM_STATUSES:
            fields["status"] = f"must be one of {', '.join(SIM_STATUSES)}"
        else:
            sim.status = status
            changed.append(f"status={status}")
    if "label" in data:
        label = data["label"]
        if label is not None and (not isinstance(label, str) or len(label) > 100):
            fields["label"] = "must be a string of at most 100 characters, or null"
        else:
            sim.label = label
            changed.append("label")
    for name in LIMITS:
        if name in data:
            if data[name] is None:
                setattr(sim, name, None)
            else:
                try:
                    setattr(sim, name, parse_int(data[name], name, 0, 10_000_000))
                except ValidationError as exc:
                    fields.update(exc.fields)
                    continue
            changed.append(f"{name}={getattr(sim, name)}")
    if fields:
        raise ValidationError(fields)
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
    return jsonify({"sim_cards": sims, "count": len(sims)})


@bp.post("/api/sim-cards")
@require_role("admin")
def add_sim():
    data = json_body()
    sim = SimCard()
    changed = _apply(sim, data, creating=True)
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
    data = json_body()
    sim = _get(sim_id)
    changed = _apply(sim, data, creating=False)
    if not changed:
        raise ApiError("nothing to update; send number, status, label or a limit", 400, "empty_update")
    audit("update_sim_card", f"updated SIM card {sim.id}: {', '.join(changed)}", sender_sim=sim.number)
    db.session.commit()
    router().invalidate()
    if any(name in data for name in LIMITS):
        # Nothing counted the SIM while it had no limits: its counters start again from Postgres.
        router().forget([sim.id])
    return jsonify({"message": "SIM card updated successfully", "sim_card": _response(sim)})


@bp.delete("/api/sim-cards/<int:sim_id>")
@require_role("admin")
def delete_sim(sim_id: int):
    sim = _get(sim_id)
    pending = db.session.scalar(
        select(func.count()).select_from(Message).where(Message.sim_card_id == sim.id,
                                                        Message.status.in_((QUEUED, SENDING)))
    )
    if pending:
        raise Conflict(f"SIM card {sim.id} has {pending} queued or sending messages; cancel them or set the "
                       "SIM inactive instead", code="sim_has_pending_messages", extra={"pending": pending})
    audit("delete_sim_card", f"deleted SIM card {sim.id} ({sim.number})", sender_sim=sim.number)
    db.session.delete(sim)
    db.session.commit()
    router().invalidate()
    router().forget([sim_id])
    return jsonify({"message": "SIM card deleted successfully"})


_SIM_BODY = {"type": "object", "properties": {
    "number": {"type": "string"}, "status": {"type": "string", "enum": list(SIM_STATUSES)},
    "label": {"type": "string", "nullable": True},
    **{name: {"type": "integer", "minimum": 0, "nullable": True, "description": "segments; null = no limit"}
       for name in LIMITS}}}
register("/api/sim-cards", "GET", {"summary": "List SIM cards (seed)", "tags": ["sim-cards"]})
register("/api/sim-cards", "POST", {"summary": "Add a SIM card (seed; admin)", "tags": ["sim-cards"],
                                    "requestBody": body_spec({**_SIM_BODY, "required": ["number"]}),
                                    "responses": {"200": {"description": "message, id, sim_card"}}})
register("/api/sim-cards/<int:sim_id>", "PUT", {"summary": "Update a SIM card (seed; admin)", "tags": ["sim-cards"],
                                                "requestBody": body_spec(_SIM_BODY)})
register("/api/sim-cards/<int:sim_id>", "DELETE", {"summary": "Delete a SIM card (seed; admin)",
                                                   "tags": ["sim-cards"]})
