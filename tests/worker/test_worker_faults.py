"""Every emulator fault control, and the worker surviving each."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select
from support.waits import holds_for

from smsgw_common.models import MessageEvent, Modem

from .worker_harness import Rig, wait_for


def _events(r: Rig, mid: int) -> list[MessageEvent]:
    with r.Session() as s:
        return list(s.scalars(select(MessageEvent).where(MessageEvent.message_id == mid).order_by(MessageEvent.id)))


def test_a_slow_network_only_delays_the_send(rig):
    r = rig(emulator_kw={"send_latency": 0.8})
    r.start_worker()
    started = time.monotonic()
    mid = r.queue_sms("slow but sure")
    r.wait_state(mid, "sent", timeout=10)
    assert time.monotonic() - started >= 0.8
    assert len(r.emulator.sent) == 1


def test_a_transient_cms_error_is_retried_with_backoff_and_sent_once(rig):
    r = rig()
    r.start_worker()
    r.emulator.fail_next_sends(1, 500)
    mid = r.queue_sms("retry me")
    msg = r.wait_state(mid, "sent", timeout=10)
    assert len(r.emulator.sent) == 1
    assert msg.attempts == 2
    states = [(e.state, e.error_code) for e in _events(r, mid)]
    assert states[:3] == [("sending", None), ("queued", 500), ("sending", None)]


def test_transient_errors_give_up_after_the_attempt_limit(rig):
    r = rig(max_attempts=2)
    r.start_worker()
    r.emulator.fail_next_sends(5, 332)
    mid = r.queue_sms("never makes it")
    msg = r.wait_state(mid, "failed", timeout=10)
    assert (msg.error_code, msg.error_text) == (332, "network timeout")
    assert r.emulator.sent == []


def test_a_permanent_cms_error_fails_the_message_with_the_modem_code_and_text(rig):
    r = rig()
    r.start_worker()
    r.emulator.fail_next_sends(1, 21)
    mid = r.queue_sms("rejected")
    msg = r.wait_state(mid, "failed", timeout=10)
    assert msg.error_code == 21 and msg.error_text == "short message transfer rejected"
    assert msg.attempts == 1
    # The worker goes on: the next message leaves normally.
    r.wait_state(r.queue_sms("next one"), "sent", timeout=10)


@pytest.mark.parametrize("final", ["OK", "ERROR"])
def test_a_send_answered_without_a_reference_is_unknown_and_never_resent(rig, final):
    # The SMS left, but the modem's answer after the PDU carries no +CMGS
    # (and no +CMS/+CME error): resending it could deliver it twice.
    r = rig()
    r.start_worker()
    r.emulator.lose_next_references(1, final)
    mid = r.queue_sms("did it leave?")
    msg = r.wait_state(mid, "unknown", timeout=10)
    assert "without a message reference" in msg.error_text
    assert [e.state for e in _events(r, mid)] == ["sending", "unknown"]
    assert [p.status for p in r.parts(mid)] == ["submitting"]
    # The modem answers, so the worker goes on at once; the message stays unknown.
    r.wait_state(r.queue_sms("next one"), "sent", timeout=10)
    # Several claim rounds: the unknown one is never sent again.
    holds_for(lambda: len(r.emulator.sent) == 2, 1.0, message="two sends, no resend")
    assert r.message(mid).status == "unknown"


def test_a_hung_modem_is_reopened_and_the_worker_resumes_when_it_answers_again(rig, caplog):
    r = rig()
    w = r.start_worker()
    r.emulator.hang(True, mode="late")  # what is written meanwhile runs when it ends
    r.mqtt.wait(
        r.topics.state(r.modem_id), lambda p: not p["online"] and p.get("reason") == "not_responding", timeout=15
    )
    r.emulator.hang(False)
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p["online"] and p["ts"] > _last_offline(r), timeout=20)
    r.wait_state(r.queue_sms("after the hang"), "sent", timeout=10)
    assert w.modem is not None
    # No ATZ or AT+CFUN=1,1 into a modem that does not answer AT: one that
    # queued them would reboot after the stall (docs/modems.md, "Modem faults").
    assert not any(c.upper().startswith(("ATZ", "AT+CFUN=1,1")) for c in r.emulator.commands)
    assert "reopening the port" in caplog.text


def test_garbage_on_the_line_is_survived(rig):
    r = rig()
    r.start_worker()
    for _ in range(5):
        r.emulator.emit_garbage(64)
    r.wait_state(r.queue_sms("through the noise"), "sent", timeout=10)
    r.emulator.inject_sms("+15550008888", "still listening")
    wait_for(lambda: r.inbound(), 10)


def test_a_truncated_or_undecodable_pdu_is_logged_and_dropped(rig):
    r = rig()
    r.start_worker()
    r.emulator.inject_pdu("07911326040000F0040B911346610089F6000020806291731408")  # cut short
    r.emulator.inject_sms("+15550009999", "after the broken one")
    msgs = wait_for(lambda: r.inbound(), 10)
    assert [m.message for m in msgs] == ["after the broken one"]
    wait_for(lambda: r.emulator.stored_messages() == [], 5)


def test_a_full_sim_storage_is_emptied_and_new_messages_arrive(rig):
    r = rig(profile="huawei")
    r.start_worker()
    r.emulator.fill_storage()
    r.emulator.inject_sms("+15550001234", "room for me?")
    wait_for(lambda: any(m.message == "room for me?" for m in r.inbound()), 15)


def test_unplug_marks_it_offline_and_replug_resumes(rig):
    r = rig()
    r.start_worker()
    r.emulator.unplug()
    r.mqtt.wait(
        r.topics.state(r.modem_id),
        lambda p: not p["online"] and p.get("reason") in ("unplugged", "port_unavailable"),
        timeout=10,
    )
    with r.Session() as s:
        assert s.get(Modem, r.modem_id).online is False
    mid = r.queue_sms("queued while unplugged")
    holds_for(lambda: r.message(mid).status == "queued", 0.5, message="the message waits while unplugged")
    r.emulator.replug()
    r.wait_state(mid, "sent", timeout=15)
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p["online"] and p["ts"] > _last_offline(r), timeout=10)


def test_a_removed_sim_is_reported_and_nothing_is_sent(rig):
    r = rig()
    r.start_worker()
    r.emulator.remove_sim()
    state = r.mqtt.wait(
        r.topics.state(r.modem_id), lambda p: not p["online"] and p.get("reason") == "sim_missing", timeout=10
    )
    assert "SIM" in state["last_error"]
    mid = r.queue_sms("no SIM")
    holds_for(lambda: r.message(mid).status == "queued" and r.emulator.sent == [], 0.8, message="no send without a SIM")
    r.emulator.insert_sim()
    r.wait_state(mid, "sent", timeout=15)


def test_a_sim_asking_for_a_pin_is_unlocked_from_the_secret(rig):
    r = rig(emulator_kw={"pin": "4321"}, pin="4321")
    r.start_worker()
    r.wait_state(r.queue_sms("unlocked"), "sent", timeout=10)


def test_a_sim_asking_for_a_pin_without_one_configured_is_reported(rig):
    r = rig(emulator_kw={"pin": "4321"})
    import threading

    from smsgw_worker.worker import Worker

    w = Worker(r.settings, device=r.emulator.device)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    try:
        state = r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p.get("reason") == "pin_required", timeout=10)
        assert "MODEM_PIN" in state["last_error"]
    finally:
        w.stop()
        t.join(10)


def _last_offline(r: Rig) -> str:
    offline = [p["ts"] for p in r.mqtt.payloads(r.topics.state(r.modem_id)) if not p["online"]]
    return max(offline) if offline else ""


def test_sms_not_ready_past_init_is_reported_in_the_health_and_set_up_once_it_is_ready(rig):
    import dataclasses

    from smsgw_worker.emulator import PROFILES

    slow = dataclasses.replace(PROFILES["simcom"], sms_ready_seconds=4.0)
    r = rig(profile=slow, sms_ready_timeout=0.5)
    r.start_worker()
    state = r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p.get("online") and p.get("last_error"))
    assert "AT+CNMI" in state["last_error"] and "AT+CPMS" in state["last_error"]
    assert r.emulator._st.cnmi == [2, 1, 0, 0, 0]  # nothing set yet
    # Retried on refresh: once the SMS service is up, +CNMI is set and the error goes.
    wait_for(lambda: r.worker.modem.cnmi is not None and r.worker.last_error is None, 15)
    assert r.emulator._st.cnmi == [2, 1, 0, 2, 0]  # reports stored until read
    with r.Session() as s:
        assert s.get(Modem, r.modem_id).last_error is None
    r.emulator.inject_sms("+15550003131", "after sms ready")
    assert [m.message for m in wait_for(lambda: r.inbound(), 10)] == ["after sms ready"]
