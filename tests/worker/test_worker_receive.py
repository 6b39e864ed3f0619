"""Inbound SMS: stored, direct, concatenated out of order, across a restart."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import select
from support.waits import holds_for

from smsgw_common.models import InboundPart

from .worker_harness import Rig, wait_for

LONG = "".join(f"part of a long inbound story, sentence {i}. " for i in range(9))


def test_it_stores_an_inbound_sms_then_deletes_it_from_the_sim_and_publishes_it(rig):
    r = rig()
    r.start_worker()
    r.emulator.inject_sms("+447700900123", "Hi there")
    msgs = wait_for(lambda: r.inbound(), 10)
    assert [(m.sender, m.message, m.status, m.recipient, m.sender_sim) for m in msgs] == [
        ("+447700900123", "Hi there", "received", r.number, r.number)
    ]
    wait_for(lambda: r.emulator.stored_messages() == [], 5)
    event = r.mqtt.wait(r.topics.message_events(), lambda p: p["direction"] == "inbound")
    assert event["message"] == "Hi there" and event["state"] == "received" and event["message_id"] == msgs[0].id


def test_it_reads_what_was_stored_before_it_started(rig):
    r = rig()
    r.emulator.inject_sms("+15550002222", "waiting for you")
    wait_for(lambda: r.emulator.stored_messages(), 10)
    r.start_worker()
    msgs = wait_for(lambda: r.inbound(), 10)
    assert [m.message for m in msgs] == ["waiting for you"]


def test_it_assembles_a_multipart_sms_arriving_out_of_order(rig):
    r = rig()
    r.start_worker()
    r.emulator.inject_sms("+15550003333", LONG, multipart_order=[3, 1, 2])
    msgs = wait_for(lambda: r.inbound(), 10)
    assert len(msgs) == 1
    assert msgs[0].message == LONG and msgs[0].segments == 3
    assert _parts(r) == 0  # nothing left waiting; the completed parts stay only as markers


def test_parts_persisted_before_a_restart_complete_after_it(rig):
    r = rig()
    r.start_worker()
    from smsgw_worker import pdu

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    pdus = pdu.encode_deliver("+15550005555", LONG, scts=when, concat_ref=9, smsc="+15550000000")
    r.emulator.inject_pdu(pdus[0])
    wait_for(lambda: _parts(r) == 1, 10)
    r.stop_worker()
    r.emulator.inject_pdu(pdus[2])
    r.emulator.inject_pdu(pdus[1])
    r.start_worker()
    msgs = wait_for(lambda: r.inbound(), 10)
    assert [m.message for m in msgs] == [LONG]
    assert _parts(r) == 0


def test_the_same_sms_delivered_twice_is_stored_once(rig):
    r = rig()
    r.start_worker()
    when = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
    r.emulator.inject_sms("+15550006666", "only once", scts=when)
    wait_for(lambda: r.inbound(), 10)
    r.emulator.inject_sms("+15550006666", "only once", scts=when)
    r.emulator.inject_sms("+15550006666", "a different one", scts=when)
    wait_for(lambda: len(r.inbound()) == 2, 10)
    assert sorted(m.message for m in r.inbound()) == ["a different one", "only once"]


def test_it_acknowledges_directly_delivered_sms(rig):
    r = rig(profile="direct", direct_delivery=True, emulator_kw={"ack_timeout": 1.0})
    r.start_worker()
    assert (r.emulator._st.csms, r.emulator._st.cnmi[1]) == (1, 2)  # +CMT, acknowledged with AT+CNMA
    r.emulator.inject_sms("+15550007777", "direct", store=False)
    msgs = wait_for(lambda: r.inbound(), 10)
    assert [m.message for m in msgs] == ["direct"]
    [delivery] = wait_for(lambda: [d for d in r.emulator.direct_deliveries if d["outcome"]], 5)
    assert (delivery["kind"], delivery["attempt"], delivery["outcome"]) == ("sms", 0, "acked")
    assert r.emulator.stored_messages() == []  # nothing left for the network to store


def test_direct_delivery_during_a_slow_batch_is_acknowledged_in_time_and_recorded_once(rig):
    # Eight sends at 0.4 s each keep the worker busy for over 3 s; the
    # network repeats an unacknowledged +CMT/+CDS after 1 s.
    r = rig(
        profile="direct",
        direct_delivery=True,
        emulator_kw={"ack_timeout": 1.0, "send_latency": 0.4, "report_delay": 0.05},
    )
    r.start_worker()
    ids = [r.queue_sms(f"batch {i}") for i in range(8)]
    r.emulator.wait_sent(1, timeout=10)
    r.emulator.inject_sms("+15550008888", "while you were sending", store=False)
    for mid in ids:
        r.wait_state(mid, "delivered", 20)
    assert len(r.emulator.sent) == 8  # one batch, all sent once
    msgs = wait_for(lambda: r.inbound(), 10)
    holds_for(lambda: len(r.inbound()) == 1, 0.5, message="the SMS stored once")
    assert [m.message for m in r.inbound()] == ["while you were sending"] == [m.message for m in msgs]
    deliveries = wait_for(lambda: (d := list(r.emulator.direct_deliveries)) and all(x["outcome"] for x in d) and d, 5)
    assert sorted(d["kind"] for d in deliveries) == ["report"] * 8 + ["sms"]
    late = [d for d in deliveries if d["attempt"] > 0 or d["outcome"] != "acked"]
    assert late == []  # every +CMT/+CDS acknowledged the first time, none repeated
    assert max(d["acked_at"] - d["at"] for d in deliveries) < 1.0
    assert r.emulator.stored_messages() == []


def test_a_truncated_direct_sms_is_not_acknowledged_and_arrives_when_the_network_repeats_it(rig):
    r = rig(profile="direct", direct_delivery=True, emulator_kw={"ack_timeout": 0.5})
    r.start_worker()
    from smsgw_worker import pdu

    when = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    [hexpdu] = pdu.encode_deliver("+15550009191", "second time lucky", scts=when, smsc="+15550000000")
    with r.emulator._lock:  # a +CMT whose PDU line got lost on the wire
        r.emulator._urc(f"+CMT: ,{len(hexpdu) // 2 - 8}")
    time.sleep(1.5)  # the link hands a +CMT without its PDU over after 1 s
    assert r.inbound() == [] and "AT+CNMA" not in r.emulator.commands  # nothing to acknowledge
    # The network, having no acknowledgement, delivers it again.
    r.emulator.inject_pdu(hexpdu, store=False)
    msgs = wait_for(lambda: r.inbound(), 10)
    assert [m.message for m in msgs] == ["second time lucky"]


def _parts(r: Rig) -> int:
    """Parts waiting for the rest of their message."""
    with r.Session() as s:
        return len(
            s.scalars(select(InboundPart).where(InboundPart.sim_card_id == r.sim_card_id, InboundPart.total > 0)).all()
        )


def _markers(r: Rig) -> int:
    """Parts of completed messages, kept to recognise a repeat."""
    with r.Session() as s:
        return len(
            s.scalars(select(InboundPart).where(InboundPart.sim_card_id == r.sim_card_id, InboundPart.total < 0)).all()
        )


def test_a_multipart_sms_missing_a_part_is_delivered_with_the_gap_marked_after_a_while(rig):
    r = rig(inbound_part_timeout=1.0, sweep_interval=0.3)
    r.start_worker()
    from smsgw_worker import pdu

    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    pdus = pdu.encode_deliver("+15550001357", LONG, scts=when, concat_ref=33, smsc="+15550000000")
    r.emulator.inject_pdu(pdus[0])
    r.emulator.inject_pdu(pdus[2])
    msgs = wait_for(lambda: r.inbound(), 10)
    assert msgs[0].message.count("[part 2 of 3 missing]") == 1
    assert msgs[0].message.startswith(LONG[:100])
    assert _parts(r) == 0


def test_a_repeated_part_of_a_completed_multipart_sms_is_dropped_and_deleted_from_the_sim(rig):
    # The last part arrives again after the message was assembled (AT+CMGD failed
    # after the commit, a crash in between, an SMSC resend): it must not turn
    # into a second, "[part 1 of 3 missing]..." message once the part timeout passes.
    r = rig(inbound_part_timeout=1.0, sweep_interval=0.3)
    r.start_worker()
    from smsgw_worker import pdu

    when = datetime(2026, 4, 5, 6, 7, 8, tzinfo=UTC)
    pdus = pdu.encode_deliver("+15550002468", LONG, scts=when, concat_ref=44, smsc="+15550000000")
    for p in pdus:
        r.emulator.inject_pdu(p)
    msgs = wait_for(lambda: r.inbound(), 10)
    assert [m.message for m in msgs] == [LONG]
    wait_for(lambda: r.emulator.stored_messages() == [], 5)
    r.emulator.inject_pdu(pdus[2])
    r.emulator.inject_pdu(pdus[0])
    wait_for(lambda: r.emulator.stored_messages() == [], 5)  # read, recognised, deleted
    # Well past inbound_part_timeout, several sweeps: the stray parts never make a second SMS.
    holds_for(lambda: [m.message for m in r.inbound()] == [LONG], 2.0, message="one reassembled SMS")
    assert _parts(r) == 0


def test_a_new_multipart_sms_reusing_a_reference_is_still_assembled(rig):
    r = rig(inbound_part_timeout=1.0, sweep_interval=0.3)
    r.start_worker()
    from smsgw_worker import pdu

    first = datetime(2026, 4, 5, 6, 7, 8, tzinfo=UTC)
    later = datetime(2026, 4, 5, 9, 0, 0, tzinfo=UTC)
    other = "P" + LONG[1:]
    for p in pdu.encode_deliver("+15550002469", LONG, scts=first, concat_ref=45, smsc="+15550000000"):
        r.emulator.inject_pdu(p)
    wait_for(lambda: len(r.inbound()) == 1, 10)
    # Same sender, reference and part count, parts 2 and 3 even carry the same
    # text: but a new SMSC timestamp, so a new message.
    for p in pdu.encode_deliver("+15550002469", other, scts=later, concat_ref=45, smsc="+15550000000"):
        r.emulator.inject_pdu(p)
    msgs = wait_for(lambda: len(r.inbound()) == 2 and r.inbound(), 10)
    assert [m.message for m in msgs] == [LONG, other]
    assert _parts(r) == 0 and _markers(r) == 3  # the older message's markers gave way


def test_markers_of_completed_messages_are_pruned_after_the_duplicate_window(rig):
    r = rig(sweep_interval=0.3, inbound_duplicate_window=1.0)
    r.start_worker()
    r.emulator.inject_sms("+15550002470", LONG, concat_ref=46)
    wait_for(lambda: r.inbound(), 10)
    assert _markers(r) == 3
    wait_for(lambda: _markers(r) == 0, 10)


def test_status_reports_stored_in_sr_while_the_worker_was_down_are_read_at_start(rig):
    r = rig(profile="quectel", emulator_kw={"report_delay": 3600})  # the emulator's own report never comes
    r.start_worker()
    mid = r.queue_sms("report me later", recipient="+15550004444")
    r.wait_state(mid, "sent")
    [sent] = r.emulator.sent
    r.stop_worker()
    # It came while nobody listened, announced by a +CDSI no one read.
    assert r.emulator.inject_status_report(sent["mr"], "+15550004444", 0, store=True) == 0
    assert [m["memory"] for m in r.emulator.stored_messages()] == ["SR"]
    r.start_worker()
    r.wait_state(mid, "delivered", 10)
    wait_for(lambda: r.emulator.stored_messages() == [], 5)  # deleted once recorded


def test_a_failure_report_left_in_sr_without_its_cdsi_is_found_by_the_storage_check(rig):
    r = rig(profile="quectel", emulator_kw={"report_delay": 3600})
    r.start_worker()
    mid = r.queue_sms("no such number", recipient="+15550004445")
    r.wait_state(mid, "sent")
    [sent] = r.emulator.sent
    time.sleep(0.7)  # past the start-up scan: only the periodic storage check can find it
    r.emulator.inject_status_report(sent["mr"], "+15550004445", 0x41, store=True)
    msg = r.wait_state(mid, "failed", 10)
    assert msg.error_code == 0x41 and "incompatible destination" in msg.error_text
    wait_for(lambda: r.emulator.stored_messages() == [], 5)
