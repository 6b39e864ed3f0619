"""Sending: POST /api/sms (the seed's), /api/sms/batch, /api/sms/preview,
GET /api/sms/<id> (detail with history and parts), POST /api/sms/<id>/cancel.

A message is committed as `queued` with its chosen SIM before the response;
the MQTT wake-up to the SIM's modem goes out after the commit and never
blocks: if the broker is down the worker's periodic sweep finds the message.
"""
from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import datetime, timezone

from flask import Blueprint, current_app, g, jsonify, request
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from smsgw_common import segments as seg
from smsgw_common.models import CANCELLABLE_STATES, CANCELLED, PRIORITIES, Message, SimCard
from smsgw_common.queue import record
from smsgw_common.schemas import MessageEventPayload, OutboxWakeup

from .errors import ApiError, Conflict, Forbidden, NotFound, ValidationError
from .extensions import bus, db
from .groupcommit import CommitTimeout, GroupCommitter
from .openapi import json_body as body_spec
from .openapi import register
from .routing import router
from .security import current_principal, require_role
from .web import audit, client_ip, iso, json_body, parse_int, parse_time, request_id, seed_time, settings

bp = Blueprint("sms", __name__)

E164 = re.compile(r"^\+[1-9]\d{2,14}$")
_FORMATTING = re.compile(r"[\s\-().]")
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}


def normalize_number(value, field: str, international: bool = False) -> str:
    """Spaces, dashes and dots dropped, `00` read as `+`, then E.164.

    With `international` (recipients) the number must carry its country code
    (`+` or `00`), as the seed demanded: guessing a `+` in front of a national
    number like 7911123456 would text another country. Otherwise (a SIM's own
    number, typed by an admin) a missing `+` is added."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError({field: "is required"},
                              message="Recipient number is required and cannot be empty!" if field.endswith("recipient") else None)
    number = _FORMATTING.sub("", value.strip())
    if number.startswith("00"):
        number = "+" + number[2:]
    if not number.startswith("+"):
        if international:
            raise ValidationError({field: f"{value!r} must start with + (or 00) and the country code"})
        number = "+" + number
    if not E164.match(number):
        raise ValidationError({field: f"{value!r} is not an E.164 number (+ country code and up to 15 digits)"})
    return number


def _collect(fields: dict, prefix: str, fn, *args):
    try:
        return fn(*args)
    except ValidationError as exc:
        for k, v in (exc.fields or {}).items():
            fields[prefix + k] = v
        return None


def parse_message(data: dict, prefix: str = "") -> dict:
    """Validate one message's fields; every problem is reported at once."""
    s = settings()
    fields: dict[str, str] = {}
    out: dict = {}
    out["recipient"] = _collect(fields, prefix, normalize_number, data.get("recipient"), "recipient", True)
    text_ = data.get("message")
    if not isinstance(text_, str) or not text_.strip():
        fields[prefix + "message"] = "is required and cannot be empty"
    else:
        text_ = text_.strip()
        info = seg.analyze(text_)
        if info.segments > s.max_segments:
            fields[prefix + "message"] = (f"is {info.segments} segments ({info.encoding}); "
                                          f"the maximum is {s.max_segments}")
        out.update(message=text_, encoding=info.encoding, segments=info.segments)
    sim = data.get("sim_card_id")
    out["sim_card_id"] = None
    if sim not in (None, ""):
        out["sim_card_id"] = _collect(fields, prefix, parse_int, sim, "sim_card_id", 1)
    priority = data.get("priority", "normal")
    if not isinstance(priority, str) or priority not in PRIORITIES:  # a list or dict is unhashable
        fields[prefix + "priority"] = f"must be one of {', '.join(PRIORITIES)}"
    else:
        out["priority"] = PRIORITIES[priority]
    now = datetime.now(timezone.utc)
    out["send_at"] = out["expires_at"] = None
    if data.get("send_at") not in (None, ""):
        out["send_at"] = _collect(fields, prefix, parse_time, data["send_at"], "send_at")
    if data.get("expires_at") not in (None, ""):
        exp = _collect(fields, prefix, parse_time, data["expires_at"], "expires_at")
        if exp is not None:
            if exp <= now:
                fields[prefix + "expires_at"] = "must be in the future"
            elif out["send_at"] is not None and exp <= out["send_at"]:
                fields[prefix + "expires_at"] = "must be after send_at"
        out["expires_at"] = exp
    on_unavailable = data.get("on_unavailable", "wait")
    if not isinstance(on_unavailable, str) or on_unavailable not in ("wait", "fail"):
        fields[prefix + "on_unavailable"] = "must be 'wait' or 'fail'"
    out["on_unavailable"] = on_unavailable
    if fields:
        if set(fields) == {prefix + "message"} and fields[prefix + "message"].startswith("is required"):
            raise ValidationError(fields, message="Message content is required and cannot be empty!")
        raise ValidationError(fields)
    return out


