"""Outbound: claim what this SIM may send now, send it segment by segment,
record each outcome.

Per segment, the part is committed as `submitting` BEFORE AT+CMGS is written
and as `sent` with its reference right after `+CMGS: <mr>`. If the worker
dies in between, it turns the message into `unknown` when it starts again
(replay.py, `queue.settle_own_claims`), or whoever sees its lease run out
does (`queue.reclaim_expired_leases`), instead of sending it again: whether it left cannot be known, and a
duplicate is worse than saying so. The same holds for a send that times out
after the PDU was written, or that gets any answer then but `+CMGS: <mr>` or
a +CMS/+CME error (a bare OK or ERROR): recorded `unknown`, never resent
(errors.UNCONFIRMED).

A refused AT+CMGS is handled by what errors.classify_send_error says of its
code (the one table of +CMS/+CME codes is in errors.py): permanent fails
the message with the modem's code and text; a SIM problem puts it back in
the queue without spending an attempt and takes the modem offline;
anything else is retried after retry_base * 2^(n-1) seconds (capped at
retry_max) up to max_attempts, then failed.

Every answer to AT+CMGS is appended to the outcome journal (journal.py)
before the database hears of it, and marked applied once committed: if the
database is down at that moment, replay.py records it when it is back, so a
known `+CMGS: <mr>` never becomes `unknown`.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from smsgw_common import jsonlog
from smsgw_common import queue as message_queue
from smsgw_common.models import FAILED, QUEUED, SENDING, SENT, UNKNOWN, Message, MessagePart, utcnow
from smsgw_worker import pdu as pdu_codec
from smsgw_worker.errors import (
    PERMANENT,
    SIM_PROBLEM,
    TRANSIENT,
    UNCONFIRMED,
    CmeError,
    CmsError,
    CommandError,
    ModemTimeout,
    PortGone,
    SimProblem,
    SubmitUnconfirmed,
    classify_send_error,
)

from .context import WorkerContext, run_sql
from .inbox import Inbox
from .journal import REFUSED, UNWRITTEN, Entry, JournalError
from .journal import SENT as JOURNAL_SENT
from .journal import UNCONFIRMED as JOURNAL_UNCONFIRMED
from .reports import Reports

log = logging.getLogger(__name__)

SQL_PART_SUBMIT = f"""
INSERT INTO message_parts (message_id, seq, sim_card_id, status, sent_at)
VALUES (%s, %s, %s, '{message_queue.PART_SUBMITTING}', %s) RETURNING id"""
SQL_PART_RESUBMIT = f"""
UPDATE message_parts SET status = '{message_queue.PART_SUBMITTING}', sim_card_id = %s, reference = NULL,
    sent_at = %s, report_status = NULL, report_at = NULL
