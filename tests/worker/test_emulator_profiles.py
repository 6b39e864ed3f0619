"""Each vendor profile shows the quirks drivers meet on that family of modems."""

import pytest

from smsgw_worker.emulator import Emulator
from smsgw_worker.pdu import StatusReport, decode, encode_submit

from .conftest import AtPort


@pytest.fixture
def make(tmp_path):
    started = []

    def make(profile, **kw):
        emu = Emulator(profile, link=str(tmp_path / f"tty{profile}{len(started)}"), **kw).start()
        started.append(emu)
        return emu, AtPort(emu.device)

    yield make
    for emu in started:
        emu.stop()


def test_huawei_says_command_not_support_and_answers_iccid_with_its_own_command(make):
    emu, at = make("huawei")
    # ^BOOT comes before anyone opens the port (pyserial flushes it on open).
    at.read_until(lambda t: "^SIMST:1" in t)
    at.cmd("ATE0")
    assert at.cmd("AT+CCID") == ["COMMAND NOT SUPPORT"]
    assert at.cmd("AT^ICCID?") == [f"^ICCID: {emu.iccid}", "OK"]
    assert at.cmd("AT^CURC=0") == ["OK"]
    assert at.cmd("AT+CGMI") == ["huawei", "OK"]


def test_huawei_prints_rssi_noise_on_its_own(make):
    emu, at = make("huawei")
    emu.set_signal(17)
    assert "^RSSI:17" in at.read_until(lambda t: "^RSSI:" in t, timeout=3)


def test_simcom_boots_with_rdy_and_sms_ready_and_the_sim_is_busy_at_first(make):
    emu, at = make("simcom")
    at.cmd("AT+CMEE=1")
    assert at.cmd("AT+CPIN?")[-1] == "+CME ERROR: 14"
    boot = at.read_until(lambda t: "SMS Ready" in t)
    assert "+CPIN: READY" in boot and "Call Ready" in boot
    assert at.cmd("AT+CPIN?")[-2:] == ["+CPIN: READY", "OK"]
    # SIM800 prints the ICCID bare, without a +CCID: prefix.
    assert at.cmd("AT+CCID")[-2:] == [emu.iccid, "OK"]


def test_quectel_uses_qccid_and_stores_status_reports_in_sr(make):
    emu, at = make("quectel", report_delay=0.05)
    at.read_until(lambda t: "PB DONE" in t)
    at.cmd("ATE0")
    at.cmd("AT+CMEE=1")
    assert at.cmd("AT+QCCID") == [f"+QCCID: {emu.iccid}", "OK"]
    assert at.cmd("AT+CCID") == ["ERROR"]
    at.cmd("AT+CNMI=2,1,0,2,0")
    [part] = encode_submit("+15550001111", "hi")
    at.write(f"AT+CMGS={part.tpdu_length}\r".encode())
    at.expect("> ")
    at.write(part.hex.encode() + b"\x1a")
    out = at.read_until(lambda t: "+CDSI:" in t)
    assert '+CDSI: "SR",0' in out
    at.cmd('AT+CPMS="SR"')
    assert isinstance(decode(at.cmd("AT+CMGR=0")[1]), StatusReport)


def test_a_pin_is_asked_for_and_checked(make):
    _emu, at = make("generic", pin="1234")
    at.cmd("ATE0")
    at.cmd("AT+CMEE=1")
    assert at.cmd("AT+CPIN?") == ["+CPIN: SIM PIN", "OK"]
    assert at.cmd("AT+CMGL=4") == ["+CMS ERROR: 311"]
    assert at.cmd('AT+CPIN="0000"') == ["+CME ERROR: 16"]
    assert at.cmd('AT+CPIN="1234"') == ["OK"]
    assert at.cmd("AT+CPIN?") == ["+CPIN: READY", "OK"]


def test_messages_injected_while_the_sim_is_busy_arrive_once_it_is_ready(make):
    emu, at = make("simcom")
    assert emu.inject_sms("+15550002222", "early") == []
    out = at.read_until(lambda t: "+CMTI:" in t, timeout=3)
    assert out.index("SMS Ready") < out.index("+CMTI:")
