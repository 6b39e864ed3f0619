"""A modem that stops answering, vanishes or talks noise: the worker notices
in seconds, says the truth about the send in flight, and sends again within
seconds of the fault's end (issue 12; docs/modems.md, "Modem faults").

These tests run with the production timeouts and reconnect timers (REAL),
since the fast ones of worker_harness.FAST would hide exactly the waits at
stake. Bounds are loose (a loaded machine); bench/modem_faults.py measures
the real figures."""

from __future__ import annotations

import time

import pytest
from support.waits import holds_for

from .worker_harness import Rig, wait_for

# The worker's defaults for everything that decides how long a fault blocks.
REAL = {
    "command_timeout": 10.0,
    "send_timeout": 120.0,
    "reconnect_min": 1.0,
    "reconnect_max": 60.0,
    "retry_base": 30.0,
    "retry_max": 3600.0,
    "max_attempts": 5,
    "claim_interval": 2.0,
    "refresh_interval": 30.0,
    "sweep_interval": 30.0,
}
HANG = 15.0  # the fault of issue 12
RESUMED_WITHIN = 10.0  # seconds from the fault's end to the next PDU out (target 5 s; loose under load)


def wait_out(r: Rig, mid: int, timeout: float):
    """Until the message left: `sent`, or already `delivered` (reports come fast here)."""
    return wait_for(
        lambda: (m := r.message(mid)).status in ("sent", "delivered") and m,
        timeout,
        lambda: f"message {mid} is {r.message(mid).status}, wanted sent or delivered; {detail_of(r, mid)}",
    )


def fault_end(r: Rig, fault: str) -> float:
    ends = [f["at"] for f in r.emulator.fault_log if f["fault"] == fault and f["event"] == "end"]
    assert ends, f"the emulator logged no end of a {fault}"
    return ends[-1]


def sent_at(r: Rig, text: str) -> float:
    times = [x["at"] for x in r.emulator.sent if x["text"] == text]
    assert len(times) == 1, f"{text!r} transmitted {len(times)} times"
    return times[0]


def detail_of(r: Rig, mid: int) -> str:
    from sqlalchemy import select

    from smsgw_common.models import MessageEvent

    with r.Session() as s:
        rows = s.scalars(select(MessageEvent).where(MessageEvent.message_id == mid).order_by(MessageEvent.id))
        return " | ".join(f"{e.state}: {e.detail or ''}" for e in rows)


def test_a_send_answered_late_after_a_15_s_hang_is_sent_not_unknown(rig):
    # The firmware stalls with the PDU in; when it comes back it prints the
    # +CMGS it held. The message left and the gateway knows its reference.
    r = rig(**REAL)
    r.start_worker()
    r.emulator.hang_on_next_send(HANG, mode="late")
    mid = r.queue_sms("held answer")
    wait_out(r, mid, timeout=HANG + RESUMED_WITHIN)
    assert [p.reference for p in r.parts(mid)] == [r.emulator.sent[0]["mr"]]
    after = r.queue_sms("after the held answer")
    wait_out(r, after, timeout=RESUMED_WITHIN)
    assert sent_at(r, "after the held answer") - fault_end(r, "hang") < RESUMED_WITHIN


def test_a_send_whose_answer_a_15_s_hang_swallowed_is_unknown_at_once_and_sending_resumes(rig):
    # The modem took the PDU (the SMS left) and lost its answer: the gateway
    # cannot know the reference. It must say so as soon as the modem
    # answers again, not after the 120 s AT+CMGS limit, and go on sending.
    r = rig(**REAL)
    r.start_worker()
    r.emulator.hang_on_next_send(HANG, mode="swallow")
    doubt = r.queue_sms("answer lost")
    wait_for(lambda: r.emulator.sent, 5, "the PDU leaving")
    nxt = r.queue_sms("queued behind the hang")
    msg = r.wait_state(doubt, "unknown", timeout=HANG + RESUMED_WITHIN)
    assert "not resent" in detail_of(r, doubt)
    assert msg.error_text and "AT+CMGS" in msg.error_text
    wait_out(r, nxt, timeout=RESUMED_WITHIN)
    assert sent_at(r, "queued behind the hang") - fault_end(r, "hang") < RESUMED_WITHIN
    holds_for(lambda: len(r.emulator.sent) == 2, 1.0, message="the unknown one never resent")