def request_hash(body: dict) -> str:
    canonical = json.dumps({"path": request.path, "body": body}, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255:
        raise ValidationError({"Idempotency-Key": "must be 1-255 characters"})
    return key


# Columns of one queued message, in the order of the arrays below.
_COLUMNS = (
    ("sender", "text"), ("recipient", "text"), ("message", "text"), ("encoding", "text"),
    ("segments", "smallint"), ("sim_card_id", "int"), ("pinned", "boolean"), ("priority", "smallint"),
    ("send_at", "timestamptz"), ("expires_at", "timestamptz"), ("idem_key", "text"), ("req_hash", "text"),
    ("batch_id", "text"), ("user_id", "int"), ("api_key_id", "int"), ("event_detail", "text"),
    ("actor", "text"), ("ip", "text"), ("request_id", "text"), ("on_unavailable", "text"),
)
# Any number of messages in one round trip: each row with its first history
# event and its audit entry. A recipient on the opt-out list gets no row
# (its `id` comes back NULL). Ids are drawn up front so that every result
# finds its request again through `ord`.
_INSERT_SQL = text(f"""
WITH v AS (
    SELECT nextval(pg_get_serial_sequence('messages', 'id')) AS id, u.*
    FROM unnest({", ".join(f"CAST(:{name} AS {type_}[])" for name, type_ in _COLUMNS)})
         WITH ORDINALITY AS u({", ".join(name for name, _ in _COLUMNS)}, ord)
), m AS (
    INSERT INTO messages (id, direction, sender, recipient, message, status, encoding, segments, sim_card_id,
                          sender_sim, pinned, priority, send_at, expires_at, idempotency_key, request_hash,
                          batch_id, user_id, api_key_id, on_unavailable, timestamp, queued_at, updated_at)
    SELECT id, 'outbound', sender, recipient, message, 'queued', encoding, segments, sim_card_id,
           sender, pinned, priority, send_at, expires_at, idem_key, req_hash,
           batch_id, user_id, api_key_id, on_unavailable, now(), now(), now()
    FROM v WHERE NOT EXISTS (SELECT 1 FROM opt_outs o WHERE o.number = v.recipient)
    ORDER BY ord
    RETURNING id, timestamp
), e AS (
    INSERT INTO message_events (message_id, state, at, source, detail)
    SELECT m.id, 'queued', m.timestamp, 'api', v.event_detail FROM m JOIN v ON v.id = m.id
), l AS (
    INSERT INTO logs (action, details, status, timestamp, sender_sim, user_id, actor, ip, request_id)
    SELECT 'send_sms', 'SMS ' || m.id || ' to ' || v.recipient || ' queued on SIM ' || v.sim_card_id, 'queued',
           now(), v.sender, v.user_id, v.actor, v.ip, v.request_id
    FROM m JOIN v ON v.id = m.id
)
SELECT v.ord, m.id, m.timestamp FROM v LEFT JOIN m ON m.id = v.id ORDER BY v.ord
""")


def insert_messages(conn, rows: list[dict]) -> list:
    """Insert queued messages (dicts of _COLUMNS); one result row each, in
    order, with `id` None where the recipient opted out."""
    params = {name: [row[name] for row in rows] for name, _ in _COLUMNS}
    return conn.execute(_INSERT_SQL, params).all()


_OPTED_OUT_SQL = text("SELECT number FROM opt_outs WHERE number = ANY(:numbers)")


def _opted_out_error(numbers: list[str]) -> ApiError:
    return ApiError(f"recipient has opted out of messages: {', '.join(numbers)}", 422, "recipient_opted_out",
                    fields={"recipient": "opted out (STOP); remove the opt-out to send again"},
                    extra={"opted_out": numbers})


def _opted_out(conn, numbers: list[str]):
    found = sorted({r.number for r in conn.execute(_OPTED_OUT_SQL, {"numbers": numbers})})
    if found:
        raise _opted_out_error(found)


def _route(conn, parsed: list[dict]):
    """A SIM for each message, all or nothing, with its segments counted
    against the SIM's limits (routing.py): [(sim, hold)], where a hold is
    given back with `router().release` if the message is not queued after all."""
    return router().route(conn, [(p["segments"], p["sim_card_id"], p["on_unavailable"]) for p in parsed])


def _insert_params(parsed: dict, sim, *, idem_key, req_hash, batch_id) -> dict:
    p = current_principal()
    return {
        "sender": sim.number, "recipient": parsed["recipient"], "message": parsed["message"],
        "encoding": parsed["encoding"], "segments": parsed["segments"], "sim_card_id": sim.id,
        "pinned": parsed["sim_card_id"] is not None, "priority": parsed["priority"],
        "send_at": parsed["send_at"], "expires_at": parsed["expires_at"], "idem_key": idem_key,
        "req_hash": req_hash, "batch_id": batch_id, "user_id": p.user_id, "api_key_id": p.api_key_id,
        "event_detail": f"routed to SIM {sim.id}" + (" (pinned)" if parsed["sim_card_id"] is not None else ""),
        "actor": p.actor, "ip": client_ip(), "request_id": request_id(),
        "on_unavailable": parsed["on_unavailable"],
        # Not a column: the modem to wake once this row is committed.
        "_wake": sim.modem_id if _due_now(parsed) else None,
    }


def _answer(message_id: int, sender_sim, sim_card_id, modem_id, recipient: str, encoding: str, segments: int,
            timestamp, send_at) -> dict:
    """What a send answers, first time and on an idempotent replay alike
    (it says "queued" whatever the message has become since)."""
    return {
        "message": "SMS queued for sending",
        "message_id": message_id,
        "sms_id": message_id,
        "id": message_id,
        "sender_sim": sender_sim,
        "sim_card_id": sim_card_id,
        "modem_id": modem_id,
        "status": "queued",
        "recipient": recipient,
        "encoding": encoding,
        "segments": segments,
        **seed_time(timestamp),
        "send_at": iso(send_at),
    }


def _result(parsed: dict, sim, row) -> dict:
    if row.id is None:
        raise _opted_out_error([parsed["recipient"]])
    return _answer(row.id, sim.number, sim.id, sim.modem_id, parsed["recipient"], parsed["encoding"],
                   parsed["segments"], row.timestamp, parsed["send_at"])


def committer() -> GroupCommitter:
    gc = current_app.extensions.get("smsgw_group_commit")
    if gc is None:
        gc = current_app.extensions["smsgw_group_commit"] = GroupCommitter(
            db.engine, insert_messages, after_commit=_wake_modems)
    return gc


def _wake_modems(items: list[dict], results: list) -> None:
    """After a commit (group commit or batch): one wake-up per modem, as a
    worker drains its SIM's queue on any wake-up; one per message would only
    cost CPU."""
    modems: dict[str, int] = {}
    for item, row in zip(items, results):
        if item["_wake"] and row.id is not None:
            modems.setdefault(item["_wake"], row.id)
    for modem_id, message_id in modems.items():
        bus.publish(bus.topics.outbox(modem_id), OutboxWakeup(message_id=message_id).to_json(), qos=1)


def _due_now(parsed: dict) -> bool:
    return parsed["send_at"] is None or parsed["send_at"] <= datetime.now(timezone.utc)


def _queue_one(parsed: dict, *, idem_key: str | None, req_hash: str | None) -> dict:
    """A single send: routed here, written with whatever other sends of this
    process are waiting for a commit at the same moment (groupcommit.py)."""
    [(sim, hold)] = _route(db.engine.connect, [parsed])
    params = _insert_params(parsed, sim, idem_key=idem_key, req_hash=req_hash, batch_id=None)
    try:
        row = committer().submit(params)  # the committer wakes the modem
        result = _result(parsed, sim, row)
    except CommitTimeout as exc:
        if exc.written is False:
            router().release([hold])  # an unknown outcome stays counted
        raise _commit_timeout(exc, idem_key) from None
    except BaseException:
        router().release([hold])
        raise
    router().note_routed(sim.id, parsed["segments"])
    return result


def _commit_timeout(exc: CommitTimeout, idem_key: str | None) -> ApiError:
    """503 for a send whose commit did not finish in time, saying what is
    known (groupcommit.GroupCommitter._give_up explains the choice)."""
    if exc.written is False:
        return ApiError("the database is busy; the SMS was not queued, send it again", 503, "database_busy",
                        headers={"Retry-After": "1"}, extra={"outcome": "not_queued"})
    how = ("retry with the same Idempotency-Key: it returns the message if it was queued" if idem_key else
           "look for it in GET /api/sms/outbox before sending again, or send with an Idempotency-Key")
    return ApiError(f"the database did not confirm the commit in time; the SMS may or may not be queued: {how}",
                    503, "outcome_unknown", headers={"Retry-After": "1"}, extra={"outcome": "unknown"})


def _existing(idem_key: str, req_hash: str):
    """A previous request with this Idempotency-Key: its response, or 409."""
    p = current_principal()
    first = db.session.scalar(select(Message).where(Message.user_id == p.user_id,
                                                    Message.idempotency_key == idem_key))
    if first is None:
        db.session.rollback()  # release the connection before the write takes another
        return None
    if first.request_hash != req_hash:
        raise Conflict("this Idempotency-Key was used with a different request body", code="idempotency_mismatch")
    if first.batch_id:
        rows = db.session.scalars(select(Message).where(Message.batch_id == first.batch_id)
                                  .order_by(Message.id)).all()
    else:
        rows = [first]
    modems = dict(db.session.execute(select(SimCard.id, SimCard.modem_id)
                                     .where(SimCard.id.in_({m.sim_card_id for m in rows}))).all())
    # The SIM is the one it is on now, which differs only if it was rerouted.
    out = [_answer(m.id, m.sender_sim, m.sim_card_id, modems.get(m.sim_card_id), m.recipient, m.encoding,
                   m.segments, m.timestamp, m.send_at) for m in rows]
    return first.batch_id, out


def _replay(idem_key: str | None, req_hash: str | None, *, batch: bool):
    """The stored response to an earlier request with this Idempotency-Key
    (marked as replayed), None if there was none."""
    previous = _existing(idem_key, req_hash) if idem_key else None
    if previous is None:
        return None
    batch_id, out = previous
    response = jsonify({"batch_id": batch_id, "messages": out, "count": len(out)} if batch else out[0])
    # 200 as the seed answered a send; a batch (ours) was created, 201.
    response.status_code = 201 if batch else 200
    response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.post("/api/sms")
@require_role("user")
def send_sms():
    data = json_body()
    idem = idempotency_key()
    req_hash = request_hash(data) if idem else None
    replay = _replay(idem, req_hash, batch=False)
    if replay is not None:
        return replay
    parsed = parse_message(data)
    try:
        result = _queue_one(parsed, idem_key=idem, req_hash=req_hash)
    except IntegrityError:
        # Two requests with one Idempotency-Key raced; the other one won.
        replay = _replay(idem, req_hash, batch=False)
        if replay is not None:
            return replay
        raise
    g.message_id = result["message_id"]  # joins the access log line to the message
    return jsonify(result), 200  # the seed's status code, which its clients check


@bp.post("/api/sms/batch")
@require_role("user")
def send_batch():
    data = json_body()
    s = settings()
    idem = idempotency_key()
    req_hash = request_hash(data) if idem else None
    replay = _replay(idem, req_hash, batch=True)
    if replay is not None:
        return replay
    if isinstance(data.get("messages"), list):
        items = data["messages"]
        if "recipients" in data:
            raise ValidationError({"recipients": "send either messages or recipients+message, not both"})
    elif isinstance(data.get("recipients"), list):
        common = {k: v for k, v in data.items() if k != "recipients"}
        items = [{**common, "recipient": r} for r in data["recipients"]]
    else:
        raise ValidationError({"messages": "send a list of messages, or recipients (a list) and message"})
    if not items:
        raise ValidationError({"messages": "must not be empty"})
    if len(items) > s.max_batch_size:
        raise ValidationError({"messages": f"at most {s.max_batch_size} messages per batch"})
    fields: dict[str, str] = {}
    parsed = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            fields[f"messages[{i}]"] = "must be an object"
            continue
        try:
            parsed.append(parse_message(item, prefix=f"messages[{i}]."))
        except ValidationError as exc:
            fields.update(exc.fields or {})
    if fields:
        raise ValidationError(fields)
    batch_id = str(uuid.uuid4())
    sims, holds = [], []
    r = router()
    try:
        with db.engine.begin() as conn:
            _opted_out(conn, sorted({p["recipient"] for p in parsed}))
            # Every message's SIM and counters at once, or none (a 429 names the index).
            routed = _route(conn, parsed)
            sims, holds = [sim for sim, _ in routed], [hold for _, hold in routed]
            rows = []
            for i, (item, sim) in enumerate(zip(parsed, sims)):
                # The key rides on the first row; a replay finds the batch by it.
                rows.append(_insert_params(item, sim, idem_key=idem if i == 0 else None,
                                           req_hash=req_hash if i == 0 else None, batch_id=batch_id))
            written = insert_messages(conn, rows)
            results = [_result(item, sim, row) for item, sim, row in zip(parsed, sims, written)]
    except IntegrityError:
        r.release(holds)
        replay = _replay(idem, req_hash, batch=True)
        if replay is not None:
            return replay
        raise
    except ApiError as exc:
        r.release(holds)
        if len(parsed) > 1:
            exc.message = f"batch refused, nothing was queued: {exc.message}"
            exc.extra = {**exc.extra, "index": exc.extra.get("index", len(sims))}
        raise
    except BaseException:
        r.release(holds)
        raise
    for item, sim in zip(parsed, sims):
        r.note_routed(sim.id, item["segments"])
    _wake_modems(rows, written)
    return jsonify({"message": f"{len(results)} SMS queued", "batch_id": batch_id, "messages": results,
                    "count": len(results)}), 201


@bp.post("/api/sms/preview")
@require_role("viewer")
def preview():
    data = json_body()
    text_ = data.get("message")
    if not isinstance(text_, str):
        raise ValidationError({"message": "must be a string"})
    out = seg.preview(text_)
    out["max_segments"] = settings().max_segments
    out["within_limit"] = out["segments"] <= settings().max_segments and bool(text_.strip())
    return jsonify(out)


def message_dict(m: Message) -> dict:
    return {
        "id": m.id,
        "message_id": m.id,
        "direction": m.direction,
        "sender": m.sender,
        "recipient": m.recipient,
        "message": m.message,
        "status": m.status,
        "encoding": m.encoding,
        "segments": m.segments,
        "sim_card_id": m.sim_card_id,
        "sender_sim": m.sender_sim,
        "pinned": m.pinned,
        "on_unavailable": m.on_unavailable,
        "priority": PRIORITY_NAMES.get(m.priority, m.priority),
        "send_at": iso(m.send_at),
        "expires_at": iso(m.expires_at),
        "batch_id": m.batch_id,
        "user_id": m.user_id,
        "attempts": m.attempts,
        "error_code": m.error_code,
        "error_text": m.error_text,
        **seed_time(m.timestamp),
        "queued_at": iso(m.queued_at),
        "sending_at": iso(m.sending_at),
        "sent_at": iso(m.sent_at),
        "delivered_at": iso(m.delivered_at),
        "failed_at": iso(m.failed_at),
        "expired_at": iso(m.expired_at),
        "cancelled_at": iso(m.cancelled_at),
        "received_at": iso(m.received_at),
        "updated_at": iso(m.updated_at),
    }


def _get_message(message_id: int, for_update: bool = False) -> Message:
    stmt = select(Message).where(Message.id == message_id)
    if for_update:
        stmt = stmt.with_for_update()
    msg = db.session.scalar(stmt)
    if msg is None:
        raise NotFound(f"message {message_id} not found")
    return msg


@bp.get("/api/sms/<int:message_id>")
@require_role("viewer")
def detail(message_id: int):
    msg = _get_message(message_id)
    out = message_dict(msg)
    out["events"] = [{"state": e.state, "at": iso(e.at), "source": e.source, "error_code": e.error_code,
                      "error_text": e.error_text, "detail": e.detail} for e in msg.events]
    out["parts"] = [{"seq": p.seq, "sim_card_id": p.sim_card_id, "reference": p.reference, "status": p.status,
                     "sent_at": iso(p.sent_at), "report_at": iso(p.report_at), "report_status": p.report_status}
                    for p in msg.parts]
    return jsonify({"message": out})


@bp.post("/api/sms/<int:message_id>/cancel")
@require_role("user")
def cancel(message_id: int):
    p = current_principal()
    msg = _get_message(message_id, for_update=True)
    if msg.user_id != p.user_id and not p.is_admin:
        raise Forbidden("only the sender of a message or an admin can cancel it")
    if msg.status not in CANCELLABLE_STATES:
        raise Conflict(f"message {message_id} is {msg.status}; only queued messages can be cancelled",
                       code="not_cancellable", extra={"status": msg.status})
    record(db.session, msg, CANCELLED, source="api", detail=f"cancelled by {p.username}")
    audit("cancel_sms", f"cancelled SMS {msg.id} to {msg.recipient}", sender_sim=msg.sender_sim)
    db.session.commit()
    # Its segments no longer count against the SIM's limits (in the windows still current).
    router().give_back(msg.sim_card_id, msg.segments, msg.timestamp)
    # Browsers and the event consumer learn of it like of any other state change.
    event = MessageEventPayload(message_id=msg.id, state=CANCELLED, at=msg.cancelled_at,
                                sim_card_id=msg.sim_card_id, sender=msg.sender, recipient=msg.recipient,
                                segments=msg.segments)
    bus.publish(bus.topics.message_events(), event.to_json(), qos=1)
    return jsonify({"message": "SMS cancelled", "status": msg.status, "message_id": msg.id})


_SEND_ITEM = {
    "type": "object", "required": ["recipient", "message"],
    "properties": {
        "recipient": {"type": "string", "description": "E.164, e.g. +4915112345678"},
        "message": {"type": "string"},
        "sim_card_id": {"type": "integer", "description": "pin a SIM; otherwise the gateway routes"},
        "priority": {"type": "string", "enum": list(PRIORITIES)},
        "send_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": "string", "format": "date-time"},
        "on_unavailable": {"type": "string", "enum": ["wait", "fail"]},
    },
}
_IDEM = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 255},
         "description": "same key + same body returns the original response; a different body gets 409"}
