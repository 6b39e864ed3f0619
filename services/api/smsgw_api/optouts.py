"""Opt-outs: recipients who asked not to be messaged.

An inbound SMS whose whole text is an opt-out keyword (OPTOUT_KEYWORDS,
default STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT) adds its sender; an
opt-in keyword (OPTIN_KEYWORDS, default START, UNSTOP) removes it. Both are
idempotent, so a repeated event changes nothing. `POST /api/sms` refuses
opted-out recipients; admins view and edit the list here.

Postgres is the truth for which keywords have been applied, as for webhook
deliveries (webhooks.py): the events leader reads the `messages` table past
a durable cursor of its own (`event_cursors` row `optouts.inbound_messages`)
and applies every inbound keyword in the transaction that moves the cursor
(`KeywordApplier`). An inbound SMS whose MQTT copy never reached a leader
(lost with a leader's in-memory queue, published while the broker was down)
is still applied; MQTT only wakes the applier up early, so a STOP takes
effect within a second.
"""
from __future__ import annotations

import logging
import re

from flask import Blueprint, Flask, jsonify, request
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, IntegrityError

from smsgw_common.models import OptOut

from .errors import NotFound, ValidationError
from .extensions import db
from .openapi import PAGINATION_PARAMS, json_body as body_spec, query, register
from .realtime import WakeableLoop, emit, pipeline_settings
from .security import require_role
from .web import Page, audit, iso, json_body
from .webhooks import EventDeriver

log = logging.getLogger(__name__)

bp = Blueprint("optouts", __name__)

CURSOR_NAME = "optouts.inbound_messages"

_SEPARATORS = re.compile(r"[\s\-().]")
_TRAILING = re.compile(r"[\s.!?,;:]+$")


def normalize_number(number: str) -> str:
    """The form POST /api/sms compares recipients in (E.164); a sender that is
    not a phone number (an alphanumeric name) is kept as written."""
    from .sms import normalize_number as e164

    try:
        return e164(number, "number")
    except ValidationError:
        return _SEPARATORS.sub("", number or "")


def keyword_of(text: str | None) -> str | None:
    if not text:
        return None
    word = _TRAILING.sub("", text.strip()).upper()
    return word if word and " " not in word and len(word) <= 20 else None


def apply_keyword(session, app: Flask, sender: str | None, text: str | None) -> dict | None:
    """Handle STOP/START in an inbound SMS; returns the change, if any.
    Runs in the caller's transaction."""
    word = keyword_of(text)
    if not word or not sender:
        return None
    s = pipeline_settings(app)
    number = normalize_number(sender)
    if word in s.optout_keywords:
        inserted = session.execute(
            insert(OptOut)
            .values(number=number, source="keyword", note=f"received {word}")
            .on_conflict_do_nothing(index_elements=["number"])
            .returning(OptOut.id)
        ).first()
        return {"number": number, "opted_out": True, "keyword": word} if inserted else None
    if word in s.optin_keywords:
        removed = session.execute(delete(OptOut).where(OptOut.number == number)).rowcount
        return {"number": number, "opted_out": False, "keyword": word} if removed else None
    return None


def announce(change: dict) -> None:
    # Only admins manage the list, so only they are told about changes.
    emit("opt_out_update", change, min_role="admin")


# --- Applying keywords from the inbound history (leader only) -----------------


