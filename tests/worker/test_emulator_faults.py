"""The emulator's modem faults behave as docs/modems.md ("Modem faults")
says real modems do: a stall that answers late, one that loses everything,
a stall with a PDU in, a replug under another name."""

from __future__ import annotations

import os
import time

import pytest
import requests

from smsgw_worker.emulator.control import serve
from smsgw_worker.pdu import encode_submit


def _submit(at, text: str) -> None:
    [part] = encode_submit("+15550001111", text)
    at.write(f"AT+CMGS={part.tpdu_length}\r".encode())
    at.expect("> ")
    at.write(part.hex.encode() + b"\x1a")


def test_a_late_stall_holds_answers_and_queued_commands_and_gives_them_in_order_when_it_ends(at, emulator):
    emulator.hang(True, mode="late")
    at.write(b"AT+CGSN\r")
    assert at.drain(0.3) == ""  # nothing while it stalls
    emulator.hang(False)
    assert at.lines(at.read_until(lambda t: "OK" in t)) == [emulator.imei, "OK"]


def test_a_swallowing_stall_loses_what_was_written_during_it(at, emulator):
    emulator.hang(True, mode="swallow")
    at.write(b"AT+CGSN\r")
    time.sleep(0.3)  # the emulator reads its pty every 50 ms at most: let it take the bytes while stalled
    emulator.hang(False)
    assert at.drain(0.3) == ""
    assert at.cmd("AT") == ["OK"]


def test_a_stall_at_the_next_pdu_lets_the_sms_leave_and_answers_its_cmgs_when_it_ends(at, emulator):
    emulator.hang_on_next_send(0.6, mode="late")
    _submit(at, "in flight")
    assert emulator.wait_sent(1)[0]["text"] == "in flight"  # the radio side carried on
    assert "+CMGS" not in at.drain(0.3)
    assert "+CMGS:" in at.read_until(lambda t: "OK" in t, timeout=3)
    [start, end] = [f for f in emulator.fault_log if f["fault"] == "hang"]
    assert (start["event"], end["event"]) == ("start", "end") and 0.5 <= end["at"] - start["at"] < 3


def test_a_swallowed_answer_never_comes_though_the_sms_left(at, emulator):
    emulator.hang_on_next_send(0.4, mode="swallow")
    _submit(at, "answer lost")
    emulator.wait_sent(1)
    time.sleep(0.6)
    assert "+CMGS" not in at.drain(0.3)
    assert at.cmd("AT") == ["OK"]


def test_a_modem_replugged_under_another_name_is_there_and_the_old_name_gone(emulator, tmp_path):
    old = emulator.device
    emulator.unplug()
    emulator.replug(str(tmp_path / "ttyUSB1"))
    assert not os.path.exists(old)
    assert emulator.device == str(tmp_path / "ttyUSB1") and os.path.exists(emulator.device)
    assert [(f["fault"], f["event"]) for f in emulator.fault_log] == [("unplug", "start"), ("unplug", "end")]


@pytest.mark.parametrize(
    "path, body, error",
    [
        ("/replug", {"name": "../../etc/passwd"}, "bare file name"),
        ("/replug", {"name": ".."}, "bare file name"),
        ("/hang", {"mode": "sideways"}, "'mode' must be"),
        ("/hang", {"next_send": True}, "'next_send' needs 'seconds'"),
        ("/hang", {"seconds": 0}, "'seconds' must be"),
    ],
)
def test_the_control_server_refuses_bad_fault_requests_and_changes_nothing(emulator, path, body, error):
    server = serve(emulator, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        device = emulator.device
        r = requests.post(base + path, json=body, timeout=5)
        assert r.status_code == 400 and error in r.json()["error"]
        assert emulator.device == device and os.path.exists(device)
        assert emulator.fault_log == []
    finally:
        server.shutdown()


def test_the_control_server_replugs_under_a_name_beside_the_link_and_hangs_on_the_next_send(emulator):
    server = serve(emulator, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        r = requests.post(base + "/replug", json={"name": "ttyUSB7"}, timeout=5)
        assert r.status_code == 200
        assert r.json()["device"] == os.path.join(os.path.dirname(emulator.device), "ttyUSB7")
        r = requests.post(base + "/hang", json={"next_send": True, "seconds": 2, "mode": "late"}, timeout=5)
        assert r.json() == {"hung": False, "on_next_send": 2.0, "mode": "late"}
        assert emulator._hang_on_submit == (2.0, "late")
    finally:
        server.shutdown()


def test_a_restart_at_the_next_send_gives_boot_lines_and_a_bare_error_instead_of_the_prompt(at, emulator):
    server = serve(emulator, "127.0.0.1", 0)
    try:
        r = requests.post(f"http://127.0.0.1:{server.server_address[1]}/reboot", json={"next_send": True}, timeout=5)
        assert r.json() == {"rebooted": False, "on_next_send": True}
    finally:
        server.shutdown()
    assert at.cmd("AT+CMEE=1") == ["OK"]
    [part] = encode_submit("+15550001111", "never leaves")
    at.write(f"AT+CMGS={part.tpdu_length}\r".encode())
    said = at.read_until(lambda t: "ERROR" in t)
    assert "> " not in said
    lines = at.lines(said)
    assert set(emulator.profile.boot_lines) <= set(lines)
    assert lines[-1] == "ERROR"  # AT+CMEE went back to 0 with the restart
    assert emulator.sent == []
    _submit(at, "the next one is prompted")  # only the next send
    assert emulator.wait_sent(1)[0]["text"] == "the next one is prompted"
