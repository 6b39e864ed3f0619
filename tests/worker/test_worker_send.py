"""The worker sends queued messages through the emulator and records the outcome."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from support.waits import holds_for

from smsgw_common.models import Message, MessageEvent, MessagePart, Modem, SimCard, utcnow
from smsgw_worker import pdu
from smsgw_worker.atmodem import ModemEvent
from smsgw_worker.worker.events import Unsolicited

from .worker_harness import wait_for


def test_it_registers_its_modem_and_sim_and_publishes_retained_state(rig):
    r = rig()
    r.start_worker()
    state = r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p.get("online"))
    assert state["iccid"] == r.iccid and state["number"] == r.number
    assert state["signal_dbm"] == -73 and state["registration"] == "home"
    with r.Session() as s:
        sim = s.scalar(select(SimCard).where(SimCard.iccid == r.iccid))
        modem = s.get(Modem, r.modem_id)
    assert sim.modem_id == r.modem_id and sim.number == r.number and sim.imsi
    assert modem.online and modem.imei == "356938035643809" and modem.signal_rssi == -73


def test_it_sends_a_single_gsm7_message_and_records_sent_with_its_reference(rig):
    r = rig()
    r.start_worker()
    mid = r.queue_sms("Hello from the gateway")
    msg = r.wait_state(mid, "sent")
    sent = r.emulator.wait_sent(1)
    assert [(x["number"], x["text"], x["encoding"]) for x in sent] == [
        ("+15550001111", "Hello from the gateway", "GSM-7")
    ]
    parts = r.parts(mid)
    assert [(p.seq, p.reference, p.status) for p in parts][0][:1] == (1,)
    assert parts[0].reference == sent[0]["mr"]
    assert msg.sent_at is not None
    events = r.mqtt.payloads(r.topics.message_events())
    assert [e["state"] for e in events if e["message_id"] == mid][:2] == ["sending", "sent"]


def test_it_sends_a_multipart_gsm7_message_as_concatenated_segments(rig):
    r = rig()
    r.start_worker()
    text = "".join(f"line {i:03d} with extension chars [{{}}] " for i in range(12))
    mid = r.queue_sms(text)
    r.wait_state(mid, "sent")
    sent = r.emulator.sent
    assert len(sent) >= 3
    assert "".join(x["text"] for x in sent) == text
    assert {x["concat"][0] for x in sent} == {mid % 256}  # (ref, total, seq)
    assert [p.seq for p in r.parts(mid)] == list(range(1, len(sent) + 1))


def test_it_sends_ucs2_with_an_emoji_outside_the_bmp(rig):
    r = rig()
    r.start_worker()
    text = "Grüße 👋 from Zürich " * 5
    mid = r.queue_sms(text)
    msg = r.wait_state(mid, "sent")
    sent = r.emulator.sent
    assert all(x["encoding"] == "UCS-2" for x in sent)
    assert "".join(x["text"] for x in sent) == text
    assert msg.segments == len(sent) == 2


def test_a_delivery_report_makes_the_message_delivered(rig):
    r = rig()
    r.start_worker()
    mid = r.queue_sms("please deliver")
    msg = r.wait_state(mid, "delivered")
    assert msg.delivered_at is not None
    assert [p.status for p in r.parts(mid)] == ["delivered"]


def test_a_multipart_message_is_delivered_only_when_every_part_is(rig):
    r = rig()
    r.start_worker()
    mid = r.queue_sms("x" * 400)
    r.wait_state(mid, "delivered")
    assert [p.status for p in r.parts(mid)] == ["delivered"] * 3
    with r.Session() as s:
        states = list(
            s.scalars(select(MessageEvent.state).where(MessageEvent.message_id == mid).order_by(MessageEvent.id))
        )
    assert states == ["sending", "sent", "delivered"]


def test_a_failed_delivery_report_fails_the_message_with_its_tp_status(rig):
    r = rig(emulator_kw={"report_status": 0x41})
    r.start_worker()
    mid = r.queue_sms("to a broken phone")
    msg = r.wait_state(mid, "failed")
    assert msg.error_code == 0x41
    assert "incompatible destination" in msg.error_text


def test_it_publishes_state_events_only_after_committing_them(rig):
    r = rig()
    r.start_worker()
    mid = r.queue_sms("ordering")
    event = r.mqtt.wait(r.topics.message_events(), lambda p: p["message_id"] == mid and p["state"] == "sent")
    # Whatever the listener saw, the database already says at least as much.
    assert r.message(mid).status in ("sent", "delivered")
    assert event["modem_id"] == r.modem_id


def test_a_wakeup_on_the_outbox_topic_makes_it_send_at_once(rig):
    r = rig(claim_interval=60.0)
    r.start_worker()
    wait_for(lambda: r.worker.context.want_claim is False, 5)
    mid = r.queue_sms("wake up")
    r.mqtt.publish(r.topics.outbox(r.modem_id), {"message_id": mid})
    r.wait_state(mid, "sent", timeout=5)


def test_it_claims_only_what_the_sims_per_minute_limit_allows(rig):
    r = rig()
    r.start_worker()
    with r.Session.begin() as s:
        s.get(SimCard, r.sim_card_id).limit_per_minute = 3
    ids = [r.queue_sms(f"capped {i}") for i in range(5)]
    wait_for(lambda: len(r.emulator.sent) >= 3, 10)
    # Several claim rounds: none may go past the cap.
    holds_for(lambda: len(r.emulator.sent) == 3, 1.5, message="three sends under a cap of 3 a minute")
    with r.Session() as s:
        states = [s.get(Message, i).status for i in ids]
    assert len(r.emulator.sent) == 3
    assert states.count("queued") == 2


def test_a_delivery_report_stored_and_announced_with_cdsi_is_read_and_applied(rig):
    r = rig(profile="quectel")
    r.start_worker()
    # As if the modem had only accepted +CNMI=...,2,... (reports stored in "SR").
    with r.emulator._lock:
        r.emulator._st.cnmi = [2, 1, 0, 2, 0]
    mid = r.queue_sms("report me via CDSI")
    r.wait_state(mid, "delivered", timeout=10)
    assert any(c.startswith("AT+CMGR=") for c in r.emulator.commands)
    wait_for(lambda: r.emulator.stored_messages("SR") == [], 5)


def test_a_report_for_an_unknown_reference_is_logged_and_harmless(rig, caplog):
    caplog.set_level(logging.INFO, logger="smsgw_worker.worker")
    r = rig()
    w = r.start_worker()
    when = datetime(2026, 1, 1, tzinfo=UTC)
    report = pdu.encode_status_report(77, "+15550001111", 0, when, when, smsc="+15550000000")
    w.events.put(Unsolicited(ModemEvent("report", "+CDS: 25", pdu=report), w.context.generation))
    wait_for(lambda: "unknown reference 77" in caplog.text, 5)
    r.wait_state(r.queue_sms("still fine"), "delivered")


def test_a_daily_limit_counts_segments_not_messages(rig):
    r = rig()
    r.start_worker()
    with r.Session.begin() as s:
        s.get(SimCard, r.sim_card_id).limit_per_day = 4
    long_id = r.queue_sms("z" * 300)  # two segments
    r.wait_state(long_id, "sent")
    ids = [r.queue_sms(f"short {i}") for i in range(3)]
    wait_for(lambda: len(r.emulator.sent) >= 4, 10)
    holds_for(lambda: len(r.emulator.sent) == 4, 1.0, message="four segments under a cap of 4 a day")
    assert len(r.emulator.sent) == 4
    assert [r.message(i).status for i in ids].count("queued") == 1


def _report(w, reference: int, recipient: str, status: int = 0) -> None:
    """Hand the worker a +CDS status report, as the modem would."""
    when = datetime(2026, 1, 1, tzinfo=UTC)
    report = pdu.encode_status_report(reference, recipient, status, when, when, smsc="+15550000000")
    w.events.put(Unsolicited(ModemEvent("report", "+CDS: 25", pdu=report), w.context.generation))


def _sent_message(r, recipient: str, parts: list[tuple], status: str = "sent") -> int:
    """An outbound message already handed to the modem: parts are
    (reference, part status, sent_at, report_status)."""
    with r.Session.begin() as s:
        msg = Message(
            direction="outbound",
            sender=r.number,
            recipient=recipient,
            message="earlier",
            status=status,
            sim_card_id=r.sim_card_id,
            sender_sim=r.number,
            segments=len(parts),
            queued_at=utcnow(),
            sent_at=utcnow(),
        )
        s.add(msg)
        s.flush()
        for seq, (reference, part_status, sent_at, report_status) in enumerate(parts, 1):
            s.add(
                MessagePart(
                    message_id=msg.id,
                    seq=seq,
                    sim_card_id=r.sim_card_id,
                    reference=reference,
                    status=part_status,
                    sent_at=sent_at,
                    report_status=report_status,
                )
            )
        return msg.id


def test_a_report_goes_to_the_latest_submission_with_its_reference_not_the_newest_row(rig):
    # The older row was re-sent after a transient error and got reference 5
    # again, after the newer row had used it: the report is the re-sent part's.
    r = rig(emulator_kw={"report_delay": 600})
    w = r.start_worker()
    now = utcnow()
    resent = _sent_message(r, "+15550001111", [(5, "sent", now, None)])
    earlier = _sent_message(r, "+15550001111", [(5, "sent", now - timedelta(minutes=10), None)])
    _report(w, 5, "+15550001111")
    r.wait_state(resent, "delivered")
    assert r.message(earlier).status == "sent"


def test_a_report_prefers_the_part_sent_to_its_recipient(rig):
    r = rig(emulator_kw={"report_delay": 600})
    w = r.start_worker()
    now = utcnow()
    to_alice = _sent_message(r, "+44 7700 900123", [(9, "sent", now - timedelta(minutes=5), None)])
    to_bob = _sent_message(r, "+15550004444", [(9, "sent", now, None)])
    _report(w, 9, "07700900123")  # the same number in national format
    r.wait_state(to_alice, "delivered")
    assert r.message(to_bob).status == "sent"
    _report(w, 9, "+15550004444")
    r.wait_state(to_bob, "delivered")


def test_a_failure_report_for_a_part_that_left_before_a_retry_fails_the_message(rig):
    # Part 1 leaves, part 2 is refused (transient): while the message waits in
    # the queue, part 1's failure report arrives. It must not be lost.
    r = rig(emulator_kw={"report_delay": 600}, retry_base=1.0, retry_max=1.0)
    w = r.start_worker()
    r.emulator.fail_next_sends(1, 500, after=1)
    mid = r.queue_sms("y" * 300)  # two segments
    wait_for(lambda: r.message(mid).status == "queued" and len(r.emulator.sent) == 1, 10)
    first = r.parts(mid)[0]
    assert (first.seq, first.status) == (1, "sent")
    _report(w, first.reference, "+15550001111", 0x41)
    msg = r.wait_state(mid, "failed")
    assert msg.error_code == 0x41 and "incompatible destination" in msg.error_text
    # Past the retry time: the rest is not sent.
    holds_for(lambda: len(r.emulator.sent) == 1, 1.5, message="only the first segment sent")
    assert len(r.emulator.sent) == 1
    assert r.message(mid).status == "failed"


def test_a_resumed_message_with_a_part_reported_failed_is_failed_not_resent(rig):
    r = rig(emulator_kw={"report_delay": 600})
    mid = _sent_message(
        r, "+15550001111", [(3, "failed", utcnow(), 0x46), (None, "failed", None, None)], status="queued"
    )
    r.start_worker()
    msg = r.wait_state(mid, "failed")
    assert msg.error_code == 0x46 and "validity period expired" in msg.error_text
    assert r.emulator.sent == []


def test_a_delivered_part_does_not_hide_another_parts_failure_report(rig):
    r = rig(emulator_kw={"report_delay": 600})
    w = r.start_worker()
    mid = _sent_message(
        r, "+15550001111", [(11, "failed", utcnow(), 0x41), (12, "sent", utcnow(), None)], status="unknown"
    )
    _report(w, 12, "+15550001111", 0)
    msg = r.wait_state(mid, "failed")
    assert msg.error_code == 0x41 and "incompatible destination" in msg.error_text
