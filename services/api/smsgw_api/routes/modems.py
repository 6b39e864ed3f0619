"""GET /api/modems (health as the workers report it),
GET /api/modems/raw-pdus (received PDUs kept raw: undecodable ones and the
parts of incomplete messages; admin) and POST /api/modems/<id>/ussd: a
ModemCommand over MQTT, answered by the worker's ModemCommandReply, waited
for at most USSD_TIMEOUT_SECONDS. A USSD menu answers with
`result.session_open`; the reply is the next `code`, `{"cancel": true}` ends it."""

from __future__ import annotations

import threading
import uuid

from flask import Blueprint, current_app, jsonify
from sqlalchemy import func, select

from smsgw_api.core.errors import ApiError, NotFound
from smsgw_api.core.extensions import bus, db
from smsgw_api.core.openapi import BOOL, INT, OBJ, STR, TIME, array, nullable, obj, ok, register
from smsgw_api.core.security import require_role
from smsgw_api.core.web import audit, body, iso, query, settings
from smsgw_api.domain.requests import RawPduQuery, Ussd
from smsgw_common.models import QUEUED, Message, Modem, RawInboundPdu, SimCard
from smsgw_common.schemas import ModemCommand, ModemCommandReply, parse

bp = Blueprint("modems", __name__)


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


# What the worker reports (last_error, registration, signal) mapped to a
# problem an operator can act on. The dashboard's Overview and its SIMs &
# modems page both show this list as it is: one source for both.
_LOGS = "make logs SERVICE=modem-worker-{id}"
PROBLEMS: list[tuple[str, tuple[str, ...], str, str]] = [
    (
        "cannot_open_port",
        ("cannot open", "not open", "vanished", "unplugged", "permission denied", "no such file"),
        "The worker cannot open the modem's serial port.",
        (
            "Check the USB cable and power; `make probe` lists the ports that answer AT. If the port changed, "
            "`make remove-modem ID={id}` and `make add-modem PORT=/dev/serial/by-id/...` again."
        ),
    ),
    (
        "no_sim",
        ("sim_missing", "sim not inserted", "+cme error: 10"),
        "No SIM card in the modem.",
        "Insert a SIM card (modem unplugged), then plug it back in; the worker picks it up by itself.",
    ),
    (
        "pin_rejected",
        ("pin_rejected", "puk_required", "sim puk"),
        "The SIM refused its PIN, or is locked and wants its PUK.",
        (
            "Correct MODEM_PIN for this modem (the worker tries a PIN only once: three wrong ones lock the SIM); "
            "a SIM that wants its PUK must be unlocked in a phone with the PUK from the operator."
        ),
    ),
    (
        "pin_required",
        ("pin_required", "sim pin"),
        "The SIM card asks for a PIN.",
        (
            "Set MODEM_PIN under this modem's environment in compose.modems.yml and run `make up` "
            "(the worker enters it once), or remove the PIN lock in a phone."
        ),
    ),
    (
        "sim_failure",
        ("sim_failure", "sim failure"),
        "The SIM card fails.",
        "Clean the contacts and reinsert the SIM, or try another one.",
    ),
    (
        "no_smsc",
        ("smsc", "csca"),
        "The SIM has no SMS centre number, so it cannot send.",
        "Set the operator's SMSC number on the SIM (AT+CSCA, or with a phone's message settings).",
    ),
    (
        "unresponsive",
        ("timeout", "timed out", "no answer", "garbage"),
        "The modem does not answer AT commands.",
        "Unplug and replug the modem; if it persists, `make probe` to check that the port is the AT port.",
    ),
]
_REGISTERED = ("home", "roaming")


