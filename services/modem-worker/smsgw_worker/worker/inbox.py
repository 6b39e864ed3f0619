"""Inbound: unsolicited lines from the modem, received SMS (stored on the SIM
or delivered directly), reassembly of concatenated SMS, duplicate detection
and storage.

Direct delivery (+CMT, +CDS; with AT+CSMS=1 each waits for AT+CNMA, and a
late acknowledgement makes the network deliver it again) cannot wait for a
batch that may take minutes: those events wait in `WorkerContext.direct`
and are handled between segments too (`service_direct`), never later than
the AT+CMGS in flight when they came. Order: the reader thread journals
each one as it is read (Lifecycle._modem_event), the loop commits it, and
AT+CNMA follows once it is durable (committed, or at least journaled when
the database is down: replay.py records it later), so nothing acknowledged
is ever lost. Without AT+CSMS=1 (the default) the network sends a +CDS once
and never again: the journal is its only copy. One read from a link since
closed is recorded all the same; only its AT+CNMA is skipped (that link is
gone, so the network delivers it again, and the duplicate detection drops
the repeat). If the commit is slow, the acknowledgement is late and the
network may deliver it again: the duplicate detection (`_store`) drops such
a repeat, and a repeated report changes nothing.
"""

from __future__ import annotations

import json
import logging
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from smsgw_common import queue as message_queue
from smsgw_common.models import (
    RAW_INCOMPLETE_PART,
    RAW_UNDECODABLE,
    RECEIVED,
    InboundPart,
    Log,
    Message,
    RawInboundPdu,
    utcnow,
)
from smsgw_worker import pdu as pdu_codec
from smsgw_worker.atmodem import ModemEvent
from smsgw_worker.errors import SIM_STATE_TEXT, CommandError, SimProblem
from smsgw_worker.serial_link import URC_HEADS, line_head

from .context import WorkerContext
from .events import DirectDelivery
from .journal import SEND_KINDS
from .reports import Reports

log = logging.getLogger(__name__)

CALL_REPEAT_WINDOW = 20.0  # seconds without RING after which the next one is a new call


@dataclass(frozen=True)
class PartKey:
    """What identifies the parts of one concatenated SMS on one SIM."""

    sender: str
    reference: int
    total: int


