"""Inbound SMS: stored, direct, concatenated out of order, across a restart."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select

from smsgw_common.models import InboundPart

from .worker_harness import Rig, wait_for

LONG = "".join(f"part of a long inbound story, sentence {i}. " for i in range(9))


def test_it_stores_an_inbound_sms_then_deletes_it_from_the_sim_and_publishes_it(rig):
    r = rig()
    r.start_worker()
    r.emulator.inject_sms("+447700900123", "Hi there")
    msgs = wait_for(lambda: r.inbound(), 10)
    assert [(m.sender, m.message, m.status, m.recipient, m.sender_sim) for m in msgs] == [
        ("+447700900123", "Hi there", "received", r.number, r.number)]
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
    with r.Session() as s:
        assert s.scalars(select(InboundPart).where(InboundPart.sim_card_id == r.sim_card_id)).all() == []


def test_parts_persisted_before_a_restart_complete_after_it(rig):
    r = rig()
    r.start_worker()
    from smsgw_worker import pdu

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
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
    when = datetime(2026, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    r.emulator.inject_sms("+15550006666", "only once", scts=when)
    wait_for(lambda: r.inbound(), 10)
    r.emulator.inject_sms("+15550006666", "only once", scts=when)
    r.emulator.inject_sms("+15550006666", "a different one", scts=when)
    wait_for(lambda: len(r.inbound()) == 2, 10)
    assert sorted(m.message for m in r.inbound()) == ["a different one", "only once"]


def test_it_acknowledges_directly_delivered_sms(rig):
    r = rig()
    r.start_worker()
    r.emulator.inject_sms("+15550007777", "direct", store=False)
    msgs = wait_for(lambda: r.inbound(), 10)
    assert msgs[0].message == "direct"


def _parts(r: Rig) -> int:
    with r.Session() as s:
        return len(s.scalars(select(InboundPart).where(InboundPart.sim_card_id == r.sim_card_id)).all())


def test_a_multipart_sms_missing_a_part_is_delivered_with_the_gap_marked_after_a_while(rig):
    r = rig(inbound_part_timeout=1.0, sweep_interval=0.3)
    r.start_worker()
    from smsgw_worker import pdu

    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    pdus = pdu.encode_deliver("+15550001357", LONG, scts=when, concat_ref=33, smsc="+15550000000")
    r.emulator.inject_pdu(pdus[0])
    r.emulator.inject_pdu(pdus[2])
    msgs = wait_for(lambda: r.inbound(), 10)
    assert msgs[0].message.count("[part 2 of 3 missing]") == 1
    assert msgs[0].message.startswith(LONG[:100])
    assert _parts(r) == 0
