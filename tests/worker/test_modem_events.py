"""What real modems say on their own mid-session, and what the worker does:
registration lost and found, a full SIM, no SMSC, incoming calls, and a
module that reboots by itself."""

from __future__ import annotations

import json
import time

from sqlalchemy import select

from smsgw_common.models import Log, MessageEvent

from .worker_harness import wait_for

NO_RESCAN = {"refresh_interval": 60.0}


def test_losing_registration_pauses_sending_and_shows_searching_then_denied(rig):
    r = rig()
    r.start_worker()
    r.emulator.set_registration(2)
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p.get("registration") == "searching")
    message_id = r.queue_sms("waits for the network")
    time.sleep(1.5)  # several claim intervals and retry delays: no attempt may be spent
    held = r.message(message_id)
    assert (held.status, held.attempts) == ("queued", 0)
    r.emulator.set_registration(3)
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p.get("registration") == "denied")
    r.emulator.set_registration(1)
    r.wait_state(message_id, "sent", timeout=10)
    assert r.message(message_id).attempts == 1


def test_a_send_refused_for_a_full_store_drains_the_store_and_goes_out(rig):
    r = rig(**NO_RESCAN)
    r.emulator.set_quirk("send_needs_room")
    r.start_worker()
    r.emulator.fill_storage()
    message_id = r.queue_sms("after the drain")
    r.wait_state(message_id, "sent", timeout=10)
    assert r.emulator.stored_messages() == []


def test_a_sim_without_smsc_holds_the_queue_and_says_how_to_fix_it(rig):
    r = rig(refresh_interval=0.3)
    r.emulator.set_smsc("")
    r.start_worker()
    state = r.mqtt.wait(r.topics.state(r.modem_id), lambda p: "AT+CSCA" in (p.get("last_error") or ""))
    assert "330" in state["last_error"]
    message_id = r.queue_sms("needs an SMSC")
    time.sleep(1.0)
    assert (r.message(message_id).status, r.message(message_id).attempts) == ("queued", 0)
    r.emulator.set_smsc("+15550000000")  # what AT+CSCA="+15550000000" does
    r.wait_state(message_id, "sent", timeout=10)
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p["online"] and "AT+CSCA" not in (p.get("last_error") or ""))


def test_an_smsc_refusal_met_while_sending_is_reported_and_the_message_kept(rig):
    r = rig(refresh_interval=0.3)
    r.start_worker()
    r.emulator.fail_next_sends(1, cms_code=330)
    message_id = r.queue_sms("the network forgot the SMSC")
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: "AT+CSCA" in (p.get("last_error") or ""))
    # The SIM has an SMSC (the refusal was the network's): the next refresh sees it and sends.
    r.wait_state(message_id, "sent", timeout=10)


def _missed_calls(r) -> list[dict]:
    with r.Session() as s:
        rows = s.scalars(select(Log.details).where(Log.action == "missed_call").order_by(Log.id)).all()
    return [d for d in (json.loads(x) for x in rows) if d["modem_id"] == r.modem_id]


def test_an_incoming_call_is_rejected_and_recorded_as_missed_with_the_callers_number(rig):
    r = rig()
    r.start_worker()
    # A real network repeats RING every few seconds; one second apart still
    # leaves "rejected at the first ring" a claim a loaded CI machine can keep.
    r.emulator.incoming_call("+4915112345678", rings=5, interval=1.0)
    calls = wait_for(lambda: _missed_calls(r), 10)
    assert [(c["number"], c["rejected"]) for c in calls] == [("+4915112345678", True)]
    wait_for(lambda: r.emulator.calls[-1]["outcome"] == "rejected", 5)
    assert r.emulator.calls[-1]["rings"] == 1


def test_with_rejection_off_a_call_rings_out_and_is_recorded_once(rig):
    r = rig(reject_calls=False)
    r.start_worker()
    r.emulator.incoming_call("+4915112345678", rings=4, interval=0.2)
    wait_for(lambda: r.emulator.calls[-1]["outcome"] == "missed", 5)
    time.sleep(0.3)
    assert [(c["number"], c["rejected"]) for c in _missed_calls(r)] == [("+4915112345678", False)]


def test_a_modem_that_reboots_on_its_own_is_set_up_again_and_loses_no_work(rig):
    r = rig(profile="simcom", **NO_RESCAN)
    r.start_worker()
    cnmi_before = sum(c.startswith("AT+CNMI=") for c in list(r.emulator.commands))
    r.emulator.reboot()
    queued = r.queue_sms("queued while it boots")
    wait_for(lambda: sum(c.startswith("AT+CNMI=") for c in list(r.emulator.commands)) > cnmi_before, 10)
    msg = r.wait_state(queued, "delivered", timeout=15)  # status reports switched back on
    assert msg.attempts == 1  # a refusal from the booting module spends none
    r.emulator.inject_sms("+15550007777", "after the reboot")
    assert [m.message for m in wait_for(lambda: r.inbound(), 10)] == ["after the reboot"]


def test_a_modem_that_restarts_at_the_send_is_set_up_again_before_it_and_no_attempt_is_spent(rig):
    # The brown-out of a weak USB supply at the transmit burst: AT+CMGS gets
    # boot lines instead of a prompt, then a refusal from the booting module.
    r = rig(profile="simcom", **NO_RESCAN)
    r.start_worker()
    r.emulator.reboot_on_next_send()
    queued = r.queue_sms("sent after the restart")
    msg = r.wait_state(queued, "delivered", timeout=20)  # status reports switched back on first
    assert msg.attempts == 1
    assert len(r.emulator.sent) == 1
    commands = list(r.emulator.commands)
    sends = [i for i, c in enumerate(commands) if c.startswith("AT+CMGS=")]
    assert len(sends) >= 2, commands
    assert any(c.startswith("AT+CNMI=") for c in commands[sends[0] : sends[-1]]), "resent before the set-up"
    with r.Session() as s:
        details = s.scalars(
            select(MessageEvent.detail).where(MessageEvent.message_id == queued, MessageEvent.state == "queued")
        ).all()
    assert any("the modem restarted during the send" in (d or "") for d in details), details