def modem_problems(m: Modem, sims: list[SimCard]) -> list[dict]:
    """What is wrong with a modem and how to fix it, most blocking first."""
    out: list[dict] = []
    error = (m.last_error or "").lower()
    for code, needles, problem, fix in PROBLEMS:
        if any(n in error for n in needles):
            out.append({"code": code, "problem": problem, "fix": fix.format(id=m.id), "detail": m.last_error})
            break
    if not m.online and not out:
        out.append(
            {
                "code": "offline",
                "problem": "The modem's worker is not running or lost the modem.",
                "fix": f"`make status` shows the worker; `{_LOGS.format(id=m.id)}` says why.",
                "detail": m.last_error,
            }
        )
    if m.online and not out:
        if not sims:
            out.append(
                {
                    "code": "no_sim",
                    "problem": "No SIM card in the modem.",
                    "fix": "Insert a SIM card (modem unplugged), then plug it back in.",
                    "detail": None,
                }
            )
        if m.registration is not None and m.registration not in _REGISTERED:
            out.append(
                {
                    "code": "not_registered",
                    "problem": f"Not registered on a network ({m.registration}).",
                    "fix": "Check that the SIM is activated and has credit, that the operator covers this place, "
                    "and that the antenna is attached.",
                    "detail": None,
                }
            )
        if m.signal_quality is not None and (m.signal_quality == 99 or m.signal_quality < 5):
            out.append(
                {
                    "code": "no_signal",
                    "problem": "No usable signal"
                    + ("" if m.signal_quality == 99 else f" (CSQ {m.signal_quality}, below 5)")
                    + ".",
                    "fix": "Attach an antenna, or move the modem (a USB extension cable helps) away from the Pi.",
                    "detail": None,
                }
            )
    return out


# Shown with an empty modem listing: how to get the first one.
NO_MODEM_GUIDANCE = {
    "code": "no_modem",
    "problem": "No modem is configured.",
    "fix": "Plug the USB modem in, run `make probe` to find its port, then "
    "`make add-modem PORT=/dev/serial/by-id/...`. To try the gateway without one: `make demo`.",
}


def modem_dict(m: Modem, sims: list[SimCard], queue_depth: int) -> dict:
    return {
        "id": m.id,
        "imei": m.imei,
        "device_path": m.device_path,
        "manufacturer": m.manufacturer,
        "model": m.model,
        "firmware": m.firmware,
        "online": m.online,
        "signal_quality": m.signal_quality,
        "signal_rssi": m.signal_rssi,
        "registration": m.registration,
        "operator": m.operator,
        "last_error": m.last_error,
        "last_seen_at": iso(m.last_seen_at),
        "node": m.node,
        "site": m.site,
        "journal_backlog": m.journal_backlog,
        "sim_cards": [{"id": s.id, "number": s.number, "status": s.status, "iccid": s.iccid} for s in sims],
        "sim_card_id": sims[0].id if sims else None,
        "number": sims[0].number if sims else None,
        "queue_depth": queue_depth,
        "problems": modem_problems(m, sims),
    }


@bp.get("/api/modems")
@require_role("viewer")
def list_modems():
    session = db.session
    modems = session.scalars(select(Modem).order_by(Modem.id)).all()
    sims = session.scalars(select(SimCard).where(SimCard.modem_id.is_not(None)).order_by(SimCard.id)).all()
    depth = dict(
        session.execute(
            select(Message.sim_card_id, func.count()).where(Message.status == QUEUED).group_by(Message.sim_card_id)
        ).all()
    )
    out = []
    for m in modems:
        own = [s for s in sims if s.modem_id == m.id]
        out.append(modem_dict(m, own, sum(depth.get(s.id, 0) for s in own)))
    guidance = None if out else NO_MODEM_GUIDANCE
    return jsonify({"modems": out, "count": len(out), "guidance": guidance})


@bp.get("/api/modems/raw-pdus")
@require_role("admin")
def list_raw_pdus():
    args = query(RawPduQuery)
    stmt = select(RawInboundPdu).order_by(RawInboundPdu.id.desc()).limit(args.limit)
    if args.kind:
        stmt = stmt.where(RawInboundPdu.kind == args.kind)
    if args.before_id is not None:
        stmt = stmt.where(RawInboundPdu.id < args.before_id)
    if args.modem_id:
        stmt = stmt.where(RawInboundPdu.modem_id == args.modem_id)
    rows = db.session.scalars(stmt).all()
    items = [
        {
            "id": r.id,
            "kind": r.kind,
            "pdu": r.pdu,
            "reason": r.reason,
            "sim_card_id": r.sim_card_id,
            "modem_id": r.modem_id,
            "origin": r.origin,
            "message_id": r.message_id,
            "received_at": iso(r.received_at),
        }
        for r in rows
    ]
    return jsonify({"raw_pdus": items, "count": len(items)})