class Inbox:
    def __init__(self, ctx: WorkerContext, reports: Reports) -> None:
        self.ctx = ctx
        self.reports = reports
        self._last_call: tuple[str | None, float] | None = None  # caller, monotonic time of the last RING

    # -- what the modem says on its own -------------------------------------------
    def on_unsolicited(self, event: ModemEvent) -> None:
        modem = self.ctx.require_modem()
        if event.kind in ("stored_sms", "stored_report"):
            if event.index is None:
                log.warning("%s names no slot", event.line)
                return
            with modem.in_storage(event.storage):
                stored = modem.read_message(event.index)
                if stored is None:
                    log.warning("%s points at an empty slot", event.line)
                    return
                if stored.stat in (2, 3):
                    return  # a stored SMS-SUBMIT (a draft somebody wrote): not ours
                # Deleted only once Postgres holds it: until then it waits on the modem.
                if self.handle_pdu(stored.pdu, f"{event.storage or modem.read_memory}:{event.index}"):
                    modem.delete_message(event.index)
        elif event.kind in ("sms", "report"):
            self.ctx.direct.put(DirectDelivery(event, self.ctx.generation))
            self.service_direct()
        elif event.kind == "sim":
            if "READY" not in event.line.upper() or "NOT READY" in event.line.upper():
                state = modem.sim_state()
                if state != "ready":
                    raise SimProblem(state, f"{SIM_STATE_TEXT.get(state, state)} ({event.line})")
        elif event.kind == "storage_full":
            log.warning("SIM storage full (%s): reading and clearing it", event.line)
            self.read_stored()
        elif event.kind == "ring" and not modem.clip:
            self._missed_call(None)  # no +CLIP will follow to name the caller
        elif event.kind == "caller":
            number = event.fields.get("number")
            self._missed_call(number if isinstance(number, str) else None)
        elif event.kind == "ussd":
            log.info("network-initiated USSD: %s", event.fields.get("text"))
        elif event.kind == "noise":
            if line_head(event.line) in URC_HEADS:
                log.debug("vendor status line: %s", event.line[:200])  # ^RSSI and friends, every few s
            else:
                log.info("unknown unsolicited line ignored: %r", event.line[:200])

    # -- calls ------------------------------------------------------------------------
    def _missed_call(self, number: str | None) -> None:
        """A call to an SMS gateway is a missed call: recorded in the audit log
        (GET /api/logs, action missed_call), then hung up if MODEM_REJECT_CALLS."""
        ctx = self.ctx
        now = time.monotonic()
        last = self._last_call
        # A call left ringing repeats RING/+CLIP every few seconds: one record per call.
        if last is not None and last[0] == number and now - last[1] < CALL_REPEAT_WINDOW:
            self._last_call = (number, now)
            return
        self._last_call = (number, now)
        rejected = ctx.settings.reject_calls
        with ctx.Session.begin() as session:
            session.add(
                Log(
                    action="missed_call",
                    details=json.dumps(
                        {
                            "number": number,
                            "modem_id": ctx.modem_id,
                            "sim_card_id": ctx.sim_card_id,
                            "rejected": rejected,
                        }
                    ),
                    status="success",
                    sender_sim=ctx.sim_number,
                    actor=ctx.worker_id,
                )
            )
        log.info("missed call from %s%s", number or "an unknown number", " (rejected)" if rejected else "")
        if rejected:
            ctx.require_modem().hang_up()

    # -- direct delivery ---------------------------------------------------------
    def service_direct(self) -> None:
        """Record, then acknowledge, each +CMT/+CDS that came (see the module docstring)."""
        ctx = self.ctx
        while True:
            try:
                delivery = ctx.direct.get_nowait()
            except queue.Empty:
                return
            event = delivery.event
            if event.pdu is None:
                # No AT+CNMA: with AT+CSMS=1 the network delivers it again, whole this time.
                log.warning("truncated %s (no PDU line); not recorded", event.line)
                continue
            same_link = ctx.modem is not None and delivery.generation == ctx.generation
            try:
                # Without a journal entry nothing could keep it for later.
                done = self.handle_pdu(event.pdu, line_head(event.line), wait_for_sends=delivery.entry is not None)
            except SQLAlchemyError:
                if delivery.entry is None:
                    if same_link and ctx.require_modem().needs_ack:
                        log.exception(
                            "could not record %s; not acknowledged, so the network delivers it again", event.line
                        )
                    else:
                        log.exception("could not record %s, nor journal it: it is lost", event.line)
                    continue
                log.exception("could not record %s yet; kept in the journal until the database has it", event.line)
            else:
                if done or line_head(event.line) != "+CDS":
                    ctx.journal.applied(delivery.entry)
                # else: a report that waits in the journal; the replay applies
                # it after the +CMGS facts written before it.
            # Durable now (database or journal). Acknowledged only on the link
            # it came on; one read from a link since closed is kept all the same.
            if same_link:
                ctx.require_modem().ack()

    def service_direct_now(self) -> None:
        """Between segments and messages of a batch (no transaction open)."""
        if not self.ctx.direct.empty():
            self.service_direct()

    # -- the SIM's storage --------------------------------------------------------
    def read_stored(self) -> None:
        modem = self.ctx.require_modem()
        memories: list[str | None] = [None]
        if modem.report_storage and modem.report_storage != modem.read_memory:
            memories.append(modem.report_storage)  # status reports a +CDSI announced while nobody listened
        for memory in memories:
            try:
                listing = modem.list_messages(4, memory)
            except CommandError as exc:
                # "SMS not ready" for a while after power-up, say: next refresh.
                log.warning("cannot list %s: %s", memory or "stored messages", exc)
                self.ctx.rescan = True
                continue
            for stored in listing:
                if stored.stat in (2, 3):
                    continue  # outgoing drafts somebody stored: not ours to delete
                if self.handle_pdu(stored.pdu, f"{memory or modem.read_memory}:{stored.index}"):
                    modem.delete_message(stored.index, memory)

    def handle_pdu(self, hex_pdu: str, origin: str | None = None, wait_for_sends: bool = True) -> bool:
        """Decode and store; True when the SIM copy may be deleted (or the
        +CMT acknowledged): only once Postgres holds it, decoded or raw.

        A status report waits (False) while +CMGS answers are still only in
        the journal (the database was away): its reference may be among
        them, and applied first it would match nothing and be thrown away."""
        try:
            decoded = pdu_codec.decode(hex_pdu)
        except Exception as exc:  # PduError, or worse on line noise
            if pdu_codec.message_type(hex_pdu) == pdu_codec.MTI_SUBMIT:
                log.info("stored SMS-SUBMIT the decoder cannot read left alone (%s)", exc)
                return False
            self._keep_raw(hex_pdu, f"{type(exc).__name__}: {exc}", origin)
            return True
        if isinstance(decoded, pdu_codec.Deliver):
            self._store(decoded, hex_pdu)
            return True
        if isinstance(decoded, pdu_codec.StatusReport):
            if wait_for_sends and self.ctx.journal.count(*SEND_KINDS):
                self.ctx.rescan = True  # read again once the journal is applied
                return False
            self.reports.apply(decoded)
            return True
        log.info("stored SMS-SUBMIT left alone")
        return False

    def _keep_raw(self, hex_pdu: str, reason: str, origin: str | None) -> None:
        ctx = self.ctx
        raw = "".join(hex_pdu.split()).upper()
        with ctx.Session.begin() as session:
            # The same PDU read again (an AT+CMGD that failed after the commit) is one row.
            seen = session.scalar(
                select(RawInboundPdu.id)
                .where(
                    RawInboundPdu.kind == RAW_UNDECODABLE,
                    RawInboundPdu.sim_card_id.is_not_distinct_from(ctx.sim_card_id),
                    RawInboundPdu.pdu == raw,
                )
                .limit(1)
            )
            if seen is None:
                session.add(
                    RawInboundPdu(
                        kind=RAW_UNDECODABLE,
                        pdu=raw,
                        reason=reason[:500],
                        sim_card_id=ctx.sim_card_id,
                        modem_id=ctx.modem_id,
                        origin=origin,
                    )
                )
        log.error("undecodable PDU kept in raw_inbound_pdus (%s) before leaving the SIM: %s", origin, reason)

    # -- storing a received SMS ---------------------------------------------------
    def _store(self, deliver: pdu_codec.Deliver, hex_pdu: str | None = None) -> None:
        ctx = self.ctx
        text = deliver.text if deliver.encoding != "8-bit" else (deliver.data or b"").hex()
        with ctx.Session() as session:
            concat = deliver.concat if deliver.concat is not None and deliver.concat.total > 1 else None
            segments, sent_at = 1, deliver.scts
            if concat is not None:
                key = PartKey(deliver.sender, concat.ref, concat.total)
                if self._seen_part(session, key, concat.seq, text, deliver.scts):
                    session.commit()
                    log.info(
                        "part %d/%d from %s repeats one of a message already received; ignored",
                        concat.seq,
                        concat.total,
                        deliver.sender,
                    )
                    return
                session.execute(
                    pg_insert(InboundPart)
                    .values(
                        sim_card_id=ctx.sim_card_id,
                        sender=deliver.sender,
                        reference=concat.ref,
                        total=concat.total,
                        seq=concat.seq,
                        content=text,
                        encoding=deliver.encoding,
                        sent_at=deliver.scts,
                        pdu=hex_pdu,
                    )
                    .on_conflict_do_nothing(constraint="uq_inbound_parts_key")
                )
                parts = session.scalars(
                    select(InboundPart)
                    .where(
                        InboundPart.sim_card_id == ctx.sim_card_id,
                        InboundPart.sender == deliver.sender,
                        InboundPart.reference == concat.ref,
                        InboundPart.total == concat.total,
                    )
                    .order_by(InboundPart.seq)
                    .with_for_update()
                ).all()
                if len({p.seq for p in parts}) < concat.total:
                    session.commit()
                    log.info("part %d/%d from %s kept until the rest arrives", concat.seq, concat.total, deliver.sender)
                    return
                text = "".join(p.content for p in parts)
                sent_at = min((p.sent_at for p in parts if p.sent_at), default=deliver.scts)
                segments = concat.total
                self._mark_completed(session, key, parts)
            duplicate = session.scalar(
                select(Message.id)
                .where(
                    Message.direction == "inbound",
                    Message.sim_card_id == ctx.sim_card_id,
                    Message.sender == deliver.sender,
                    Message.sent_at == sent_at,
                    Message.message == text,
                )
                .limit(1)
            )
            if duplicate is not None:
                session.commit()
                log.info("duplicate inbound SMS from %s ignored (message %s)", deliver.sender, duplicate)
                return
            msg = Message(
                direction="inbound",
                status=RECEIVED,
                sender=deliver.sender,
                recipient=ctx.sim_number,
                message=text,
                encoding=deliver.encoding if deliver.encoding in ("GSM-7", "UCS-2") else "8-bit",
                segments=segments,
                sim_card_id=ctx.sim_card_id,
                sender_sim=ctx.sim_number,
                sent_at=sent_at,
            )
            message_queue.record(session, msg, RECEIVED, source=ctx.worker_id)
            session.commit()
            ctx.publish_event(msg, RECEIVED, message=text)
            log.info("received message %s from %s", msg.id, deliver.sender)

    # A completed concatenated SMS keeps its parts in inbound_parts as markers,
    # with `total` negated: out of the way of a new message that reuses the
    # reference (the unique key includes total), and still there to recognise
    # a part delivered again (an SMSC resend, an AT+CMGD that failed after the
    # commit, a crash before it). `received_at` is then the completion time,
    # and the sweep drops markers older than inbound_duplicate_window.
    def _seen_part(self, session: Session, key: PartKey, seq: int, text: str, sent_at: datetime) -> bool:
        return (
            session.scalar(
                select(InboundPart.id)
                .where(
                    InboundPart.sim_card_id == self.ctx.sim_card_id,
                    InboundPart.sender == key.sender,
                    InboundPart.reference == key.reference,
                    InboundPart.total == -key.total,
                    InboundPart.seq == seq,
                    InboundPart.content == text,
                    InboundPart.sent_at.is_not_distinct_from(sent_at),
                )
                .limit(1)
            )
            is not None
        )

    def _mark_completed(self, session: Session, key: PartKey, parts: Sequence[InboundPart]) -> None:
        # An older message under the same key (the reference wrapped) gives way.
        session.execute(
            delete(InboundPart)
            .where(
                InboundPart.sim_card_id == self.ctx.sim_card_id,
                InboundPart.sender == key.sender,
                InboundPart.reference == key.reference,
                InboundPart.total == -key.total,
            )
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(InboundPart)
            .where(InboundPart.id.in_([p.id for p in parts]))
            .values(total=-key.total, received_at=utcnow())
            .execution_options(synchronize_session=False)
        )

    # -- housekeeping (from the sweep) ---------------------------------------------
    def prune_completed_parts(self) -> None:
        cutoff = utcnow() - timedelta(seconds=self.ctx.settings.inbound_duplicate_window)
        with self.ctx.Session.begin() as session:
            session.execute(
                delete(InboundPart).where(
                    InboundPart.sim_card_id == self.ctx.sim_card_id,
                    InboundPart.total < 0,
                    InboundPart.received_at < cutoff,
                )
            )

    def flush_incomplete(self) -> None:
        """A concatenated SMS whose missing parts never came is delivered as
        what arrived (gaps marked) instead of waiting in inbound_parts forever."""
        ctx = self.ctx
        if ctx.sim_card_id is None:
            return
        self.prune_completed_parts()
        cutoff = utcnow() - timedelta(seconds=ctx.settings.inbound_part_timeout)
        with ctx.Session() as session:
            groups = session.execute(
                select(InboundPart.sender, InboundPart.reference, InboundPart.total)
                .where(InboundPart.sim_card_id == ctx.sim_card_id, InboundPart.total > 0)
                .group_by(InboundPart.sender, InboundPart.reference, InboundPart.total)
                .having(func.min(InboundPart.received_at) < cutoff)
                .limit(100)
            ).all()
            for sender, reference, total in groups:
                key = PartKey(sender, reference, total)
                parts = session.scalars(
                    select(InboundPart)
                    .where(
                        InboundPart.sim_card_id == ctx.sim_card_id,
                        InboundPart.sender == sender,
                        InboundPart.reference == reference,
                        InboundPart.total == total,
                    )
                    .order_by(InboundPart.seq)
                    .with_for_update(skip_locked=True)
                ).all()
                if not parts:
                    continue
                by_seq = {p.seq: p.content for p in parts}
                text = "".join(by_seq.get(n, f"[part {n} of {total} missing]") for n in range(1, total + 1))
                msg = Message(
                    direction="inbound",
                    status=RECEIVED,
                    sender=sender,
                    recipient=ctx.sim_number,
                    message=text,
                    encoding=parts[0].encoding,
                    segments=total,
                    sim_card_id=ctx.sim_card_id,
                    sender_sim=ctx.sim_number,
                    sent_at=min((p.sent_at for p in parts if p.sent_at), default=None),
                )
                message_queue.record(
                    session,
                    msg,
                    RECEIVED,
                    source=ctx.worker_id,
                    detail=f"incomplete: {len(by_seq)} of {total} parts arrived",
                )
                session.flush()
                # The parts as received, for whoever can still find the rest.
                for p in parts:
                    if p.pdu:
                        session.add(
                            RawInboundPdu(
                                kind=RAW_INCOMPLETE_PART,
                                pdu=p.pdu,
                                reason=f"part {p.seq} of {total} (reference {reference}); "
                                f"the message was delivered with {total - len(by_seq)} missing",
                                sim_card_id=ctx.sim_card_id,
                                modem_id=ctx.modem_id,
                                message_id=msg.id,
                            )
                        )
                self._mark_completed(session, key, parts)
                session.commit()
                ctx.publish_event(msg, RECEIVED, message=text)
                log.warning("incomplete SMS from %s delivered with %d of %d parts", sender, len(by_seq), total)