WHERE id = %s"""
SQL_PART_SENT = f"""
UPDATE message_parts SET status = '{message_queue.PART_SENT}', reference = %s, sent_at = %s WHERE id = %s"""
SQL_PART_NOT_SENT = f"UPDATE message_parts SET status = '{message_queue.PART_FAILED}', sent_at = NULL WHERE id = %s"
SQL_PART_UNWRITTEN = f"""
UPDATE message_parts SET status = '{message_queue.PART_FAILED}', sent_at = NULL
WHERE id = %s AND status = '{message_queue.PART_SUBMITTING}' AND sent_at = %s"""

NOT_RESENT = "the SMS may have left; not resent to avoid a duplicate"


def unconfirmed_detail(exc: Exception) -> str:
    """What happened to a segment whose PDU was written and never confirmed."""
    if isinstance(exc, SubmitUnconfirmed):
        if exc.line.startswith("OK"):  # atmodem.send_pdu: a bare OK
            return f"the modem answered OK after the PDU was written, without +CMGS: <mr>; {NOT_RESENT}"
        return f"the modem answered {exc.line!r} after the PDU was written, not +CMGS: <mr>; {NOT_RESENT}"
    if isinstance(exc, ModemTimeout) and exc.command.endswith("(port lost)"):
        return f"the port was lost after the PDU was written, before the modem answered; {NOT_RESENT}"
    if isinstance(exc, ModemTimeout) and exc.why:
        return f"{exc.why}, after the PDU was written; {NOT_RESENT}"
    if isinstance(exc, ModemTimeout):
        return f"no answer within {exc.timeout:g}s after the PDU was written; {NOT_RESENT}"
    return f"no +CMGS after the PDU was written ({exc}); {NOT_RESENT}"


def failed_by_report(part: MessagePart) -> bool:
    """A part the network reported as never to be delivered (not a refused AT+CMGS)."""
    return part.status == message_queue.PART_FAILED and part.report_status is not None


class Outbox:
    def __init__(self, ctx: WorkerContext, inbox: Inbox, reports: Reports) -> None:
        self.ctx = ctx
        self.inbox = inbox
        self.reports = reports

    def send_batch(self) -> bool:
        """Claim what fits and send it; False when there was nothing to do.

        One session serves the whole batch: the claimed rows stay loaded (a
        claimed message cannot be cancelled, and only its lease running out
        lets anyone else touch it), which keeps the statements per segment few.
        """
        ctx, settings = self.ctx, self.ctx.settings
        if ctx.sim_card_id is None or (ctx.modem is not None and ctx.modem.restarting):
            return False  # a restarted modem is set up again first (Lifecycle.on_modem_event)
        with ctx.Session() as session:
            limit = message_queue.claim_limit(session, self.ctx.sim_card_id, self.ctx.settings.claim_batch)
            if limit <= 0:
                return False
            claimed = message_queue.claim(
                session, ctx.sim_card_id, ctx.worker_id, lease_seconds=settings.lease_seconds, limit=limit
            )
            session.commit()
            claimed_at = time.monotonic()
            if not claimed:
                return False
            ctx.reported_while_sending.clear()
            for msg in claimed:
                ctx.publish_event(msg, SENDING)
            parts: dict[int, dict[int, MessagePart]] = {m.id: {} for m in claimed}
            for part in session.scalars(select(MessagePart).where(MessagePart.message_id.in_(list(parts)))):
                parts[part.message_id][part.seq] = part
            for position, msg in enumerate(claimed):
                if ctx.modem is None or ctx.stopping.is_set() or ctx.modem.restarting:
                    why = (
                        "worker stopping"
                        if ctx.stopping.is_set()
                        else "modem lost before sending"
                        if ctx.modem is None
                        else "the modem restarted; it is set up again first"
                    )
                    self._release([m.id for m in claimed[position:]], why)
                    break
                if time.monotonic() - claimed_at > settings.lease_seconds / 3:
                    # Slow sends ahead of it in the batch: renew the lease, and
                    # never send a message whose lease somebody else reclaimed.
                    owned = message_queue.extend_lease(session, msg.id, ctx.worker_id, settings.lease_seconds)
                    session.commit()
                    if not owned:
                        log.warning("message %s was reclaimed while waiting in the batch; skipped", msg.id)
                        continue
                ctx.heartbeat()
                self.inbox.service_direct_now()
                if msg.id in ctx.reported_while_sending:
                    for part in parts[msg.id].values():
                        session.refresh(part)  # a report changed it since the batch began
                token = jsonlog.bind(message_id=msg.id)
                try:
                    self._send_message(session, msg, parts[msg.id])
                except (PortGone, ModemTimeout, SimProblem):
                    session.rollback()
                    self._release([m.id for m in claimed[position + 1 :]], "modem lost before sending")
                    raise
                finally:
                    jsonlog.context.reset(token)
        return True

    def _release(self, ids: list[int], why: str) -> None:
        """Give claimed but untouched messages back to the queue at once."""
        if not ids:
            return
        ctx = self.ctx
        with ctx.Session.begin() as session:
            for msg in session.scalars(
                select(Message)
                .where(Message.id.in_(ids), Message.status == SENDING, Message.worker_id == ctx.worker_id)
                .with_for_update()
            ):
                msg.worker_id = msg.lease_until = None
                msg.attempts = max(0, (msg.attempts or 1) - 1)
                message_queue.record(session, msg, QUEUED, source=ctx.worker_id, detail=why)
        log.info("released %d claimed message(s): %s", len(ids), why)

    # -- one message ---------------------------------------------------------------
    def _send_message(self, session: Session, msg: Message, parts: dict[int, MessagePart]) -> None:
        """Send the segments of `msg` not yet sent; `parts` are its part rows by seq."""
        ctx, settings = self.ctx, self.ctx.settings
        doomed = next((parts[n] for n in sorted(parts) if failed_by_report(parts[n])), None)
        if doomed is not None:
            # A part that left on an earlier attempt can never be delivered:
            # the rest would not make a whole message.
            ctx.finish(
                session,
                msg,
                FAILED,
                error_code=doomed.report_status,
                error_text=message_queue.report_error(doomed.report_status or 0),
                detail=f"status report for part {doomed.seq}; the rest not sent",
            )
            return
        validity = None
        if msg.expires_at is not None:
            validity = max(5, int((msg.expires_at - utcnow()).total_seconds() // 60))
        try:
            segments = pdu_codec.encode_submit(
                msg.recipient or "",
                msg.message or "",
                request_status_report=True,
                validity_minutes=validity,
                concat_ref=msg.id % 256,
            )
        except (pdu_codec.PduError, ValueError) as exc:
            ctx.finish(session, msg, FAILED, error_text=f"cannot encode: {exc}")
            return
        if msg.segments != len(segments):
            msg.segments = len(segments)
        # A resumed message: segments that already left are not sent again.
        pending = [
            segment
            for segment in segments
            if segment.seq not in parts
            or parts[segment.seq].status not in (message_queue.PART_SENT, message_queue.PART_DELIVERED)
        ]
        lease_at = time.monotonic()
        last_entry: Entry | None = None
        modem = ctx.require_modem()
        for segment in pending:
            # Part rows through plain SQL: this is the hot path (bench/worker_throughput.py).
            submitted_at = utcnow()
            if segment.seq in parts:
                part_id = parts[segment.seq].id
                run_sql(session, SQL_PART_RESUBMIT, (ctx.sim_card_id, submitted_at, part_id))
            else:
                part_id = run_sql(
                    session, SQL_PART_SUBMIT, (msg.id, segment.seq, ctx.sim_card_id, submitted_at)
                ).scalar_one()
            try:
                session.commit()  # durable BEFORE AT+CMGS: see the module docstring
            except SQLAlchemyError:
                # The connection died during the COMMIT: the row may be in,
                # `submitting`, and would make the claim look in doubt
                # (`unknown`). The PDU was certainly not written: say so.
                self._journal(UNWRITTEN, message_id=msg.id, part_id=part_id, at=submitted_at.isoformat())
                raise
            try:
                reference = modem.send_pdu(segment.hex, segment.tpdu_length)
            except (ModemTimeout, SubmitUnconfirmed, PortGone, CommandError) as exc:
                outcome = classify_send_error(exc)
                if outcome == UNCONFIRMED:
                    entry = self._journal(
                        JOURNAL_UNCONFIRMED,
                        message_id=msg.id,
                        part_id=part_id,
                        error=str(exc),
                        detail=unconfirmed_detail(exc),
                    )
                    if isinstance(exc, SubmitUnconfirmed):
                        msg.lease_until = None
                    ctx.finish(session, msg, UNKNOWN, error_text=str(exc), detail=unconfirmed_detail(exc))
                else:
                    code = exc.code if isinstance(exc, (CmsError, CmeError)) else None
                    text = exc.text if isinstance(exc, (CmsError, CmeError)) else str(exc)
                    # A port that vanished, a modem that gave no prompt (so no
                    # PDU was written) or one that restarted meanwhile (its
                    # refusal says nothing about the message): no attempt spent.
                    restarted = modem.restarting
                    if restarted:
                        outcome = TRANSIENT  # refused by a module booting, not for the message
                    count = not isinstance(exc, (PortGone, ModemTimeout)) and not restarted
                    error = f"the modem restarted during the send ({exc})" if restarted else str(exc)
                    entry = self._journal(
                        REFUSED,
                        message_id=msg.id,
                        part_id=part_id,
                        outcome=outcome,
                        code=code,
                        text=text,
                        error=error,
                        count_attempt=count,
                    )
                    self.not_sent(session, msg, part_id, outcome, code, text, error, count_attempt=count)
                ctx.journal.applied(entry)
                if isinstance(exc, (ModemTimeout, PortGone)):
                    raise  # the link needs recovering (Lifecycle.recover)
                if outcome == SIM_PROBLEM:
                    raise SimProblem("sim_failure", str(exc)) from exc
                return
            sent_at = utcnow()
            entry = self._journal(
                JOURNAL_SENT,
                message_id=msg.id,
                part_id=part_id,
                part_seq=segment.seq,
                reference=reference,
                at=sent_at.isoformat(),
            )
            run_sql(session, SQL_PART_SENT, (reference, sent_at, part_id))
            ctx.segments_sent += 1
            if segment is pending[-1]:
                last_entry = entry
                break  # committed together with the message's `sent` below
            session.commit()
            ctx.journal.applied(entry)
            if time.monotonic() - lease_at > settings.lease_seconds / 3:
                message_queue.extend_lease(session, msg.id, ctx.worker_id, settings.lease_seconds)
                session.commit()
                lease_at = time.monotonic()
            self.inbox.service_direct_now()  # a +CDS/+CMT must not wait for the other segments
        msg.lease_until = None
        ctx.finish(session, msg, SENT)
        ctx.journal.applied(last_entry)
        if parts or msg.id in ctx.reported_while_sending:
            # Resumed, or reported while still sending: a part may have been
            # reported failed or all delivered meanwhile, and no later report
            # would say so.
            ctx.reported_while_sending.discard(msg.id)
            self.reports.settle(session, msg)

    def _journal(self, kind: str, **data: object) -> Entry | None:
        """Make the modem's answer durable before the database hears of it."""
        try:
            return self.ctx.journal.append(kind, **data)
        except JournalError:
            # Still recorded in the database below, as before the journal existed.
            log.exception("cannot journal a %s outcome of message %s", kind, data.get("message_id"))
            return None

    def not_sent(
        self,
        session: Session,
        msg: Message,
        part_id: int,
        outcome: str,
        code: int | None,
        text: str,
        error: str,
        count_attempt: bool = True,
    ) -> None:
        """AT+CMGS was refused (nothing left): retry later or fail for good."""
        ctx, settings = self.ctx, self.ctx.settings
        run_sql(session, SQL_PART_NOT_SENT, (part_id,))
        if outcome == PERMANENT:
            ctx.finish(session, msg, FAILED, error_code=code, error_text=text, detail=f"modem refused: {error}")
            return
        if outcome == SIM_PROBLEM or not count_attempt:
            msg.attempts = max(0, (msg.attempts or 1) - 1)
            delay = 0.0
        elif (msg.attempts or 0) >= settings.max_attempts:
            ctx.finish(
                session, msg, FAILED, error_code=code, error_text=text, detail=f"gave up after {msg.attempts} attempts"
            )
            return
        else:
            delay = min(settings.retry_base * 2 ** max(0, (msg.attempts or 1) - 1), settings.retry_max)
        msg.worker_id = msg.lease_until = None
        msg.next_attempt_at = utcnow() + timedelta(seconds=delay)
        ctx.finish(
            session,
            msg,
            QUEUED,
            error_code=code,
            error_text=text,
            detail=f"transient error, retry in {delay:g}s: {error}",
        )