@bp.post("/api/modems/<modem_id>/ussd")
@require_role("admin")
def ussd(modem_id: str):
    ussd_request = body(Ussd)
    cancel, code = ussd_request.cancel, ussd_request.code or ""
    modem = db.session.get(Modem, modem_id)
    if modem is None:
        raise NotFound(f"modem {modem_id!r} not found")
    if not modem.online:
        raise ApiError(f"modem {modem_id} is offline", 409, "modem_offline")
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # a werkzeug LocalProxy typed as Flask
    w = waiter()
    w.ensure_subscribed(app)
    if not bus.get().wait_connected(2.0):
        raise ApiError("the MQTT broker is not reachable; the command was not sent", 503, "broker_unavailable")
    request_id = uuid.uuid4().hex
    event = w.expect(request_id)
    args: dict[str, object] = {"cancel": True} if cancel else {"code": code}
    command = ModemCommand(command="ussd", request_id=request_id, args=args)
    bus.publish(bus.topics.command(modem_id), command.to_json(), qos=1)
    timeout = settings().ussd_timeout_seconds
    event.wait(timeout)
    reply = w.take(request_id)
    audit(
        "ussd",
        f"USSD {'cancel' if cancel else code} on modem {modem_id}: "
        + ("no reply" if reply is None else "ok" if reply.ok else f"error {reply.error}"),
        status="success" if reply is not None and reply.ok else "failed",
    )
    db.session.commit()
    if reply is None:
        raise ApiError(f"modem {modem_id} did not answer within {timeout:g} s", 504, "modem_timeout")
    if not reply.ok:
        raise ApiError(
            f"modem {modem_id} refused the USSD request: {reply.error or 'unknown error'}",
            502,
            "modem_error",
            extra={"result": reply.result},
        )
    return jsonify({"result": reply.result, "ok": True, "modem_id": modem_id, "request_id": request_id})


_MODEM = {
    "id": STR,
    "imei": nullable(STR),
    "online": BOOL,
    "signal_quality": nullable(INT),
    "registration": nullable(STR),
    "operator": nullable(STR),
    "last_error": nullable(STR),
    "last_seen_at": TIME,
    "sim_cards": array(OBJ),
    "sim_card_id": nullable(INT),
    "number": nullable(STR),
    "queue_depth": INT,
}
register(
    "/api/modems",
    "GET",
    {
        "summary": "Modems and their health",
        "tags": ["modems"],
        "responses": {"200": ok({"modems": array(obj(_MODEM)), "count": INT})},
    },
)
_RAW_PDU = {
    "id": INT,
    "kind": STR,
    "pdu": STR,
    "reason": nullable(STR),
    "sim_card_id": nullable(INT),
    "modem_id": nullable(STR),
    "origin": nullable(STR),
    "message_id": nullable(INT),
    "received_at": TIME,
}
register(
    "/api/modems/raw-pdus",
    "GET",
    {
        "summary": "Received PDUs kept raw: undecodable ones, parts of incomplete messages (admin)",
        "tags": ["modems"],
        "responses": {"200": ok({"raw_pdus": array(obj(_RAW_PDU)), "count": INT})},
    },
    query=RawPduQuery,
)
register(
    "/api/modems/<modem_id>/ussd",
    "POST",
    {
        "summary": "Send a USSD code through a modem and wait for the answer (admin)",
        "tags": ["modems"],
        "responses": {
            "200": ok(
                {
                    # {"status", "text", "dcs", "session_open"}: the network's answer
                    "result": nullable(OBJ),
                    "ok": BOOL,
                    "modem_id": STR,
                    "request_id": STR,
                }
            ),
            "404": {"description": "no such modem"},
            "409": {"description": "modem offline"},
            "502": {"description": "the modem refused the request"},
            "503": {"description": "broker unreachable"},
            "504": {"description": "no answer in time"},
        },
    },
    body=Ussd,
)