class InboundKeywords(EventDeriver):
    """Applies STOP/START from `messages` rows past the durable cursor.

    Every message id is scanned, outbound ones too: ids come from one
    sequence, so only a contiguous scan tells a row still being committed
    (handled late, the cursor waits before it) from one of the other
    direction. Applying is idempotent (an opt-out already there, an opt-in
    of a number not listed: no change, no announcement), so a replay after a
    hand-over or a rewound cursor changes nothing; changes are announced to
    admins only once their transaction has committed.
    """

    cursor_name = CURSOR_NAME
    # Where a missing cursor starts: the present (migration 0003 creates it).
    start_sql = "SELECT coalesce(max(id), 0) FROM messages WHERE direction = 'inbound'"
    rows_sql = """
        SELECT e.id, e.direction, e.sender,
               CASE WHEN e.direction = 'inbound' THEN e.message END AS message
        FROM messages e
    """

    def __init__(self, app: Flask, sessionmaker, **kw):
        super().__init__(sessionmaker, **kw)
        self.app = app
        self._changes: list[dict] = []

    def handle(self, session, rows) -> int:
        applied = 0
        for row in rows:
            if row.direction != "inbound" or keyword_of(row.message) is None:
                continue
            try:
                # A row the list cannot take (bad data) must not block every
                # later keyword behind the cursor: it is logged and passed.
                with session.begin_nested():
                    change = apply_keyword(session, self.app, row.sender, row.message)
            except (DataError, IntegrityError):
                log.exception("opt-out keyword of inbound message %s could not be applied", row.id)
                continue
            applied += 1
            if change:
                self._changes.append(change)
        return applied

    def run_once(self) -> tuple[int, bool]:
        self._changes = []
        try:
            result = super().run_once()
            changes = self._changes  # committed
        finally:
            self._changes = []
        for change in changes:
            announce(change)
        return result


class KeywordApplier(WakeableLoop):
    """The events leader's loop around `InboundKeywords`: a round at once on
    `wake()` (an inbound MQTT event), else every WEBHOOK_POLL_SECONDS (the
    same period as the webhook dispatcher's reading of the history), so a
    keyword whose MQTT copy was lost waits at most that long."""

    thread_name = "optout-keywords"

    def __init__(self, app: Flask):
        super().__init__()
        self.app = app
        self.settings = pipeline_settings(app)
        self.deriver = InboundKeywords(app, db.state(app).sessionmaker)

    def run(self) -> None:
        while not self.stopping.is_set():
            self._wake.clear()
            more = self.deriver.run_round("applying opt-out keywords")
            if not more:
                self._wake.wait(self.settings.webhook_poll_interval)


def optout_json(row: OptOut) -> dict:
    return {"id": row.id, "number": row.number, "source": row.source, "note": row.note,
            "created_at": iso(row.created_at)}


@bp.get("/api/opt-outs")
@require_role("admin")
def list_optouts():
    page = Page()
    q = select(OptOut)
    count_q = select(func.count()).select_from(OptOut)
    term = request.args.get("q")
    if term:
        like = f"%{normalize_number(term)}%"
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
    data = json_body()
    from .sms import normalize_number as e164

    number = e164(data.get("number"), "number")
    note = data.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 500):
        raise ValidationError({"note": "must be a string of at most 500 characters"})
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
    number = normalize_number(number)
    removed = db.session.execute(delete(OptOut).where(OptOut.number == number)).rowcount
    if not removed:
        raise NotFound(f"{number} is not on the opt-out list", code="opt_out_not_found")
    audit("opt_out_remove", f"{number} removed from the opt-out list by an admin")
    db.session.commit()
    announce({"number": number, "opted_out": False, "keyword": None})
    return jsonify({"message": f"{number} removed from the opt-out list"})


def init_app(app: Flask) -> None:
    if "optouts" in app.blueprints:
        return
    app.register_blueprint(bp)
    tags = ["opt-outs"]
    register("/api/opt-outs", "GET", {"summary": "List opted-out numbers (admin)", "tags": tags,
                                      "parameters": PAGINATION_PARAMS + [query("q", description="number contains")]})
    register("/api/opt-outs", "POST", {
        "summary": "Opt a number out (admin)", "tags": tags,
        "requestBody": body_spec({"type": "object", "required": ["number"], "properties": {
            "number": {"type": "string"}, "note": {"type": "string"}}}),
        "responses": {"201": {"description": "Added"}, "200": {"description": "Already on the list"}}})
    register("/api/opt-outs/<path:number>", "DELETE", {"summary": "Remove a number (admin)", "tags": tags})
