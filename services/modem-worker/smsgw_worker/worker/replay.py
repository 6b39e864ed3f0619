"""Recovery of what this worker knew and held: on start, and whenever the
database is back after failing a step, (1) every fact in the outcome journal
not yet in Postgres is applied, then (2) this worker's own claims that no
batch is working on are settled at once (queue.settle_own_claims) rather
than at lease expiry.

Applying a fact is idempotent: a fact applied twice (its `applied` line lost
in a crash) changes nothing the second time. A `sent` fact moves a message
that was recorded `unknown` meanwhile (a lease that ran out during a long
outage) to `sent`, and its reports then settle it.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from smsgw_common import queue as message_queue
from smsgw_common.models import SENDING, SENT, UNKNOWN, Message, MessagePart, utcnow

from .context import WorkerContext, run_sql
from .inbox import Inbox
from .journal import PDU, REFUSED, SEND_KINDS, UNCONFIRMED, UNWRITTEN, Entry
from .journal import SENT as JOURNAL_SENT
from .outbox import SQL_PART_UNWRITTEN, Outbox
from .reports import Reports

log = logging.getLogger(__name__)

CHUNK = 200  # facts applied per loop turn
SENT_LATE = "+CMGS: <mr> kept in the worker's journal while the database was unreachable"


class Replay:
    def __init__(self, ctx: WorkerContext, outbox: Outbox, inbox: Inbox, reports: Reports) -> None:
        self.ctx = ctx
        self.outbox = outbox
        self.inbox = inbox
        self.reports = reports
        # This worker's claims may be orphans: true on start and after a failed batch.
        self.claims_due = True

    @property
    def due(self) -> bool:
        """Claims to settle, or a fact that can be applied now."""
        journal = self.ctx.journal
        applicable = journal.count() if self.ctx.sim_card_id is not None else journal.count(*SEND_KINDS)
        return self.claims_due or applicable > 0

    def run(self) -> bool:
        """Apply up to CHUNK facts of the journal, then (all sends' facts
        applied) settle own claims. False if the database failed (try later)."""
        ctx = self.ctx
        try:
            self.inbox.service_direct()  # what the reader journaled and the loop has not handled yet
            done = 0
            # With the SIM unknown (not connected yet) reports wait: look past them.
            for entry in ctx.journal.pending(CHUNK if ctx.sim_card_id is not None else None):
                if done >= CHUNK:
                    break  # the loop's other steps (heartbeat, sends once below the bound) go on
                if entry.kind == PDU and ctx.sim_card_id is None:
                    continue  # a report or SMS is matched to its SIM: once the modem is up
                try:
                    with ctx.Session() as session:
                        self.apply(session, entry)
                except SQLAlchemyError:
                    raise
                except Exception as exc:
                    # Never a crash loop over one fact: set it aside, go on.
                    log.exception("journal fact %d (%s) cannot be applied; set aside", entry.seq, entry.kind)
                    ctx.journal.reject(entry, f"{type(exc).__name__}: {exc}")
                    continue
                ctx.journal.applied(entry)
                done += 1
                log.info("journal fact %d (%s) recorded in the database", entry.seq, entry.kind)
            # A claim is settled only once every answer to its sends is in
            # the database: else a message that left would go back to the queue.
            if self.claims_due and not ctx.journal.count(*SEND_KINDS):
                self.settle_claims()
                self.claims_due = False
        except SQLAlchemyError as exc:
            log.warning("database still unavailable; journal replay retried: %s", str(exc).splitlines()[0])
            return False
        return True

    def settle_claims(self) -> None:
        ctx = self.ctx
        with ctx.Session() as session:
            changed = message_queue.settle_own_claims(session, ctx.worker_id, booted_at=ctx.booted_at)
            session.commit()
            for msg, state in changed:
                ctx.publish_event(msg, state)
        if changed:
            log.info("settled %d claim(s) this worker held: %s", len(changed), [(m.id, s) for m, s in changed])
            ctx.want_claim = True

    # -- one fact --------------------------------------------------------------------
    def apply(self, session: Session, entry: Entry) -> None:
        data = entry.data
        if entry.kind == PDU:
            # In the journal's order: the +CMGS facts before it are applied.
            self.inbox.handle_pdu(str(data["pdu"]), data.get("origin"), wait_for_sends=False)
            return
        if entry.kind == UNWRITTEN:
            # The part goes back to "not sent" (settle_claims then requeues
            # the message), if that submission's row committed at all.
            run_sql(session, SQL_PART_UNWRITTEN, (data["part_id"], datetime.fromisoformat(str(data["at"]))))
            session.commit()
            return
        part = session.get(MessagePart, data["part_id"], with_for_update=True)
        msg = session.get(Message, data["message_id"], with_for_update=True)
        if part is None or msg is None:
            log.warning("journal fact %d is about message %s, which is gone", entry.seq, data["message_id"])
            session.commit()
            return
        submitting = part.status == message_queue.PART_SUBMITTING
        if entry.kind == JOURNAL_SENT:
            self._sent(session, msg, part, data)
        elif entry.kind == REFUSED and submitting and msg.status == SENDING:
            self.outbox.not_sent(
                session,
                msg,
                part.id,
                data["outcome"],
                data.get("code"),
                str(data.get("text")),
                str(data.get("error")),
                count_attempt=bool(data.get("count_attempt", True)),
            )
        elif entry.kind == UNCONFIRMED and submitting and msg.status == SENDING:
            msg.worker_id = msg.lease_until = None
            self.ctx.finish(session, msg, UNKNOWN, error_text=data.get("error"), detail=data.get("detail"))
        else:
            session.commit()  # already recorded

    def _sent(self, session: Session, msg: Message, part: MessagePart, data: dict[str, object]) -> None:
        if part.status == message_queue.PART_SUBMITTING:
            part.status = message_queue.PART_SENT
            part.reference = int(str(data["reference"]))
            part.sent_at = datetime.fromisoformat(str(data["at"]))
            session.flush()
        left = msg.status in (SENDING, UNKNOWN)
        sent_parts = session.scalar(
            select(func.count())
            .select_from(MessagePart)
            .where(
                MessagePart.message_id == msg.id,
                MessagePart.status.in_((message_queue.PART_SENT, message_queue.PART_DELIVERED)),
            )
        )
        if not left or (sent_parts or 0) < (msg.segments or 1):
            # Recorded already, or other parts still to send (settle_claims resumes it).
            session.commit()
            return
        msg.worker_id = msg.lease_until = None
        message_queue.record(session, msg, SENT, source=self.ctx.worker_id, detail=SENT_LATE, at=utcnow())
        session.commit()
        self.ctx.publish_event(msg, SENT)
        log.info("message %s sent (from the journal)", msg.id)
        self.reports.settle(session, msg)
