"""Status reports (+CDS/+CDSI): match a report to the part it is about, and
settle the message once its parts are all delivered or one has failed.

A final failure report for any part fails the message with its TP-ST,
whether it comes while the message is `sent`, `expired` or `unknown`, or
while it waits in the queue to retry another part (then the rest is not
sent).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from smsgw_common import jsonlog
from smsgw_common import queue as message_queue
from smsgw_common.models import DELIVERED, EXPIRED, FAILED, QUEUED, SENDING, SENT, UNKNOWN, Message, MessagePart, utcnow
from smsgw_worker import pdu as pdu_codec

from .context import WorkerContext, run_sql

log = logging.getLogger(__name__)

# References wrap at 256 per SIM, so several parts can carry the report's.
# The one whose recipient is the report's (digits only, the last 9 compared so
# that +44 7700 900123 and 07700900123 match) wins, then the latest submission:
# a part re-sent after a transient error keeps its row (and its old id).
SQL_PART_REPORT = """
UPDATE message_parts SET report_status = %s, report_at = %s, status = COALESCE(%s, status)
WHERE id = (SELECT p.id FROM message_parts p JOIN messages m ON m.id = p.message_id
            WHERE p.sim_card_id = %s AND p.reference = %s
            ORDER BY COALESCE(%s <> '' AND right(regexp_replace(COALESCE(m.recipient, ''), '[^0-9]', '', 'g'), 9) = %s,
                              false) DESC,
                     p.sent_at DESC NULLS LAST, p.id DESC
            LIMIT 1 FOR UPDATE OF p)
RETURNING message_id, seq"""


class ReportedPart(NamedTuple):
    """The part SQL_PART_REPORT matched."""

    message_id: int
    seq: int


def report_tail(number: str | None) -> str:
    """A number as SQL_PART_REPORT compares it: its last 9 digits."""
    return "".join(ch for ch in number or "" if ch.isdigit())[-9:]


class Reports:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def apply(self, report: pdu_codec.StatusReport) -> None:
        # Plain SQL, not ORM flushes: this runs once per segment sent.
        ctx = self.ctx
        final = report.final
        status = (message_queue.PART_DELIVERED if report.delivered else message_queue.PART_FAILED) if final else None
        tail = report_tail(report.recipient)
        with ctx.Session() as session:
            row = run_sql(
                session,
                SQL_PART_REPORT,
                (report.status, utcnow(), status, ctx.sim_card_id, report.reference, tail, tail),
            ).first()
            if row is None:
                session.commit()
                log.info(
                    "status report for unknown reference %s (TP-ST %#04x) ignored", report.reference, report.status
                )
                return
            part = ReportedPart(*row)
            if not final:
                session.commit()
                return
            msg = session.get(Message, part.message_id, with_for_update=True)
            if msg is None:  # message_parts.message_id is a foreign key: only a bug gets here
                session.commit()
                return
            if msg.status == QUEUED and not report.delivered:
                # Waiting to retry its other parts: this one will never arrive,
                # so neither will the whole message. Stop here.
                msg.next_attempt_at = None
                token = jsonlog.bind(message_id=msg.id)
                try:
                    ctx.finish(
                        session,
                        msg,
                        FAILED,
                        error_code=report.status,
                        error_text=message_queue.report_error(report.status),
                        detail=f"status report for part {part.seq}; the rest not sent",
                    )
                finally:
                    jsonlog.context.reset(token)
                return
            if msg.status not in (SENT, EXPIRED, UNKNOWN):
                # Still sending the other parts: the part row says enough;
                # the outbox reads it when it takes the message up again,
                # or settles it once sent (a report between its segments).
                if msg.status == SENDING:
                    ctx.reported_while_sending.add(msg.id)
                session.commit()
                return
            token = jsonlog.bind(message_id=msg.id)
            try:
                if not report.delivered:
                    ctx.finish(
                        session,
                        msg,
                        FAILED,
                        error_code=report.status,
                        error_text=message_queue.report_error(report.status),
                        detail=f"status report for part {part.seq}",
                    )
                    return
                if (msg.segments or 1) > 1:
                    if self.fail_if_reported(session, msg):
                        return
                    if self._delivered_parts(session, msg) < msg.segments:
                        session.commit()
                        return
                ctx.finish(session, msg, DELIVERED)
            finally:
                jsonlog.context.reset(token)

    def settle(self, session: Session, msg: Message) -> None:
        """A `sent` message whose reports came before it was: failed or delivered."""
        if self.fail_if_reported(session, msg):
            return
        if self._delivered_parts(session, msg) >= (msg.segments or 1):
            self.ctx.finish(session, msg, DELIVERED)

    def fail_if_reported(self, session: Session, msg: Message) -> bool:
        """Fail `msg` if one of its parts has a final failure report."""
        doomed = session.execute(
            select(MessagePart.seq, MessagePart.report_status)
            .where(
                MessagePart.message_id == msg.id,
                MessagePart.status == message_queue.PART_FAILED,
                MessagePart.report_status.is_not(None),
            )
            .order_by(MessagePart.report_at, MessagePart.seq)
            .limit(1)
        ).first()
        if doomed is None:
            return False
        seq, status = doomed
        self.ctx.finish(
            session,
            msg,
            FAILED,
            error_code=status,
            error_text=message_queue.report_error(status or 0),
            detail=f"status report for part {seq}",
        )
        return True

    @staticmethod
    def _delivered_parts(session: Session, msg: Message) -> int:
        return (
            session.scalar(
                select(func.count())
                .select_from(MessagePart)
                .where(MessagePart.message_id == msg.id, MessagePart.status == message_queue.PART_DELIVERED)
            )
            or 0
        )
