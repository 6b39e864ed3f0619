"""The durable outbound queue in Postgres (DESIGN.md, "Where truth lives").

Every state change goes through `record`, which stamps the per-state time and
appends to the message's history in the same transaction. Workers take work
with `claim` (FOR UPDATE SKIP LOCKED, with a lease); `reclaim_expired_leases`
puts the work of a dead worker back, except a segment that may have left:
a part in `submitting` means AT+CMGS was written and no +CMGS recorded, and
such a message becomes `unknown` instead of being sent twice, unless the
network already reported one of its parts as never to be delivered: then it
is `failed` with that report's TP-ST (the network told us).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session

from .models import (
    CANCELLED, DELIVERED, EXPIRED, FAILED, QUEUED, RECEIVED, SENDING, SENT, UNKNOWN,
    Message, MessageEvent, MessagePart, utcnow,
)

# Part states: written before AT+CMGS, then the outcome.
PART_SUBMITTING, PART_SENT, PART_DELIVERED, PART_FAILED = "submitting", "sent", "delivered", "failed"

# TP-ST values of a final failure report (TS 23.040 9.2.3.15).
REPORT_TEXT = {
    0x40: "remote procedure error", 0x41: "incompatible destination", 0x42: "connection rejected by SME",
    0x43: "not obtainable", 0x44: "quality of service not available", 0x45: "no interworking available",
    0x46: "SM validity period expired", 0x47: "SM deleted by originating SME",
    0x48: "SM deleted by SC administration", 0x49: "SM does not exist",
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
        message_id=msg.id, state=state, at=at, source=source,
        error_code=error_code, error_text=error_text, detail=detail,
    )
    session.add(event)
    return event


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
        .where(
            Message.status == QUEUED,
            Message.sim_card_id == sim_card_id,
            or_(Message.send_at.is_(None), Message.send_at <= now),
            or_(Message.next_attempt_at.is_(None), Message.next_attempt_at <= now),
            or_(Message.expires_at.is_(None), Message.expires_at > now),
        )
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
    return result.rowcount == 1


def reclaim_expired_leases(session: Session, *, source: str = "sweeper", now: datetime | None = None) -> dict:
    """Return the work of workers whose lease ran out. Returns counts by outcome."""
    now = now or utcnow()
    rows = session.scalars(
        select(Message)
        .where(Message.status == SENDING, Message.lease_until < now)
        .with_for_update(skip_locked=True)
    ).all()
    counts = {QUEUED: 0, UNKNOWN: 0, FAILED: 0}
    for msg in rows:
        msg.worker_id = None
        msg.lease_until = None
        # A part the network reported as never to be delivered: the message
        # cannot arrive whole, whatever became of the segment in doubt.
        doomed = session.execute(
            select(MessagePart.seq, MessagePart.report_status)
            .where(MessagePart.message_id == msg.id, MessagePart.status == PART_FAILED,
                   MessagePart.report_status.is_not(None))
            .order_by(MessagePart.report_at, MessagePart.seq)
            .limit(1)
        ).first()
        if doomed is not None:
            seq, status = doomed
            record(
                session, msg, FAILED, source=source, at=now, error_code=status, error_text=report_error(status),
                detail=f"worker lost; status report for part {seq}",
            )
            counts[FAILED] += 1
            continue
        in_doubt = session.scalar(
            select(
                exists().where(
                    and_(MessagePart.message_id == msg.id, MessagePart.status == PART_SUBMITTING)
                )
            )
        )
        if in_doubt:
            record(
                session, msg, UNKNOWN, source=source, at=now,
                detail="worker lost between AT+CMGS and +CMGS; not resent to avoid a duplicate",
            )
            counts[UNKNOWN] += 1
        else:
            record(session, msg, QUEUED, source=source, at=now, detail="lease expired; requeued")
            counts[QUEUED] += 1
    return counts


def expire_due(session: Session, *, report_timeout: timedelta, source: str = "sweeper",
               now: datetime | None = None) -> dict:
    """Queued messages past `expires_at`, and sent ones with no delivery report
    after `report_timeout`, become `expired`: never pending forever."""
    now = now or utcnow()
    counts = {"validity": 0, "no_report": 0}
    queued = session.scalars(
        select(Message)
        .where(Message.status == QUEUED, Message.expires_at.is_not(None), Message.expires_at <= now)
        .with_for_update(skip_locked=True)
        .limit(1000)
    ).all()
    for msg in queued:
        record(session, msg, EXPIRED, source=source, at=now, detail="validity period ended before sending")
        counts["validity"] += 1
    sent = session.scalars(
        select(Message)
        .where(Message.status == SENT, Message.sent_at < now - report_timeout)
        .with_for_update(skip_locked=True)
        .limit(1000)
    ).all()
    for msg in sent:
        record(
            session, msg, EXPIRED, source=source, at=now,
            detail=f"no delivery report within {int(report_timeout.total_seconds())}s; delivery unknown",
        )
        counts["no_report"] += 1
    return counts
