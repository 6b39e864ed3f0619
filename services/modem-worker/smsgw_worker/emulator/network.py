"""The network side of the emulated modem: sends leaving (AT+CMGS), status
reports and SMS arriving, routed by AT+CNMI to +CMTI/+CDSI (stored) or
+CMT/+CDS (direct, waiting for AT+CNMA), and the SIM storage they land in.
Functions of the modem, run under its lock."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from smsgw_worker import pdu as pducodec

from .state import REC_UNREAD, CmsError, HeldPdu, Pending, Stored, tpdu_len

if TYPE_CHECKING:
    from .core import EmulatedModem

log = logging.getLogger(__name__)


def write_to_storage(emu: EmulatedModem, hexpdu: str, length: int, stat: int) -> None:
    try:
        raw = bytes.fromhex(hexpdu)
        if not raw or len(raw) - raw[0] - 1 != length:
            raise ValueError("length mismatch")
        pducodec.decode(hexpdu)
    except ValueError:
        emu._final_error(CmsError(304))
        return
    mem = emu._st.mem[1]
    idx = store(emu, mem, hexpdu.upper())
    if idx is None:
        emu._final_error(CmsError(322))
        return
    emu._storage[mem][idx].status = stat
    emu.save_storage()
    emu._lines(f"+CMGW: {idx}", "OK")


def submit(emu: EmulatedModem, hexpdu: str, length: int) -> None:
    try:
        raw = bytes.fromhex(hexpdu)
        smsc_len = raw[0]
        if len(raw) - smsc_len - 1 != length:
            raise pducodec.PduError(f"AT+CMGS said {length} octets, the PDU has {len(raw) - smsc_len - 1}")
        decoded = pducodec.decode(hexpdu)
        if not isinstance(decoded, pducodec.Submit):
            raise pducodec.PduError("not an SMS-SUBMIT")
    except (ValueError, IndexError) as exc:
        log.info("emulator rejected PDU %s: %s", hexpdu, exc)
        emu._final_error(CmsError(304))
        return
    if emu._st.cfun != 1 or emu.registration not in (1, 5):
        emu._final_error(CmsError(331))
        return
    smsc_in_pdu = raw[0] > 1
    if not emu.smsc and not smsc_in_pdu:
        emu._final_error(CmsError(330))  # neither the PDU nor AT+CSCA names an SMSC
        return
    mem = emu._st.mem[2]
    if "send_needs_room" in emu.quirks and len(emu._storage[mem]) >= emu._capacity(mem):
        emu._final_error(CmsError(322))
        return
    if emu._hang_on_submit is not None:
        # The PDU is in: the modem stalls before it answers (the radio side
        # carries on, so the SMS may still leave).
        (seconds, mode), emu._hang_on_submit = emu._hang_on_submit, None
        emu._hang_for(seconds, mode)
    fail = emu._fail_sends.pop(0) if emu._fail_sends else None
    lost = emu._lose_refs.pop(0) if fail is None and emu._lose_refs else None
    emu._busy = True

    def finish() -> None:
        emu._busy = False
        if fail is not None:
            emu._final_error(CmsError(fail))
        else:
            mr = emu._next_mr
            emu._next_mr = (mr + 1) % 256
            concat = decoded.concat
            record = {
                "number": decoded.recipient,
                "text": decoded.text,
                "encoding": decoded.encoding,
                "concat": (concat.ref, concat.total, concat.seq) if concat else None,
                "mr": mr,
                "pdu": hexpdu,
                "status_report_requested": decoded.status_report_requested,
                "at": time.time(),
            }
            emu.record_sent(record)
            if lost is None:
                emu._lines(f"+CMGS: {mr}", "OK")
            else:
                emu._lines(lost)  # it left, but the reference never reaches the TE
            if decoded.status_report_requested:
                submitted = datetime.now(UTC).replace(microsecond=0)
                emu._schedule(
                    emu.report_delay,
                    lambda: status_report(emu, mr, decoded.recipient, submitted),
                    "persistent",
                )
        emu._consume()  # commands that queued up behind the send

    if emu.send_latency > 0:
        emu._schedule(emu.send_latency, finish)
    else:
        finish()


def status_report(emu: EmulatedModem, mr: int, recipient: str, submitted: datetime) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    status = emu.report_status
    hexpdu = pducodec.encode_status_report(mr, recipient, status, submitted, now, smsc=emu.smsc)
    emu.reports.append({"mr": mr, "number": recipient, "status": status, "pdu": hexpdu})
    emu._network.append(HeldPdu("report", hexpdu))
    pump(emu)


def pump(emu: EmulatedModem) -> None:
    """Hand over what the network holds, as far as the modem can take it."""
    # A hung modem takes nothing from the network either: it keeps them until the modem answers again.
    if emu._master is None or emu._hung or not emu._booted or not emu._sim_present or not emu._pin_ok:
        return
    if time.monotonic() < max(emu._sim_busy_until, emu._sms_ready_at):
        return
    waiting, emu._network = emu._network, []
    for kind, hexpdu in waiting:
        if not route(emu, kind, hexpdu):
            emu._network.append(HeldPdu(kind, hexpdu))


def route(emu: EmulatedModem, kind: str, hexpdu: str, force_store: bool = False) -> bool:
    """Deliver one PDU per +CNMI; False if there is no room for it yet.

    With AT+CSMS=1 only one +CMT/+CDS is outstanding at a time (TS 27.005
    3.4.1: no new one before the previous is acknowledged); the next
    waits at the network until AT+CNMA."""
    _mode, mt, _bm, ds, _bfr = emu._st.cnmi
    force_store = force_store or kind in ("sms-store", "report-store")
    length = tpdu_len(hexpdu)
    awaiting_ack = emu._st.csms == 1 and bool(emu._pending_acks)
    if kind in ("report", "report-store"):
        if ds == 0 and not force_store:
            return True  # the TE asked for no reports: the network's copy is dropped
        if ds == 1 and not force_store:
            if awaiting_ack:
                return False
            direct(emu, "report", [f"+CDS: {length}", hexpdu], lambda: _hold(emu, "report-store", hexpdu))
            emu.record_report_handed_over(hexpdu)
            return True
        idx = store(emu, emu.profile.report_memory, hexpdu)
        if idx is None:
            return False
        if ds != 0:
            emu._urc(f'+CDSI: "{emu.profile.report_memory}",{idx}')
        emu.record_report_handed_over(hexpdu)
        return True
    if mt in (2, 3) and not force_store:
        if awaiting_ack:
            return False
        direct(emu, "sms", [f"+CMT: ,{length}", hexpdu], lambda: _hold(emu, "sms-store", hexpdu))
        return True
    mem = emu._st.mem[2]
    idx = store(emu, mem, hexpdu)
    if idx is None:
        return False
    if mt != 0:
        emu._urc(f'+CMTI: "{mem}",{idx}')
    return True


def direct(emu: EmulatedModem, kind: str, lines: list[str], fallback: Callable[[], None]) -> None:
    emu._block(lines)
    if emu._st.csms != 1:
        return
    pending = Pending(lines, fallback)
    emu._pending_acks.append(pending)
    arm_ack(emu, pending, kind)


def arm_ack(emu: EmulatedModem, pending: Pending, kind: str) -> None:
    record = {
        "kind": kind,
        "pdu": pending.lines[1],
        "attempt": pending.attempts,
        "at": time.time(),
        "acked_at": None,
        "outcome": None,
    }
    emu.direct_deliveries.append(record)
    pending.record = record

    def expired() -> None:
        if pending not in emu._pending_acks:
            return
        pending.attempts += 1
        if pending.attempts > emu.ack_retries:
            # The network gives up on direct delivery and stores it.
            emu._pending_acks.remove(pending)
            record["outcome"] = "stored"
            pending.fallback()
            return
        # No +CNMA in time: the network delivers the same message again.
        record["outcome"] = "repeated"
        emu._block(pending.lines)
        arm_ack(emu, pending, kind)

    pending.event = emu._schedule(emu.ack_timeout, expired)


def abandon_acks(emu: EmulatedModem) -> None:
    """A reset while +CMT/+CDS wait for AT+CNMA: unacknowledged, so the
    network still holds them (and stores them once it can)."""
    pending, emu._pending_acks = emu._pending_acks, []
    for p in pending:
        if p.event is not None:
            p.event.live = False
        p.record["outcome"] = "stored"
        p.fallback()


def store(emu: EmulatedModem, mem: str, hexpdu: str) -> int | None:
    store = emu._storage[mem]
    cap = emu._capacity(mem)
    for idx in range(cap):
        if idx not in store:
            store[idx] = Stored(hexpdu, REC_UNREAD)
            emu.save_storage()
            if len(store) == cap and emu.profile.full_line:
                emu._urc(emu.profile.full_line)
            return idx
    return None


def _hold(emu: EmulatedModem, kind: str, hexpdu: str) -> None:
    """The network keeps a PDU the modem did not acknowledge, to store it once it can."""
    emu._network.append(HeldPdu(kind, hexpdu))
    pump(emu)
