"""A message is `unknown` only when the PDU was written and no answer came,
and its detail says which way the answer failed to come (docs/reliability.md)."""

from __future__ import annotations

from sqlalchemy import select

from smsgw_common.models import MessageEvent

from .worker_harness import wait_for


def last_detail(rig, message_id: int) -> str:
    with rig.Session() as s:
        return s.scalars(
            select(MessageEvent.detail).where(MessageEvent.message_id == message_id).order_by(MessageEvent.id.desc())
        ).first()


def test_a_bare_ok_after_the_pdu_is_unknown_and_says_what_the_modem_answered(rig):
    r = rig()
    r.start_worker()
    r.emulator.lose_next_references(1, final="OK")
    message_id = r.queue_sms("bare ok")
    r.wait_state(message_id, "unknown", timeout=15)
    detail = last_detail(r, message_id)
    assert detail.startswith("the modem answered OK after the PDU was written, without +CMGS: <mr>"), detail
    assert detail.endswith("not resent to avoid a duplicate")
    assert len(r.emulator.sent) == 1


def test_an_error_after_the_pdu_is_unknown_and_says_what_the_modem_answered(rig):
    r = rig()
    r.start_worker()
    r.emulator.lose_next_references(1, final="ERROR")
    message_id = r.queue_sms("bare error")
    r.wait_state(message_id, "unknown", timeout=15)
    detail = last_detail(r, message_id)
    assert detail.startswith("the modem answered 'ERROR' after the PDU was written, not +CMGS: <mr>"), detail


def test_no_answer_after_the_pdu_is_unknown_and_says_how_long_it_waited(rig):
    r = rig(emulator_kw={"send_latency": 30.0})  # the +CMGS comes long after the worker's 3 s
    r.start_worker()
    message_id = r.queue_sms("silence")
    r.wait_state(message_id, "unknown", timeout=20)
    detail = last_detail(r, message_id)
    assert detail.startswith("no answer within 3s after the PDU was written"), detail


def test_a_port_lost_after_the_pdu_is_unknown_and_says_the_port_went(rig):
    r = rig(emulator_kw={"send_latency": 5.0})
    r.start_worker()
    message_id = r.queue_sms("unplugged mid-send")
    wait_for(lambda: any(p.status == "submitting" for p in r.parts(message_id)), 10, "the PDU written")
    r.emulator.unplug()
    r.wait_state(message_id, "unknown", timeout=15)
    detail = last_detail(r, message_id)
    assert detail.startswith("the port was lost after the PDU was written, before the modem answered"), detail
