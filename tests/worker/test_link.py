"""The serial link against a scripted modem on a real pty."""

from __future__ import annotations

import os
import queue
import time

import pytest
from support.waits import wait_until

from smsgw_worker.errors import CmeError, CmsError, ModemTimeout, PortGone
from smsgw_worker.serial_link import SerialLink

from .scripted_modem import ScriptedModem

OK = b"\r\nOK\r\n"


@pytest.fixture
def rig():
    made = []

    def make(table, **kw):
        modem = ScriptedModem(table)
        urcs: queue.Queue = queue.Queue()
        fatal: queue.Queue = queue.Queue()
        link = SerialLink(
            modem.device, on_unsolicited=lambda line, pdu: urcs.put((line, pdu)), on_fatal=fatal.put, **kw
        )
        link.open()
        made.append((modem, link))
        return modem, link, urcs, fatal

    yield make
    for modem, link in made:
        link.close()
        modem.close()


def test_it_returns_the_information_lines_without_the_final_ok(rig):
    modem, link, _, _ = rig({"AT+CSQ": b"\r\n+CSQ: 21,99\r\n" + OK})
    assert link.command("AT+CSQ") == ["+CSQ: 21,99"]
    assert bytes(modem.written) == b"AT+CSQ\r"


def test_it_drops_the_echo_of_its_own_command(rig):
    _, link, _, _ = rig({"AT+CGMI": b"AT+CGMI\r\r\nACME\r\n" + OK})
    assert link.command("AT+CGMI") == ["ACME"]


def test_it_routes_a_cmti_inside_a_cmgs_exchange_to_the_unsolicited_handler(rig):
    def after_pdu(_):
        return b'\r\n+CMTI: "SM",3\r\n\r\n+CMGS: 17\r\n' + OK

    modem, link, urcs, _ = rig({"AT+CMGS=*": b"\r\n> ", "PDU:0011AABB": after_pdu})
    lines = link.command_with_data("AT+CMGS=3", "0011AABB", timeout=5)
    assert lines == ["+CMGS: 17"]
    assert urcs.get(timeout=2) == ('+CMTI: "SM",3', None)
    # The exact bytes a real modem expects: command, CR, then PDU and Ctrl-Z.
    assert bytes(modem.written) == b"AT+CMGS=3\r0011AABB\x1a"


def test_it_hands_a_cmt_over_together_with_its_pdu_line(rig):
    modem, _link, urcs, _ = rig({})
    modem.push(b"\r\n+CMT: ,24\r\n07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07\r\n")
    line, pdu = urcs.get(timeout=2)
    assert line == "+CMT: ,24"
    assert pdu.startswith("07911326040000F0")


def test_it_hands_over_a_truncated_cmt_without_a_pdu(rig):
    modem, _link, urcs, _ = rig({})
    modem.push(b"\r\n+CMT: ,24\r\n\r\nRING\r\n")
    assert urcs.get(timeout=2) == ("+CMT: ,24", None)
    assert urcs.get(timeout=2) == ("RING", None)


def test_it_raises_cms_errors_with_the_modem_code(rig):
    _, link, _, _ = rig({"AT+CMGS=*": b"\r\n+CMS ERROR: 304\r\n"})
    with pytest.raises(CmsError) as err:
        link.command_with_data("AT+CMGS=3", "00", timeout=2)
    assert err.value.code == 304
    assert "invalid PDU mode parameter" in str(err.value)


def test_it_raises_cme_errors_with_the_modem_code(rig):
    _, link, _, _ = rig({"AT+CPIN?": b"\r\n+CME ERROR: 10\r\n"})
    with pytest.raises(CmeError) as err:
        link.command("AT+CPIN?")
    assert err.value.code == 10


def test_it_times_out_a_command_that_gets_no_answer_and_recovers(rig):
    _, link, _, _ = rig({"AT": OK, "AT+SLOW": b""})
    started = time.monotonic()
    with pytest.raises(ModemTimeout) as err:
        link.command("AT+SLOW", timeout=0.3)
    assert 0.25 < time.monotonic() - started < 2
    assert err.value.submitted is False
    assert link.command("AT") == []


def test_a_send_that_times_out_after_the_pdu_says_it_may_have_left(rig):
    _, link, _, _ = rig({"AT+CMGS=*": b"\r\n> ", "PDU:00": b""})
    with pytest.raises(ModemTimeout) as err:
        link.command_with_data("AT+CMGS=1", "00", timeout=0.3)
    assert err.value.submitted is True


def test_a_send_without_a_prompt_is_cancelled_and_says_nothing_left(rig):
    modem, link, _, _ = rig({"AT+CMGS=*": b""})
    with pytest.raises(ModemTimeout) as err:
        link.command_with_data("AT+CMGS=1", "00", timeout=5, prompt_timeout=0.3)
    assert err.value.submitted is False
    # ESC cancels the half-entered send.
    wait_until(lambda: bytes(modem.written).endswith(b"\x1b"), 2, 0.01, lambda: f"ESC; wrote {bytes(modem.written)!r}")


def test_it_survives_garbage_on_the_line(rig):
    modem, link, urcs, _ = rig({"AT": OK})
    modem.push(b"\xff\xfe\x00\x13garbage\x80\r\n^RSSI: 12\r\n")
    assert link.command("AT") == []
    seen = [urcs.get(timeout=2), urcs.get(timeout=2)]
    assert ("^RSSI: 12", None) in seen


def test_it_signals_a_vanished_port_through_the_fatal_callback(rig):
    modem, link, _, fatal = rig({"AT": OK})
    os.close(modem.master)
    os.close(modem._slave)
    exc = fatal.get(timeout=3)
    assert isinstance(exc, PortGone)
    with pytest.raises(PortGone):
        link.command("AT")


def test_it_refuses_to_open_a_missing_device():
    link = SerialLink("/dev/does-not-exist-smsgw")
    with pytest.raises(PortGone, match="cannot open"):
        link.open()


def test_it_sees_the_prompt_even_when_an_unsolicited_line_follows_it_at_once(rig):
    _modem, link, urcs, _ = rig(
        {
            "AT+CMGS=*": b"\r\n> \r\n+CDS: 25\r\n"
            b"07915155000000F006000B915155001011F1621152915055006211529150550000\r\n",
            "PDU:00": b"\r\n+CMGS: 3\r\n" + OK,
        }
    )
    assert link.command_with_data("AT+CMGS=1", "00", timeout=2, prompt_timeout=1) == ["+CMGS: 3"]
    line, pdu = urcs.get(timeout=2)
    assert line == "+CDS: 25" and pdu.startswith("07915155")
