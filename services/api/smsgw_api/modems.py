"""GET /api/modems (health as the workers report it) and
POST /api/modems/<id>/ussd: a ModemCommand over MQTT, answered by the
worker's ModemCommandReply, waited for at most USSD_TIMEOUT_SECONDS."""
from __future__ import annotations

import re
import threading
import uuid

from flask import Blueprint, current_app, jsonify
from sqlalchemy import func, select

from smsgw_common.models import QUEUED, Modem, SimCard, Message
from smsgw_common.schemas import ModemCommand, ModemCommandReply, parse

from .errors import ApiError, NotFound, ValidationError
from .extensions import bus, db
from .openapi import json_body as body_spec
from .openapi import register
from .security import require_role
from .web import audit, iso, json_body, settings

bp = Blueprint("modems", __name__)

USSD_CODE = re.compile(r"^[0-9*#+]{1,32}$")


class ReplyWaiter:
    """One subscription per process to every modem's command replies;
    requests wait on an event keyed by their request id."""

    def __init__(self):
        self._waiting: dict[str, tuple[threading.Event, list]] = {}
        self._lock = threading.Lock()
        self._subscribed_bus = None

    def ensure_subscribed(self, app) -> None:
        b = bus.get(app)
        if self._subscribed_bus is not b:
            b.subscribe(bus.state(app).topics.all_command_replies(), self._on_reply, qos=1)
            self._subscribed_bus = b

    def _on_reply(self, topic: str, payload: bytes) -> None:
        reply = parse(ModemCommandReply, payload)
        if reply is None:
            return
        with self._lock:
            entry = self._waiting.get(reply.request_id)
        if entry:
            entry[1].append(reply)
            entry[0].set()

    def expect(self, request_id: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._waiting[request_id] = (event, [])
        return event

    def take(self, request_id: str):
        with self._lock:
            _, replies = self._waiting.pop(request_id, (None, []))
        return replies[0] if replies else None


def waiter() -> ReplyWaiter:
    return current_app.extensions.setdefault("smsgw_reply_waiter", ReplyWaiter())


def modem_dict(m: Modem, sims: list[SimCard], queue_depth: int) -> dict:
    return {
        "id": m.id, "imei": m.imei, "device_path": m.device_path, "manufacturer": m.manufacturer,
        "model": m.model, "firmware": m.firmware, "online": m.online, "signal_quality": m.signal_quality,
        "signal_rssi": m.signal_rssi, "registration": m.registration, "operator": m.operator,
        "last_error": m.last_error, "last_seen_at": iso(m.last_seen_at),
        "sim_cards": [{"id": s.id, "number": s.number, "status": s.status, "iccid": s.iccid} for s in sims],
        "sim_card_id": sims[0].id if sims else None,
        "number": sims[0].number if sims else None,
        "queue_depth": queue_depth,
    }


@bp.get("/api/modems")
@require_role("viewer")
def list_modems():
    session = db.session
    modems = session.scalars(select(Modem).order_by(Modem.id)).all()
    sims = session.scalars(select(SimCard).where(SimCard.modem_id.is_not(None)).order_by(SimCard.id)).all()
    depth = dict(session.execute(
        select(Message.sim_card_id, func.count()).where(Message.status == QUEUED).group_by(Message.sim_card_id)
    ).all())
    out = []
    for m in modems:
        own = [s for s in sims if s.modem_id == m.id]
        out.append(modem_dict(m, own, sum(depth.get(s.id, 0) for s in own)))
    return jsonify({"modems": out, "count": len(out)})


@bp.post("/api/modems/<modem_id>/ussd")
@require_role("admin")
def ussd(modem_id: str):
    data = json_body()
    code = data.get("code")
    if not isinstance(code, str) or not USSD_CODE.match(code.strip()):
        raise ValidationError({"code": "a USSD code of digits, * and # (e.g. *100#)"})
    modem = db.session.get(Modem, modem_id)
    if modem is None:
        raise NotFound(f"modem {modem_id!r} not found")
    if not modem.online:
        raise ApiError(f"modem {modem_id} is offline", 409, "modem_offline")
    app = current_app._get_current_object()
    w = waiter()
    w.ensure_subscribed(app)
    if not bus.get().wait_connected(2.0):
        raise ApiError("the MQTT broker is not reachable; the command was not sent", 503, "broker_unavailable")
    request_id = uuid.uuid4().hex
    event = w.expect(request_id)
    command = ModemCommand(command="ussd", request_id=request_id, args={"code": code.strip()})
    bus.publish(bus.topics.command(modem_id), command.to_json(), qos=1)
    timeout = settings().ussd_timeout_seconds
    event.wait(timeout)
    reply = w.take(request_id)
    audit("ussd", f"USSD {code.strip()} on modem {modem_id}: "
                  + ("no reply" if reply is None else "ok" if reply.ok else f"error {reply.error}"),
          status="success" if reply is not None and reply.ok else "failed")
    db.session.commit()
    if reply is None:
        raise ApiError(f"modem {modem_id} did not answer within {timeout:g} s", 504, "modem_timeout")
    if not reply.ok:
        raise ApiError(f"modem {modem_id} refused the USSD request: {reply.error or 'unknown error'}", 502,
                       "modem_error", extra={"result": reply.result})
    return jsonify({"result": reply.result, "ok": True, "modem_id": modem_id, "request_id": request_id})


register("/api/modems", "GET", {"summary": "Modems and their health", "tags": ["modems"]})
register("/api/modems/<modem_id>/ussd", "POST", {
    "summary": "Send a USSD code through a modem and wait for the answer (admin)", "tags": ["modems"],
    "requestBody": body_spec({"type": "object", "required": ["code"], "properties": {"code": {"type": "string"}}}),
    "responses": {"200": {"description": "result"}, "504": {"description": "no answer in time"}}})
