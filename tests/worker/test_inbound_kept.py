"""Nothing received is lost to a decoder: what no reading of it decodes is
kept raw in Postgres before the SIM copy goes, a stored SMS-SUBMIT stays on
the SIM, and an incomplete concatenated SMS keeps its parts as received."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import select, text

from smsgw_common.models import RAW_INCOMPLETE_PART, RAW_UNDECODABLE, RawInboundPdu
from smsgw_worker import pdu

from .worker_harness import wait_for

# SMS-DELIVER from +15550001111 with DCS 0x20 (compressed GSM-7, TS 23.038
# 4): nothing here decompresses it.
COMPRESSED_DELIVER = "0004" + "0B915155001011F1" + "00" + "20" + "62115291505500" + "05E8329BFD06"
# The same as an SMS-SUBMIT a phone saved (TP-MTI 01, TP-MR 00, no validity).
COMPRESSED_SUBMIT = "0001" + "00" + "0B915155001011F1" + "00" + "20" + "05E8329BFD06"


def _raw(r, kind: str) -> list[RawInboundPdu]:
    with r.Session() as s:
        rows = list(
            s.scalars(
                select(RawInboundPdu)
                .where(RawInboundPdu.modem_id == r.modem_id, RawInboundPdu.kind == kind)
                .order_by(RawInboundPdu.id)
            )
        )
        s.expunge_all()
        return rows


def test_an_undecodable_pdu_is_kept_in_postgres_and_only_then_leaves_the_sim(rig):
    r = rig()
    r.start_worker()
    r.emulator.inject_pdu(COMPRESSED_DELIVER)
    rows = wait_for(lambda: _raw(r, RAW_UNDECODABLE), 10)
    assert [(x.pdu, x.sim_card_id, x.origin) for x in rows] == [(COMPRESSED_DELIVER, r.sim_card_id, "SM:0")]
    assert "compressed" in rows[0].reason
    wait_for(lambda: r.emulator.stored_messages() == [], 5)
    assert r.inbound() == []


def test_an_undecodable_pdu_stays_on_the_sim_until_the_database_holds_it(rig):
    r = rig()
    r.start_worker()
    with r.engine.connect() as blocker:
        tx = blocker.begin()
        blocker.execute(text("LOCK TABLE raw_inbound_pdus IN ACCESS EXCLUSIVE MODE"))
        r.emulator.inject_pdu(COMPRESSED_DELIVER)
        wait_for(lambda: any(c.startswith("AT+CMGR=") for c in list(r.emulator.commands)), 10)
        time.sleep(0.5)  # the worker is now waiting on the lock: it must not have deleted anything
        assert [m["pdu"] for m in r.emulator.stored_messages()] == [COMPRESSED_DELIVER]
        assert not any(c.startswith("AT+CMGD=") for c in list(r.emulator.commands))
        tx.rollback()
    wait_for(lambda: _raw(r, RAW_UNDECODABLE), 10)
    wait_for(lambda: r.emulator.stored_messages() == [], 5)


def test_a_stored_submit_the_decoder_cannot_read_is_never_deleted(rig):
    r = rig()
    r.start_worker()
    r.emulator.inject_pdu(COMPRESSED_SUBMIT)
    r.emulator.inject_sms("+15550002222", "after the draft")
    wait_for(lambda: r.inbound(), 10)
    assert [m["pdu"] for m in r.emulator.stored_messages()] == [COMPRESSED_SUBMIT]
    assert _raw(r, RAW_UNDECODABLE) == []


def test_an_incomplete_message_is_delivered_marked_and_keeps_its_raw_parts(rig):
    r = rig(inbound_part_timeout=1.0, sweep_interval=0.3)
    r.start_worker()
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    story = "".join(f"sentence {i} of a long story. " for i in range(12))
    parts = pdu.encode_deliver("+15550003333", story, scts=when, concat_ref=77, smsc="+15550000000")
    assert len(parts) == 3
    r.emulator.inject_pdu(parts[0])
    r.emulator.inject_pdu(parts[2])
    msgs = wait_for(lambda: r.inbound(), 10)
    assert "[part 2 of 3 missing]" in msgs[0].message
    kept = wait_for(lambda: _raw(r, RAW_INCOMPLETE_PART), 5)
    assert sorted(x.pdu for x in kept) == sorted([parts[0], parts[2]])
    assert {x.message_id for x in kept} == {msgs[0].id}
