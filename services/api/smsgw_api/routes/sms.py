# Over 500 lines on purpose: the send routes share one parsing, routing hand-off and group commit.
"""Sending: POST /api/sms (the seed's), /api/sms/batch, /api/sms/preview,
GET /api/sms/<id> (detail with history and parts), POST /api/sms/<id>/cancel.

A message is committed as `queued` with its chosen SIM before the response;
the MQTT wake-up to the SIM's modem goes out after the commit and never
blocks: if the broker is down the worker's periodic sweep finds the message.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime

from flask import Blueprint, current_app, g, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from smsgw_api.core.contract import validate
from smsgw_api.core.errors import ApiError, Conflict, Forbidden, NotFound, ValidationError
from smsgw_api.core.extensions import bus, db
from smsgw_api.core.groupcommit import CommitTimeout, GroupCommitter
from smsgw_api.core.openapi import BOOL, INT, NO_BODY, OBJ, STR, TIME, array, nullable, obj, ok, register
from smsgw_api.core.rowjson import flag_unreadable, safe_iso, safe_seed_time
from smsgw_api.core.security import current_principal, require_role
from smsgw_api.core.web import audit, body, client_ip, iso, json_body, parse_int, request_id, seed_time, settings
from smsgw_api.domain.capacity import RouteRequest
from smsgw_api.domain.numbers import PRIORITY_NAMES
from smsgw_api.domain.outbox import insert_messages, opted_out, opted_out_error
from smsgw_api.domain.requests import Preview, SendBatch, SendBatchItems, SendMessage
from smsgw_api.domain.seed_ids import seed_sim_id
from smsgw_api.routes.deps import router
from smsgw_common import segments as seg
from smsgw_common.models import CANCELLABLE_STATES, CANCELLED, PRIORITIES, Message, SimCard, utcnow
from smsgw_common.queue import record
from smsgw_common.schemas import MessageEventPayload, OutboxWakeup

bp = Blueprint("sms", __name__)


def parse_message(data, prefix: str = "", model: SendMessage | None = None) -> dict:
    """One message checked: the model's rules (domain/requests.py), then
    what needs settings or the database; every problem reported at once."""
    s = settings()
    try:
        m = model if model is not None else validate(SendMessage, data, prefix)
    except ValidationError as exc:
        problems = exc.fields or {}
        if set(problems) == {prefix + "message"} and problems[prefix + "message"].startswith("is required"):
            raise ValidationError(problems, message="Message content is required and cannot be empty!") from None
        raise
    fields: dict[str, str] = {}
    out: dict = {"recipient": m.recipient, "priority": PRIORITIES[m.priority], "on_unavailable": m.on_unavailable}
    text_ = m.message.strip()
    if not text_:
        raise ValidationError(
            {prefix + "message": "is required and cannot be empty"},
            message="Message content is required and cannot be empty!",
        )
    info = seg.analyze(text_)
    if info.segments > s.max_segments:
        fields[prefix + "message"] = f"is {info.segments} segments ({info.encoding}); the maximum is {s.max_segments}"
    out.update(message=text_, encoding=info.encoding, segments=info.segments)
    out["sim_card_id"] = None
    if m.sim_card_id is not None:
        # The seed's SIM UUIDs stay usable (docs/migrating-from-the-seed.md).
        try:
            out["sim_card_id"] = parse_int(seed_sim_id(m.sim_card_id), "sim_card_id", 1)
        except ValidationError as exc:
            fields.update({prefix + k: v for k, v in (exc.fields or {}).items()})
    out["site"] = m.site
    if m.site is not None and m.sim_card_id is not None:
        fields[prefix + "site"] = "give sim_card_id or site, not both (a pinned SIM is at its own site)"
    out["send_at"], out["expires_at"] = m.send_at, m.expires_at
    if m.expires_at is not None:
        if m.expires_at <= datetime.now(UTC):
            fields[prefix + "expires_at"] = "must be in the future"
        elif m.send_at is not None and m.expires_at <= m.send_at:
            fields[prefix + "expires_at"] = "must be after send_at"
    if fields:
        raise ValidationError(fields)
    return out


def _duplicates(parsed: list[dict]) -> dict[str, str]:
    """Items that repeat an earlier item's recipient and text (docs/api-contract.md:
    refused, not merged, so that the client sees which of its lines is a repeat)."""
    first: dict[tuple[str, str], int] = {}
    fields: dict[str, str] = {}
    for i, p in enumerate(parsed):
        key = (p["recipient"], p["message"])
        if key in first:
            fields[f"messages[{i}].recipient"] = (
                f"duplicate of messages[{first[key]}] (same recipient and text); send it once"
            )
        else:
            first[key] = i
    return fields


def request_hash(body: dict) -> str:
    canonical = json.dumps(
        {"path": request.path, "body": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255:
        raise ValidationError({"Idempotency-Key": "must be 1-255 characters"})
    return key


def _route(conn, parsed: list[dict]):
    """A SIM for each message, all or nothing, with its segments counted
    against the SIM's limits (domain/routing.py): [(sim, hold)], where a hold is
    given back with `router().release` if the message is not queued after all."""
    return router().route(
        conn,
        [RouteRequest(p["segments"], p["sim_card_id"], p["on_unavailable"], p["site"], p["recipient"]) for p in parsed],
    )


def _insert_params(parsed: dict, sim, *, idem_key, req_hash, batch_id) -> dict:
    p = current_principal()
    return {
        "sender": sim.number,
        "recipient": parsed["recipient"],
        "message": parsed["message"],
        "encoding": parsed["encoding"],
        "segments": parsed["segments"],
        "sim_card_id": sim.id,
        "pinned": parsed["sim_card_id"] is not None,
        "priority": parsed["priority"],
        "send_at": parsed["send_at"],
        "expires_at": parsed["expires_at"],
        "idem_key": idem_key,
        "req_hash": req_hash,
        "batch_id": batch_id,
        "user_id": p.user_id,
        "api_key_id": p.api_key_id,
        "event_detail": f"routed to SIM {sim.id}"
        + (" (pinned)" if parsed["sim_card_id"] is not None else "")
        + (f" (site {sim.site})" if sim.site else ""),
        "actor": p.actor,
        "ip": client_ip(),
        "request_id": request_id(),
        "on_unavailable": parsed["on_unavailable"],
        "site": parsed["site"],
        # Not a column: the modem to wake once this row is committed.
        "_wake": sim.modem_id if _due_now(parsed) else None,
    }


def _answer(
    message_id: int, sender_sim, sim_card_id, modem_id, recipient: str, encoding: str, segments: int, timestamp, send_at
) -> dict:
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
        raise opted_out_error([parsed["recipient"]])
    return _answer(
        row.id,
        sim.number,
        sim.id,
        sim.modem_id,
        parsed["recipient"],
        parsed["encoding"],
        parsed["segments"],
        row.timestamp,
        parsed["send_at"],
    )


def committer() -> GroupCommitter:
    gc = current_app.extensions.get("smsgw_group_commit")
    if gc is None:
        # insert_messages is ONE statement, so autocommit makes it atomic and
        # durable on its own: one round trip per batch instead of BEGIN,
        # INSERT and COMMIT (psycopg2 sends each separately).
        gc = current_app.extensions["smsgw_group_commit"] = GroupCommitter(
            db.engine.execution_options(isolation_level="AUTOCOMMIT"), insert_messages, after_commit=_wake_modems
        )
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
    return parsed["send_at"] is None or parsed["send_at"] <= datetime.now(UTC)


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
        return ApiError(
            "the database is busy; the SMS was not queued, send it again",
            503,
            "database_busy",
            headers={"Retry-After": "1"},
            extra={"outcome": "not_queued"},
        )
    how = (
        "retry with the same Idempotency-Key: it returns the message if it was queued"
        if idem_key
        else "look for it in GET /api/sms/outbox before sending again, or send with an Idempotency-Key"
    )
    return ApiError(
        f"the database did not confirm the commit in time; the SMS may or may not be queued: {how}",
        503,
        "outcome_unknown",
        headers={"Retry-After": "1"},
        extra={"outcome": "unknown"},
    )


def _existing(idem_key: str, req_hash: str | None):
    """A previous request with this Idempotency-Key: its response, or 409."""
    p = current_principal()
    first = db.session.scalar(select(Message).where(Message.user_id == p.user_id, Message.idempotency_key == idem_key))
    if first is None:
        db.session.rollback()  # release the connection before the write takes another
        return None
    if first.request_hash != req_hash:
        raise Conflict("this Idempotency-Key was used with a different request body", code="idempotency_mismatch")
    if first.batch_id:
        rows = db.session.scalars(select(Message).where(Message.batch_id == first.batch_id).order_by(Message.id)).all()
    else:
        rows = [first]
    modems = dict(
        db.session.execute(
            select(SimCard.id, SimCard.modem_id).where(SimCard.id.in_({m.sim_card_id for m in rows}))
        ).all()
    )
    # The SIM is the one it is on now, which differs only if it was rerouted.
    out = [
        _answer(
            m.id,
            m.sender_sim,
            m.sim_card_id,
            modems.get(m.sim_card_id),
            m.recipient,
            m.encoding,
            m.segments,
            m.timestamp,
            m.send_at,
        )
        for m in rows
    ]
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
    if isinstance(data.get("messages"), list) and "recipients" in data:
        raise ValidationError({"recipients": "send either messages or recipients+message, not both"})
    batch = validate(SendBatch, data)
    if batch.messages is not None:
        models = batch.messages
    elif batch.recipients is not None:
        common = {k: v for k, v in data.items() if k != "recipients"}
        models = validate(SendBatchItems, {"messages": [{**common, "recipient": r} for r in batch.recipients]}).messages
    else:
        raise ValidationError({"messages": "send a list of messages, or recipients (a list) and message"})
    if len(models) > s.max_batch_size:
        raise ValidationError({"messages": f"at most {s.max_batch_size} messages per batch"})
    fields: dict[str, str] = {}
    parsed = []
    for i, model in enumerate(models):
        try:
            parsed.append(parse_message(None, prefix=f"messages[{i}].", model=model))
        except ValidationError as exc:
            fields.update(exc.fields or {})
    if fields:
        raise ValidationError(fields)
    duplicates = _duplicates(parsed)
    if duplicates:
        raise ValidationError(duplicates, code="duplicate_recipient")
    batch_id = str(uuid.uuid4())
    sims, holds = [], []
    r = router()
    try:
        with db.engine.begin() as conn:
            opted_out(conn, sorted({p["recipient"] for p in parsed}))
            # Every message's SIM and counters at once, or none (a 429 names the index).
            routed = _route(conn, parsed)
            sims, holds = [sim for sim, _ in routed], [hold for _, hold in routed]
            rows = []
            for i, (item, sim) in enumerate(zip(parsed, sims)):
                # The key rides on the first row; a replay finds the batch by it.
                rows.append(
                    _insert_params(
                        item,
                        sim,
                        idem_key=idem if i == 0 else None,
                        req_hash=req_hash if i == 0 else None,
                        batch_id=batch_id,
                    )
                )
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
    return jsonify(
        {"message": f"{len(results)} SMS queued", "batch_id": batch_id, "messages": results, "count": len(results)}
    ), 201


@bp.post("/api/sms/preview")
@require_role("viewer")
def preview():
    text_ = body(Preview).message
    out = seg.preview(text_)
    out["max_segments"] = settings().max_segments
    out["within_limit"] = out["segments"] <= settings().max_segments and bool(text_.strip())
    return jsonify(out)


# Every stored date of a message; one Python cannot hold is shown as null and flagged.
MESSAGE_TIME_FIELDS = (
    "send_at",
    "expires_at",
    "timestamp",
    "queued_at",
    "sending_at",
    "sent_at",
    "delivered_at",
    "failed_at",
    "expired_at",
    "cancelled_at",
    "received_at",
    "updated_at",
)


def message_dict(m: Message) -> dict:
    out = {
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
        "site": m.site,
        "priority": PRIORITY_NAMES.get(m.priority, m.priority),
        "send_at": safe_iso(m.send_at),
        "expires_at": safe_iso(m.expires_at),
        "batch_id": m.batch_id,
        "user_id": m.user_id,
        "attempts": m.attempts,
        "error_code": m.error_code,
        "error_text": m.error_text,
        **safe_seed_time(m.timestamp),
        "queued_at": safe_iso(m.queued_at),
        "sending_at": safe_iso(m.sending_at),
        "sent_at": safe_iso(m.sent_at),
        "delivered_at": safe_iso(m.delivered_at),
        "failed_at": safe_iso(m.failed_at),
        "expired_at": safe_iso(m.expired_at),
        "cancelled_at": safe_iso(m.cancelled_at),
        "received_at": safe_iso(m.received_at),
        "updated_at": safe_iso(m.updated_at),
    }
    return flag_unreadable(out, m, MESSAGE_TIME_FIELDS)


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
    out["events"] = [
        {
            "state": e.state,
            "at": safe_iso(e.at),
            "source": e.source,
            "error_code": e.error_code,
            "error_text": e.error_text,
            "detail": e.detail,
        }
        for e in msg.events
    ]
    out["parts"] = [
        {
            "seq": p.seq,
            "sim_card_id": p.sim_card_id,
            "reference": p.reference,
            "status": p.status,
            "sent_at": safe_iso(p.sent_at),
            "report_at": safe_iso(p.report_at),
            "report_status": p.report_status,
        }
        for p in msg.parts
    ]
    return jsonify({"message": out})


@bp.post("/api/sms/<int:message_id>/cancel")
@require_role("user")
def cancel(message_id: int):
    p = current_principal()
    msg = _get_message(message_id, for_update=True)
    if msg.user_id != p.user_id and not p.is_admin:
        raise Forbidden("only the sender of a message or an admin can cancel it")
    if msg.status not in CANCELLABLE_STATES:
        raise Conflict(
            f"message {message_id} is {msg.status}; only queued messages can be cancelled",
            code="not_cancellable",
            extra={"status": msg.status},
        )
    cancelled_at = utcnow()
    record(db.session, msg, CANCELLED, source="api", at=cancelled_at, detail=f"cancelled by {p.username}")
    audit("cancel_sms", f"cancelled SMS {msg.id} to {msg.recipient}", sender_sim=msg.sender_sim)
    db.session.commit()
    # Its segments no longer count against the SIM's limits (in the windows still current).
    router().give_back(msg.sim_card_id, msg.segments, msg.timestamp)
    # Browsers and the event consumer learn of it like of any other state change.
    event = MessageEventPayload(
        message_id=msg.id,
        state=CANCELLED,
        at=cancelled_at,
        sim_card_id=msg.sim_card_id,
        sender=msg.sender,
        recipient=msg.recipient,
        segments=msg.segments,
    )
    bus.publish(bus.topics.message_events(), event.to_json(), qos=1)
    return jsonify({"message": "SMS cancelled", "status": msg.status, "message_id": msg.id})


_IDEM = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
    "description": "same key + same body returns the original response; a different body gets 409",
}
_QUEUED = {
    "message": STR,
    "message_id": INT,
    "sms_id": INT,
    "id": INT,
    "sender_sim": nullable(STR),
    "sim_card_id": INT,
    "modem_id": nullable(STR),
    "status": STR,
    "recipient": STR,
    "encoding": STR,
    "segments": INT,
    "timestamp": nullable(INT),
    "created_at": TIME,
    "send_at": TIME,
}
_MESSAGE = obj(
    {
        "id": INT,
        "message_id": INT,
        "direction": STR,
        "sender": nullable(STR),
        "recipient": nullable(STR),
        "message": STR,
        "status": STR,
        "encoding": nullable(STR),
        "segments": nullable(INT),
        "sim_card_id": nullable(INT),
        "site": nullable(STR),
        "priority": {"type": ["string", "integer"]},
        "send_at": TIME,
        "expires_at": TIME,
        "timestamp": nullable(INT),
        "created_at": TIME,
        "events": array(OBJ),
        "parts": array(OBJ),
    }
)
register(
    "/api/sms",
    "POST",
    {
        "summary": "Queue an SMS (seed)",
        "tags": ["sms"],
        "parameters": [_IDEM],
        "responses": {
            "200": ok(_QUEUED, "Queued (200, the seed's status code)"),
            "409": {"description": "Idempotency-Key reused with a different body, or SIM inactive"},
            "422": {"description": "opted-out recipient"},
            "429": {"description": "every SIM at its limits"},
            "503": {"description": "no SIM available, or the database busy"},
        },
    },
    body=SendMessage,
)
register(
    "/api/sms/batch",
    "POST",
    {
        "summary": "Queue many SMS, all or nothing",
        "tags": ["sms"],
        "parameters": [_IDEM],
        "responses": {
            "201": ok({"message": STR, "batch_id": STR, "messages": array(obj(_QUEUED)), "count": INT}, "Queued"),
            "200": ok({"batch_id": STR, "messages": array(obj(_QUEUED)), "count": INT}, "Replayed", ["messages"]),
        },
    },
    body=SendBatch,
)
register(
    "/api/sms/preview",
    "POST",
    {
        "summary": "Encoding and segment count of a text",
        "tags": ["sms"],
        "responses": {
            "200": ok({"encoding": STR, "segments": INT, "max_segments": INT, "within_limit": BOOL}),
        },
    },
    body=Preview,
)
register(
    "/api/sms/<int:message_id>",
    "GET",
    {
        "summary": "Message detail with its state history and parts",
        "tags": ["sms"],
        "responses": {"200": ok({"message": _MESSAGE})},
    },
)
register(
    "/api/sms/<int:message_id>/cancel",
    "POST",
    {
        "summary": "Cancel a queued message",
        "tags": ["sms"],
        "responses": {
            "200": ok({"message": STR, "status": STR, "message_id": INT}, "Cancelled"),
            "409": {"description": "not queued"},
        },
    },
    body=NO_BODY,
)