@pytest.mark.parametrize("mode", ["swallow", "late"])
def test_a_modem_that_hangs_between_sends_sends_again_within_seconds_of_the_hang_ending(rig, mode):
    r = rig(**REAL)
    r.start_worker()
    wait_out(r, r.queue_sms("before"), timeout=10)
    r.emulator.hang_for(HANG, mode=mode)
    mid = r.queue_sms("during the hang")
    holds_for(lambda: r.emulator.sent[-1]["text"] == "before", 2.0, message="nothing leaves a hung modem")
    msg = wait_out(r, mid, timeout=HANG + RESUMED_WITHIN)
    assert sent_at(r, "during the hang") - fault_end(r, "hang") < RESUMED_WITHIN
    # The timed-out AT+CMGS wrote no PDU: it cost the message no attempt.
    assert msg.attempts == 1, detail_of(r, mid)


def test_a_modem_unplugged_for_15_s_sends_again_within_seconds_of_coming_back(rig):
    r = rig(**REAL)
    r.start_worker()
    wait_out(r, r.queue_sms("before"), timeout=10)
    r.emulator.unplug()
    mid = r.queue_sms("while unplugged")
    time.sleep(HANG)
    r.emulator.replug()
    wait_out(r, mid, timeout=RESUMED_WITHIN + 5)
    assert sent_at(r, "while unplugged") - fault_end(r, "unplug") < RESUMED_WITHIN


def test_a_modem_that_comes_back_on_another_device_path_is_found_by_its_glob(rig, tmp_path):
    # /dev/ttyUSB0 -> /dev/ttyUSB1 after a replug (hosts without
    # /dev/serial/by-id): MODEM_DEVICE may be a glob.
    r = rig(link=str(tmp_path / "ttyUSB0"), **REAL)
    w = r.start_worker(device=str(tmp_path / "ttyUSB*"))
    wait_out(r, r.queue_sms("on ttyUSB0"), timeout=10)
    r.emulator.unplug()
    mid = r.queue_sms("on ttyUSB1")
    time.sleep(3)
    r.emulator.replug(str(tmp_path / "ttyUSB1"))
    wait_out(r, mid, timeout=RESUMED_WITHIN + 5)
    assert sent_at(r, "on ttyUSB1") - fault_end(r, "unplug") < RESUMED_WITHIN
    assert w.context.device == str(tmp_path / "ttyUSB1")
    state = r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p["online"] and p["device_path"].endswith("ttyUSB1"))
    assert state["imei"] == r.emulator.imei


def test_a_glob_never_takes_another_modem_than_the_one_it_had(rig, tmp_path):
    # Two modems match the glob: after the first one is gone, the worker must
    # not send its SIM's messages through the other (its IMEI differs).
    r = rig(link=str(tmp_path / "ttyUSB0"), **REAL)
    other = rig(link=str(tmp_path / "ttyUSB9"), emulator_kw={"imei": "356938035643817"})
    w = r.start_worker(device=str(tmp_path / "ttyUSB[0-8]"))
    wait_out(r, r.queue_sms("first"), timeout=10)
    r.emulator.unplug()
    other.emulator.replug(str(tmp_path / "ttyUSB1"))
    mid = r.queue_sms("must wait for its own modem")
    holds_for(lambda: r.message(mid).status == "queued", 4.0, message="nothing sent through the other modem")
    assert other.emulator.sent == []
    # The dashboard's "cannot_open_port" problem matches this text (routes/modems.py PROBLEMS).
    r.mqtt.wait(
        r.topics.state(r.modem_id),
        lambda p: not p["online"] and "cannot open" in p["last_error"] and "holds another" in p["last_error"],
    )
    r.emulator.replug(str(tmp_path / "ttyUSB2"))
    wait_out(r, mid, timeout=RESUMED_WITHIN + 5)
    assert w.context.device == str(tmp_path / "ttyUSB2")


def test_garbage_on_the_line_during_sends_loses_nothing_and_sending_goes_on(rig):
    r = rig(**REAL, emulator_kw={"send_latency": 0.2})
    r.start_worker()
    texts = [f"through noise {n}" for n in range(6)]
    ids = [r.queue_sms(t) for t in texts]
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # bounded: about 30 bursts
        r.emulator.emit_garbage(48)
        time.sleep(0.1)
    for mid in ids:
        wait_out(r, mid, timeout=RESUMED_WITHIN + 5)
    assert sorted(x["text"] for x in r.emulator.sent) == sorted(texts)
    after = r.queue_sms("after the noise")
    wait_out(r, after, timeout=RESUMED_WITHIN)
    assert sent_at(r, "after the noise") - fault_end(r, "garbage") < RESUMED_WITHIN
