"""The durable outbound queue in Postgres (docs/architecture.md, "Where truth lives").

Every state change goes through `record`, which stamps the per-state time and
appends to the message's history in the same transaction. Workers take work
with `claim` (FOR UPDATE SKIP LOCKED, with a lease); `reclaim_expired_leases`
puts the work of a dead worker back (and `settle_own_claims` that of a
restarted one at once, without waiting for the lease), except a segment that may have left:
a part in `submitting` means AT+CMGS was written and no +CMGS recorded, and
such a message becomes `unknown` instead of being sent twice, unless the
network already reported one of its parts as never to be delivered: then it
is `failed` with that report's TP-ST (the network told us).

A row whose dates Python cannot hold (rowsafety.py) is never claimed,
reclaimed or expired: `quarantine_unreadable` fails it with
`unreadable row: <field> out of range`, so one such row never stops a queue.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from .models import (
    CANCELLED,
    DELIVERED,
    EXPIRED,
    FAILED,
    QUEUED,
    RECEIVED,
    SENDING,
    SENT,
    UNKNOWN,
    Message,
    MessageEvent,
    MessagePart,
    SimCard,
    utcnow,
)
from .rowsafety import readable, unreadable
from .schemas import MessageEventPayload

log = logging.getLogger(__name__)

# Dates the queue decides on; one Python cannot read makes the row unworkable.
QUEUE_TIME_FIELDS = ("send_at", "expires_at", "next_attempt_at", "lease_until")
OUTBOUND = "outbound"  # the only direction a queue holds (models.Message.direction)

# Part states: written before AT+CMGS, then the outcome.
PART_SUBMITTING, PART_SENT, PART_DELIVERED, PART_FAILED = "submitting", "sent", "delivered", "failed"

# TP-ST values of a final failure report (TS 23.040 9.2.3.15).
REPORT_TEXT = {
    0x40: "remote procedure error",
    0x41: "incompatible destination",
    0x42: "connection rejected by SME",
    0x43: "not obtainable",
    0x44: "quality of service not available",
    0x45: "no interworking available",
    0x46: "SM validity period expired",
    0x47: "SM deleted by originating SME",
    0x48: "SM deleted by SC administration",
    0x49: "SM does not exist",
}


def report_error(status: int) -> str:
    """The error text of a message failed by a status report."""
    reason = REPORT_TEXT.get(status, "permanent delivery failure")
    return f"delivery failed: TP-ST {status:#04x} ({reason})"


STATE_TIME_FIELD = {
    QUEUED: "queued_at",
    SENDING: "sending_at",
    SENT: "sent_at",
    DELIVERED: "delivered_at",
    FAILED: "failed_at",
    EXPIRED: "expired_at",
    CANCELLED: "cancelled_at",
    RECEIVED: "received_at",
}


def record(
    session: Session,
    msg: Message,
    state: str,
    *,
    source: str,
    error_code: int | None = None,
    error_text: str | None = None,
    detail: str | None = None,
    at: datetime | None = None,
) -> MessageEvent:
    """Move `msg` to `state` and append the change to its history."""
    at = at or utcnow()
    if msg.id is None:
        session.add(msg)
        session.flush()
    msg.status = state
    field = STATE_TIME_FIELD.get(state)
    if field:
        setattr(msg, field, at)
    if error_code is not None or error_text is not None:
        msg.error_code, msg.error_text = error_code, error_text
    event = MessageEvent(
        message_id=msg.id,
        state=state,
        at=at,
        source=source,
        error_code=error_code,
        error_text=error_text,
        detail=detail,
    )
    session.add(event)
    return event


def claimable(sim_card_id: int, now: datetime) -> list[ColumnElement[bool]]:
    """What makes a message due for `claim` (and for the worker's look at what fits)."""
    return [
        Message.status == QUEUED,
        Message.direction == OUTBOUND,
        Message.sim_card_id == sim_card_id,
        or_(Message.send_at.is_(None), Message.send_at <= now),
        or_(Message.next_attempt_at.is_(None), Message.next_attempt_at <= now),
        or_(Message.expires_at.is_(None), Message.expires_at > now),
        # Out-of-range rows are quarantine_unreadable's, never a claim's.
        *(readable(getattr(Message, name)) for name in QUEUE_TIME_FIELDS),
    ]


def claim(
    session: Session,
    sim_card_id: int,
    worker_id: str,
    *,
    lease_seconds: float = 300,
    limit: int = 1,
    now: datetime | None = None,
) -> list[Message]:
    """Take up to `limit` due queued messages of one SIM, highest priority first.

    Concurrent claimers never get the same row (SKIP LOCKED); the caller
    commits the session to make the claim visible.
    """
    now = now or utcnow()
    ids = session.scalars(
        select(Message.id)
        .where(*claimable(sim_card_id, now))
        .order_by(Message.priority.desc(), Message.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not ids:
        return []
    messages = session.scalars(
        select(Message).where(Message.id.in_(ids)).order_by(Message.priority.desc(), Message.id)
    ).all()
    lease = now + timedelta(seconds=lease_seconds)
    for msg in messages:
        msg.worker_id = worker_id
        msg.lease_until = lease
        msg.attempts = (msg.attempts or 0) + 1
        record(session, msg, SENDING, source=worker_id, at=now)
    return list(messages)


def extend_lease(session: Session, message_id: int, worker_id: str, seconds: float) -> bool:
    """Keep a long send (many segments, slow network) from being reclaimed."""
    result = session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == SENDING, Message.worker_id == worker_id)
        .values(lease_until=utcnow() + timedelta(seconds=seconds))
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]  # an UPDATE's CursorResult


def reclaim_expired_leases(session: Session, *, source: str = "sweeper", now: datetime | None = None) -> dict[str, int]:
    """Return the work of workers whose lease ran out. Returns counts by outcome."""
    now = now or utcnow()
    rows = session.scalars(
        select(Message)
        .where(
            Message.status == SENDING,
            Message.lease_until < now,
            *(readable(getattr(Message, name)) for name in QUEUE_TIME_FIELDS),
        )
        .with_for_update(skip_locked=True)
    ).all()
    counts = {QUEUED: 0, UNKNOWN: 0, FAILED: 0}
    for msg in rows:
        holder = msg.worker_id or "?"
        state = give_back(
            session,
            msg,
            source=source,
            now=now,
            in_doubt=f"lease of {holder} expired with a part written to the modem and no answer recorded "
            "(the worker died, or lost the database, after writing the PDU); "
            "not resent to avoid a duplicate (its journal corrects this if it knew the answer)",
            requeued="lease expired; requeued",
            refund=False,
        )
        counts[state] += 1
    return counts


# Details of a restarted worker's own claims (settle_own_claims).
RESTARTED_IN_DOUBT = (
    "worker restarted after writing the PDU, before the modem answered; not resent to avoid a duplicate"
)
RESTARTED_UNSENT = "worker restarted before sending it; requeued (no attempt spent)"
DB_LOST_IN_DOUBT = (
    "the worker lost the database while sending a part and holds no answer from the modem for it; "
    "not resent to avoid a duplicate"
)
DB_LOST_UNSENT = "the worker lost the database before sending it; requeued (no attempt spent)"


def settle_own_claims(
    session: Session, worker_id: str, *, booted_at: datetime, now: datetime | None = None
) -> list[tuple[Message, str]]:
    """Settle at once the claims `worker_id` holds but is not working on (a
    restart, or a batch cut short by a database outage), instead of waiting
    for their leases: call it only between batches, after the journal replay.
    Claims made before `booted_at` are a previous run's. Returns what changed."""
    now = now or utcnow()
    rows = session.scalars(
        select(Message)
        .where(
            Message.status == SENDING,
            Message.worker_id == worker_id,
            *(readable(getattr(Message, name)) for name in QUEUE_TIME_FIELDS),
        )
        .order_by(Message.id)
        .with_for_update(skip_locked=True)
    ).all()
    changed = []
    for msg in rows:
        earlier_run = msg.sending_at is None or msg.sending_at < booted_at
        state = give_back(
            session,
            msg,
            source=worker_id,
            now=now,
            in_doubt=RESTARTED_IN_DOUBT if earlier_run else DB_LOST_IN_DOUBT,
            requeued=RESTARTED_UNSENT if earlier_run else DB_LOST_UNSENT,
            refund=True,
        )
        changed.append((msg, state))
    return changed


def give_back(
    session: Session, msg: Message, *, source: str, now: datetime, in_doubt: str, requeued: str, refund: bool
) -> str:
    """End a claim nobody works on: `failed` if the network reported a part
    lost, `unknown` if a part may have left (in_doubt), else back to the
    queue (with its attempt refunded if `refund`). Returns the new state."""
    msg.worker_id = None
    msg.lease_until = None
    # A part the network reported as never to be delivered: the message
    # cannot arrive whole, whatever became of the segment in doubt.
    doomed = session.execute(
        select(MessagePart.seq, MessagePart.report_status)
        .where(
            MessagePart.message_id == msg.id,
            MessagePart.status == PART_FAILED,
            MessagePart.report_status.is_not(None),
        )
        .order_by(MessagePart.report_at, MessagePart.seq)
        .limit(1)
    ).first()
    if doomed is not None:
        # report_status IS NOT NULL in the query above.
        seq, status = doomed[0], cast(int, doomed[1])
        record(
            session,
            msg,
            FAILED,
            source=source,
            at=now,
            error_code=status,
            error_text=report_error(status),
            detail=f"claim ended; status report for part {seq}",
        )
        return FAILED
    if session.scalar(
        select(exists().where(and_(MessagePart.message_id == msg.id, MessagePart.status == PART_SUBMITTING)))
    ):
        record(session, msg, UNKNOWN, source=source, at=now, detail=in_doubt)
        return UNKNOWN
    if refund:
        msg.attempts = max(0, (msg.attempts or 1) - 1)
    record(session, msg, QUEUED, source=source, at=now, detail=requeued)
    return QUEUED


def expire_due(
    session: Session, *, report_timeout: timedelta, source: str = "sweeper", now: datetime | None = None
) -> dict[str, int]:
    """Queued messages past `expires_at`, and sent ones with no delivery report
    after `report_timeout`, become `expired`: never pending forever."""
    now = now or utcnow()
    counts = {"validity": 0, "no_report": 0}
    queued = session.scalars(
        select(Message)
        .where(
            Message.status == QUEUED,
            Message.expires_at.is_not(None),
            Message.expires_at <= now,
            *(readable(getattr(Message, name)) for name in QUEUE_TIME_FIELDS),
        )
        .with_for_update(skip_locked=True)
        .limit(1000)
    ).all()
    for msg in queued:
        record(session, msg, EXPIRED, source=source, at=now, detail="validity period ended before sending")
        counts["validity"] += 1
    sent = session.scalars(
        select(Message)
        .where(Message.status == SENT, Message.sent_at < now - report_timeout, readable(Message.sent_at))
        .with_for_update(skip_locked=True)
        .limit(1000)
    ).all()
    for msg in sent:
        record(
            session,
            msg,
            EXPIRED,
            source=source,
            at=now,
            detail=f"no delivery report within {int(report_timeout.total_seconds())}s; delivery unknown",
        )
        counts["no_report"] += 1
    return counts


def unreadable_error(field: str) -> str:
    return f"unreadable row: {field} out of range"


def quarantine_unreadable(
    session: Session, *, source: str = "sweeper", now: datetime | None = None, limit: int = 1000
) -> list[tuple[int, str]]:
    """Fail queued and sending messages whose queue dates Python cannot hold,
    or that are not outbound (written by hand or restored, never through the
    API): they could never be sent as meant, and left alone they would sit in
    the queue for ever.
    Returns (message id, field) per message failed; each is logged."""
    now = now or utcnow()
    found: list[tuple[int, str]] = []
    # Only outbound messages are ever queued: anything else in the queue is not ours to send.
    strays = session.scalars(
        select(Message)
        .where(Message.status.in_((QUEUED, SENDING)), or_(Message.direction.is_(None), Message.direction != OUTBOUND))
        .order_by(Message.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for msg in strays:
        _set_aside(session, msg, "direction", source, now)
        found.append((msg.id, "direction"))
    for name in QUEUE_TIME_FIELDS:
        if len(found) >= limit:
            break
        rows = session.scalars(
            select(Message)
            .where(Message.status.in_((QUEUED, SENDING)), unreadable(getattr(Message, name)))
            .order_by(Message.id)
            .limit(limit - len(found))
            .with_for_update(skip_locked=True)
        ).all()
        for msg in rows:
            if any(msg.id == seen for seen, _ in found):
                continue
            _set_aside(session, msg, name, source, now)
            found.append((msg.id, name))
    return found


def _set_aside(session: Session, msg: Message, field: str, source: str, now: datetime) -> None:
    msg.worker_id = None
    error = unreadable_error(field)
    record(session, msg, FAILED, source=source, at=now, error_text=error, detail="set aside by the sweep")
    log.warning("message %s failed: %s", msg.id, error)


def sim_allowance(session: Session, sim_card_id: int | None) -> int | None:
    """Segments a SIM may still hand to its modem or board now under its caps
    (None: no cap): the last 60 s, the calendar day and month in UTC, as
    carriers count and as the API's routing counts, from the parts actually
    handed over. An inactive or missing SIM may send nothing."""
    sim = session.get(SimCard, sim_card_id) if sim_card_id is not None else None
    if sim is None or sim.status != "active":
        return 0
    limits = (sim.limit_per_minute, sim.limit_per_day, sim.limit_per_month)
    if all(limit is None for limit in limits):
        return None
    now = utcnow()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    windows = (now - timedelta(minutes=1), day, day.replace(day=1))
    used = session.execute(
        select(*[func.count().filter(MessagePart.sent_at >= start) for start in windows]).where(
            MessagePart.sim_card_id == sim_card_id, MessagePart.sent_at >= min(windows)
        )
    ).one()
    return min(int(limit - count) for limit, count in zip(limits, used, strict=True) if limit is not None)


def queue_depth(session: Session, sim_card_id: int | None) -> int | None:
    """Messages waiting for this SIM (a modem's state reports it)."""
    if sim_card_id is None:
        return None
    return session.scalar(
        select(func.count()).select_from(Message).where(Message.sim_card_id == sim_card_id, Message.status == QUEUED)
    )


def event_of(msg: Message, state: str, modem_id: str, **extra: Any) -> MessageEventPayload:
    """The `events/messages` payload a worker publishes after committing `state`."""
    return MessageEventPayload(
        message_id=msg.id,
        state=state,
        direction="inbound" if msg.direction == "inbound" else "outbound",
        at=utcnow(),
        sim_card_id=msg.sim_card_id,
        modem_id=modem_id,
        sender=msg.sender,
        recipient=msg.recipient,
        segments=msg.segments,
        error_code=msg.error_code,
        error_text=msg.error_text,
        **extra,
    )


def sweep(session: Session, *, source: str, report_timeout: timedelta) -> list[tuple[Message, str]]:
    """A worker's housekeeping, committed: unreadable rows set aside, lapsed
    leases put back, messages past their validity or report time expired.
    Returns each message it changed with its new state (to publish)."""
    now = utcnow()
    quarantined = quarantine_unreadable(session, source=source, now=now)
    reclaimed = reclaim_expired_leases(session, source=source, now=now)
    expired = expire_due(session, report_timeout=report_timeout, source=source, now=now)
    session.commit()
    if not (quarantined or any(reclaimed.values()) or any(expired.values())):
        return []
    log.info(
        "sweep: reclaimed %s, expired %s, unreadable %s",
        reclaimed,
        expired,
        [message_id for message_id, _ in quarantined],
    )
    # The sweep's own history rows tell which messages changed.
    changed = session.execute(
        select(Message, MessageEvent.state)
        .join(MessageEvent, MessageEvent.message_id == Message.id)
        .where(MessageEvent.source == source, MessageEvent.at == now)
    ).all()
    return [(msg, state) for msg, state in changed]


def claim_limit(session: Session, sim_card_id: int | None, batch: int) -> int:
    """How many messages (at most `batch`) a worker may claim for this SIM now:
    the due ones, in claim order, whose segments fit its caps (sim_allowance)."""
    allowance = sim_allowance(session, sim_card_id)
    if allowance is None:
        return batch
    if sim_card_id is None:
        return 0
    segment_counts = session.scalars(
        select(Message.segments)
        .where(*claimable(sim_card_id, utcnow()))
        .order_by(Message.priority.desc(), Message.id)
        .limit(batch)
    ).all()
    count = 0
    for segments in segment_counts:
        allowance -= segments or 1
        if allowance < 0:
            break
        count += 1
    return count
