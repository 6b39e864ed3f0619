"""Behaviours recorded from real modems (Huawei K3715/E1752, Wavecom, Qualcomm
M6280, ZTE K3565-Z, Nokia N79), replayed by the emulator's profiles and
quirks (profiles.QUIRKS), and what the worker does about each."""

from __future__ import annotations

import time

from support.workers import WorkerThread

from smsgw_worker.emulator import Emulator
from smsgw_worker.probe import format_result, probe_port

from .worker_harness import wait_for

# Long enough that the periodic rescan can never be what finds a message.
NO_RESCAN = {"refresh_interval": 60.0}


def _start_without_waiting(r) -> None:
    """For a worker that must not come online: Rig.start_worker waits for it to."""
    r._running = WorkerThread(r.settings, r.emulator.device, f"worker-{r.modem_id}")
    r.worker = r._running.worker
    r._running.thread.start()


def _commands(emulator: Emulator, prefix: str) -> list[str]:
    return [c for c in list(emulator.commands) if c.upper().startswith(prefix.upper())]


def test_a_stored_sms_whose_cmgr_header_has_no_stat_is_received_at_once(rig):
    r = rig(**NO_RESCAN)
    r.emulator.set_quirk("cmgr_no_stat")
    r.start_worker()
    r.emulator.inject_sms("+491701234567", "no stat in the header")
    msgs = wait_for(lambda: r.inbound(), 5, lambda: f"nothing received; modem saw {r.emulator.commands[-6:]}")
    assert [(m.sender, m.message) for m in msgs] == [("+491701234567", "no stat in the header")]
    wait_for(lambda: r.emulator.stored_messages() == [], 5)


def test_a_modem_without_cpms_or_cnmi_comes_online_at_once_and_is_polled(rig):
    r = rig(profile="nokia", sms_ready_timeout=30.0, poll_interval=1.0, **NO_RESCAN)
    began = time.monotonic()
    r.start_worker()
    assert time.monotonic() - began < 5, "held offline waiting for AT+CPMS/AT+CNMI it will never take"
    state = r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p["online"])
    assert "MODEM_POLL_INTERVAL" in (state["last_error"] or "")
    r.emulator.inject_sms("+358401234567", "found by polling")
    injected = time.monotonic()
    msgs = wait_for(
        lambda: r.inbound(), 4, lambda: f"not polled; AT+CMGL sent {len(_commands(r.emulator, 'AT+CMGL'))}x"
    )
    assert time.monotonic() - injected < 1.0 + 1.5  # the poll interval, plus a loaded machine's slack
    assert [m.message for m in msgs] == ["found by polling"]
    wait_for(lambda: r.emulator.stored_messages() == [], 5)


def test_a_pin_locked_modem_that_refuses_even_bare_at_gets_its_pin_once(rig):
    r = rig(emulator_kw={"pin": "2468"}, pin="2468")
    r.emulator.set_quirk("pin_everywhere")
    r.start_worker()
    assert _commands(r.emulator, "AT+CPIN=") == ['AT+CPIN="2468"']
    r.emulator.inject_sms("+33612345678", "unlocked")
    assert [m.message for m in wait_for(lambda: r.inbound(), 10)] == ["unlocked"]


def test_a_wrong_pin_is_entered_once_reported_and_never_retried(rig):
    r = rig(emulator_kw={"pin": "2468"}, pin="1111")
    r.emulator.set_quirk("pin_everywhere")
    _start_without_waiting(r)
    state = r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p.get("reason") == "pin_rejected")
    assert "MODEM_PIN" in state["last_error"]
    time.sleep(2.0)  # ten reconnect intervals (reconnect_min 0.2 s): none may try the PIN again
    assert _commands(r.emulator, "AT+CPIN=") == ['AT+CPIN="1111"']
    assert r.emulator._pin_tries == 2


def test_a_sim_that_wants_its_puk_is_reported_and_no_pin_is_tried(rig):
    r = rig(emulator_kw={"pin": "2468"}, pin="2468")
    r.emulator.set_quirk("pin_everywhere")
    r.emulator._pin_tries = 0  # three wrong PINs before this worker ever ran
    _start_without_waiting(r)
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p.get("reason") == "puk_required")
    time.sleep(1.0)
    assert _commands(r.emulator, "AT+CPIN=") == []


def test_the_emulator_locks_the_sim_after_three_wrong_pins():
    with Emulator("generic", pin="2468") as emu:
        from .conftest import AtPort

        port = AtPort(emu.device)
        try:
            port.cmd("ATE0")
            port.cmd("AT+CMEE=1")
            for _ in range(3):
                assert port.cmd('AT+CPIN="0000"')[-1] == "+CME ERROR: 16"
            assert port.cmd("AT+CPIN?")[0] == "+CPIN: SIM PUK"
            assert port.cmd('AT+CPIN="2468"')[-1] == "+CME ERROR: 12"
        finally:
            port.close()


def test_probe_tells_a_pin_locked_modem_from_a_silent_port():
    with Emulator("generic", pin="2468") as emu:
        emu.set_quirk("pin_everywhere")
        time.sleep(0.1)
        result = probe_port(emu.device, timeout=1.0)
    assert result["answers_at"] is True and result["sim"] == "pin_required"
    assert "MODEM_PIN" in format_result(result)


def test_a_report_memory_the_modem_refuses_is_not_asked_for_again(rig):
    r = rig(refresh_interval=0.3)
    r.emulator.set_quirk("sr_refused")
    r.start_worker()
    time.sleep(2.5)  # some eight refreshes
    assert len(_commands(r.emulator, 'AT+CPMS="SR"')) <= 1
    r.emulator.inject_sms("+4915112345678", "still received")
    assert [m.message for m in wait_for(lambda: r.inbound(), 10)] == ["still received"]