register("/api/sms", "POST", {
    "summary": "Queue an SMS (seed)", "tags": ["sms"], "parameters": [_IDEM], "requestBody": body_spec(_SEND_ITEM),
    "responses": {"200": {"description": "message, message_id, sender_sim, status, sim_card_id, encoding, segments"},
                  "422": {"description": "invalid field or opted-out recipient"},
                  "409": {"description": "Idempotency-Key reused with a different body, or SIM inactive"}}})
register("/api/sms/batch", "POST", {
    "summary": "Queue many SMS, all or nothing", "tags": ["sms"], "parameters": [_IDEM],
    "requestBody": body_spec({"type": "object", "properties": {
        "messages": {"type": "array", "items": _SEND_ITEM},
        "recipients": {"type": "array", "items": {"type": "string"}}, "message": {"type": "string"}}}),
    "responses": {"201": {"description": "batch_id, messages"}}})
register("/api/sms/preview", "POST", {
    "summary": "Encoding and segment count of a text", "tags": ["sms"],
    "requestBody": body_spec({"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}})})
register("/api/sms/<int:message_id>", "GET", {"summary": "Message detail with its state history and parts",
                                              "tags": ["sms"]})
register("/api/sms/<int:message_id>/cancel", "POST", {"summary": "Cancel a queued message", "tags": ["sms"],
                                                      "responses": {"200": {"description": "cancelled"},
                                                                    "409": {"description": "not queued"}}})
