"""The modem emulator answers like a modem, through a real pseudo-terminal."""

import os
import re
import time

import pytest
import serial
from support.waits import wait_until

from smsgw_worker.emulator import Emulator
from smsgw_worker.pdu import Deliver, StatusReport, decode, encode_submit

from .conftest import AtPort


def send(at: AtPort, number: str, text: str, **kw) -> list[list[str]]:
    replies = []
    for part in encode_submit(number, text, **kw):
        at.write(f"AT+CMGS={part.tpdu_length}\r".encode())
        at.expect("\r\n> ")
        at.write(part.hex.encode() + b"\x1a")
        text_out = at.read_until(lambda t: "OK\r\n" in t or "ERROR" in t)
        replies.append(at.lines(text_out))
    return replies


# --- basics -------------------------------------------------------------------


def test_it_echoes_until_ate0(emulator):
    port = AtPort(emulator.device)
    try:
        port.write(b"AT\r")
        assert port.expect("OK\r\n") == "AT\r\r\nOK\r\n"
        port.write(b"ATE0\r")
        port.expect("OK\r\n")
        port.write(b"AT\r")
        assert port.expect("OK\r\n") == "\r\nOK\r\n"
    finally:
        port.close()


def test_cmee_selects_plain_numeric_or_verbose_errors(emulator):
    emulator.remove_sim()
    port = AtPort(emulator.device)
    try:
        port.cmd("ATE0")
        port.drain()
        assert port.cmd("AT+CIMI")[-1] == "ERROR"
        port.cmd("AT+CMEE=1")
        assert port.cmd("AT+CIMI")[-1] == "+CME ERROR: 10"
        port.cmd("AT+CMEE=2")
        assert port.cmd("AT+CIMI")[-1] == "+CME ERROR: SIM not inserted"
    finally:
        port.close()


def test_it_answers_identity_signal_registration_and_operator(at, emulator):
    assert at.cmd("AT+CGMI") == ["Emulated", "OK"]
    assert at.cmd("AT+CGMM") == ["GSM Modem", "OK"]
    assert at.cmd("AT+CGSN") == [emulator.imei, "OK"]
    assert at.cmd("AT+CIMI") == [emulator.imsi, "OK"]
    assert at.cmd("AT+CCID") == [f"+CCID: {emulator.iccid}", "OK"]
    assert at.cmd("AT+CNUM") == ['+CNUM: "","+15550000001",145', "OK"]
    assert at.cmd("AT+CSQ") == ["+CSQ: 20,99", "OK"]
    assert at.cmd("AT+CREG?") == ["+CREG: 0,1", "OK"]
    assert at.cmd("AT+COPS?") == ['+COPS: 0,0,"Emu Mobile",7', "OK"]
    assert at.cmd("AT+CPIN?") == ["+CPIN: READY", "OK"]


def test_several_commands_on_one_line_run_in_order(at):
    assert at.cmd("AT+CMGF=0;+CGMI;E0") == ["Emulated", "OK"]


def test_unknown_commands_get_error_and_text_mode_is_refused(at):
    assert at.cmd("AT+NOSUCH") == ["ERROR"]
    assert at.cmd("AT+CMGF=1") == ["+CMS ERROR: 303"]
    assert at.cmd("AT+CMGF=?") == ["+CMGF: (0)", "OK"]


def test_registration_changes_are_announced_when_asked(at, emulator):
    at.cmd("AT+CREG=1")
    emulator.set_registration(0)
    assert "+CREG: 0" in at.expect("+CREG: 0")
    emulator.set_registration(1)
    at.expect("+CREG: 1")


def test_ussd_answers_after_ok(at):
    assert at.cmd('AT+CUSD=1,"*100#",15') == ["OK"]
    assert '+CUSD: 0,"Your balance is 12.34",15' in at.expect("+CUSD:")


# --- sending ----------------------------------------------------------------------


def test_it_prompts_without_line_end_and_sends_on_ctrl_z(at, emulator):
    [part] = encode_submit("+15550001111", "Hello")
    at.write(f"AT+CMGS={part.tpdu_length}\r".encode())
    assert at.expect("> ") == "\r\n> "
    at.write(part.hex.encode() + b"\x1a")
    assert at.lines(at.expect("OK\r\n")) == ["+CMGS: 0", "OK"]
    [rec] = emulator.wait_sent(1)
    assert rec["number"] == "+15550001111" and rec["text"] == "Hello"
    assert rec["encoding"] == "GSM-7" and rec["concat"] is None and rec["mr"] == 0
    assert rec["pdu"] == part.hex and rec["status_report_requested"] is True


def test_escape_cancels_a_send(at, emulator):
    [part] = encode_submit("+15550001111", "never")
    at.write(f"AT+CMGS={part.tpdu_length}\r".encode())
    at.expect("> ")
    at.write(part.hex.encode() + b"\x1b")
    assert at.lines(at.expect("OK\r\n")) == ["OK"]
    assert emulator.sent == []


def test_it_records_multipart_and_ucs2_exactly(at, emulator):
    text = "Grüße 😀 " * 20
    replies = send(at, "+15550001111", text, concat_ref=42)
    assert [r[0] for r in replies] == ["+CMGS: 0", "+CMGS: 1", "+CMGS: 2"]
    recs = emulator.wait_sent(3)
    assert "".join(r["text"] for r in recs) == text
    assert [r["concat"] for r in recs] == [(42, 3, 1), (42, 3, 2), (42, 3, 3)]
    assert {r["encoding"] for r in recs} == {"UCS-2"}


def test_message_references_wrap_from_255_to_0(at, emulator):
    emulator.set_next_mr(255)
    replies = send(at, "+15550001111", "a") + send(at, "+15550001111", "b")
    assert [r[0] for r in replies] == ["+CMGS: 255", "+CMGS: 0"]


def test_a_length_that_does_not_match_the_pdu_is_refused(at, emulator):
    [part] = encode_submit("+15550001111", "Hello")
    at.write(f"AT+CMGS={part.tpdu_length + 1}\r".encode())
    at.expect("> ")
    at.write(part.hex.encode() + b"\x1a")
    assert at.lines(at.expect("ERROR"))[-1] == "+CMS ERROR: 304"
    at.write(b"AT+CMGS=10\r")
    at.expect("> ")
    at.write(b"0011ZZ\x1a")
    assert at.lines(at.expect("ERROR"))[-1] == "+CMS ERROR: 304"
    assert emulator.sent == []


def test_failed_sends_return_the_chosen_cms_code_then_recover(at, emulator):
    emulator.fail_next_sends(2, cms_code=38)
    replies = [send(at, "+15550001111", "x")[0] for _ in range(3)]
    assert [r[-1] for r in replies] == ["+CMS ERROR: 38", "+CMS ERROR: 38", "OK"]
    assert len(emulator.sent) == 1


def test_a_failure_can_wait_for_sends_that_go_through_first(at, emulator):
    emulator.fail_next_sends(1, cms_code=500, after=1)
    replies = [send(at, "+15550001111", "x")[0] for _ in range(3)]
    assert [r[-1] for r in replies] == ["OK", "+CMS ERROR: 500", "OK"]
    assert len(emulator.sent) == 2


def test_a_send_can_leave_without_its_reference_reaching_the_te(at, emulator):
    emulator.lose_next_references(2, "OK")
    emulator.lose_next_references(1, "ERROR")
    replies = [send(at, "+15550001111", "x")[0] for _ in range(4)]
    assert list(replies[:3]) == [["OK"], ["OK"], ["ERROR"]]
    assert replies[3][-1] == "OK" and replies[3][0].startswith("+CMGS:")
    assert len(emulator.sent) == 4  # every one of them left


def test_send_latency_delays_the_answer_and_urcs_can_come_in_between(at, emulator):
    emulator.set_send_latency(0.4)
    [part] = encode_submit("+15550001111", "slow")
    at.write(f"AT+CMGS={part.tpdu_length}\r".encode())
    at.expect("> ")
    started = time.monotonic()
    at.write(part.hex.encode() + b"\x1a")
    time.sleep(0.1)  # into the send's latency: the URC must come in between (the case under test)
    emulator.inject_sms("+15552223333", "meanwhile")
    out = at.expect("+CMGS:")
    assert time.monotonic() - started >= 0.35
    assert out.index("+CMTI:") < out.index("+CMGS:")


def test_a_status_report_follows_as_cds_when_routed_directly(at, emulator):
    at.cmd("AT+CNMI=2,1,0,1,0")
    [reply] = send(at, "+15550001111", "report me")
    mr = int(reply[0].split(":")[1])
    out = at.read_until(lambda t: re.search(r"\+CDS: \d+\r\n[0-9A-F]+\r\n", t))
    report = decode(re.search(r"\+CDS: \d+\r\n([0-9A-F]+)\r\n", out).group(1))
    assert isinstance(report, StatusReport)
    assert report.reference == mr and report.recipient == "+15550001111" and report.delivered


def test_a_stored_status_report_is_announced_with_cdsi_and_readable(at, emulator):
    emulator.set_report_status(0x41)
    at.cmd("AT+CNMI=2,1,0,2,0")
    send(at, "+15550001111", "report me")
    out = at.expect("+CDSI:")
    index = int(out.split("+CDSI:")[1].split(",")[1])
    lines = at.cmd(f"AT+CMGR={index}")
    report = decode(lines[1])
    assert report.status == 0x41 and not report.delivered and report.final


def test_no_status_report_is_made_when_none_was_requested(at, emulator):
    at.cmd("AT+CNMI=2,1,0,1,0")
    send(at, "+15550001111", "quiet", request_status_report=False)
    assert "+CDS" not in at.drain(0.4)
    assert emulator.reports == []


# --- receiving ----------------------------------------------------------------------


def test_an_injected_sms_is_stored_announced_read_and_deleted(at, emulator):
    [index] = emulator.inject_sms("+15554445555", "Hi there")
    assert f'+CMTI: "SM",{index}' in at.expect("+CMTI:")
    lines = at.cmd(f"AT+CMGR={index}")
    assert lines[0].startswith("+CMGR: 0,,")
    d = decode(lines[1])
    assert isinstance(d, Deliver) and d.sender == "+15554445555" and d.text == "Hi there"
    assert at.cmd(f"AT+CMGR={index}")[0].startswith("+CMGR: 1,,")  # now read
    assert at.cmd(f"AT+CMGD={index}") == ["OK"]
    assert at.cmd(f"AT+CMGR={index}") == ["+CMS ERROR: 321"]
    assert emulator.stored_messages() == []


def test_multipart_parts_can_arrive_out_of_order(at, emulator):
    text = "part " * 70
    indexes = emulator.inject_sms("Bank", text, multipart_order=[3, 1, 2])
    assert len(indexes) == 3
    lines = at.cmd("AT+CMGL=4")
    pdus = [decode(lines[i + 1]) for i, line in enumerate(lines) if line.startswith("+CMGL:")]
    assert [p.concat.seq for p in pdus] == [3, 1, 2]
    assert {p.sender_type for p in pdus} == {"alphanumeric"}
    assert "".join(p.text for p in sorted(pdus, key=lambda p: p.concat.seq)) == text


def test_direct_delivery_waits_for_cnma_and_repeats_without_it(at, emulator):
    emulator.ack_timeout = 0.2
    at.cmd("AT+CSMS=1")
    at.cmd("AT+CNMI=2,2,0,0,0")
    assert emulator.inject_sms("+15556667777", "direct", store=False) == []
    first = at.expect("+CMT:")
    again = at.read_until(lambda t: "+CMT:" in t, timeout=1.0)
    assert "+CMT:" in first and "+CMT:" in again  # no +CNMA: delivered again
    assert at.cmd("AT+CNMA") == ["OK"]
    assert "+CMT:" not in at.drain(0.4)
    assert at.cmd("AT+CNMA") == ["+CMS ERROR: 340"]


def test_with_csms_1_the_next_direct_delivery_waits_for_the_ack_and_an_unacknowledged_report_is_stored(at, emulator):
    emulator.ack_timeout, emulator.ack_retries = 0.6, 1
    at.cmd("AT+CSMS=1")
    at.cmd("AT+CNMI=2,2,0,1,0")
    emulator.inject_sms("+15556667777", "first", store=False)
    emulator.inject_sms("+15556667778", "second", store=False)
    first = at.expect("+CMT:")
    assert first.count("+CMT:") == 1  # the second waits at the network (TS 27.005 3.4.1)
    reply = at.cmd("AT+CNMA")
    assert reply[0] == "OK"
    lines = at.lines("\n".join(reply) + at.drain(0.2))  # the held-back one follows at once
    assert decode(lines[lines.index(next(x for x in lines if x.startswith("+CMT:"))) + 1]).text == "second"
    assert at.cmd("AT+CNMA") == ["OK"]
    # A +CDS nobody acknowledges: repeated once, then the network stores it.
    emulator.inject_status_report(9, "+15550001111", 0)
    out = at.read_until(lambda t: "+CDSI:" in t, timeout=2)
    assert out.count("+CDS:") == 2 and '+CDSI: "SM",0' in out
    assert [(d["kind"], d["attempt"], d["outcome"]) for d in emulator.direct_deliveries] == [
        ("sms", 0, "acked"),
        ("sms", 0, "acked"),
        ("report", 0, "repeated"),
        ("report", 1, "stored"),
    ]


def test_the_direct_profile_powers_up_with_csms_1_and_cmt_routing(tmp_path):
    emu = Emulator("direct", link=str(tmp_path / "ttyDIRECT")).start()
    port = AtPort(emu.device)
    try:
        port.cmd("ATE0")
        assert port.cmd("AT+CSMS?")[0] == "+CSMS: 1,1,1,1"
        assert port.cmd("AT+CNMI?")[0] == "+CNMI: 2,2,0,1,0"
    finally:
        port.close()
        emu.stop()


def test_a_profile_can_refuse_sms_commands_for_a_while_after_sim_ready(tmp_path):
    import dataclasses

    from smsgw_worker.emulator import PROFILES

    emu = Emulator(
        dataclasses.replace(PROFILES["simcom"], sms_ready_seconds=0.6), link=str(tmp_path / "ttySLOW")
    ).start()
    port = AtPort(emu.device)
    try:
        boot = port.read_until(lambda t: "+CPIN: READY" in t, timeout=3)
        assert "SMS Ready" not in boot
        port.cmd("ATE0")
        port.cmd("AT+CMEE=1")
        assert port.cmd("AT+CNMI=2,1,0,1,0")[-1] == "+CMS ERROR: 302"
        assert port.cmd('AT+CPMS="SM","SM","SM"')[-1] == "+CMS ERROR: 302"
        port.read_until(lambda t: "SMS Ready" in t, timeout=3)
        assert port.cmd("AT+CNMI=2,1,0,1,0") == ["OK"]
    finally:
        port.close()
        emu.stop()


def test_a_pdu_can_be_injected_raw(at, emulator):
    # dreamfabric.com/sms SMS-DELIVER example ("hellohello").
    [index] = emulator.inject_pdu("07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37")
    at.expect("+CMTI:")
    assert decode(at.cmd(f"AT+CMGR={index}")[1]).text == "hellohello"


# --- faults ----------------------------------------------------------------------------


def test_a_hung_modem_answers_nothing_until_released(at, emulator):
    emulator.hang(True)
    with pytest.raises(TimeoutError):
        at.cmd("AT", timeout=0.3)
    emulator.hang(False)
    assert at.cmd("AT") == ["OK"]


def test_garbage_on_the_line_does_not_stop_answers(at, emulator):
    junk = emulator.emit_garbage(64)
    assert len(junk) == 64
    at.drain(0.1)
    assert at.cmd("AT") == ["OK"]


def test_full_storage_holds_new_sms_at_the_network_until_room_is_made(at, emulator):
    emulator.fill_storage()
    assert emulator.inject_sms("+15550009999", "waiting") == []
    assert "+CMTI" not in at.drain(0.2)
    assert at.cmd("AT+CPMS?")[0] == '+CPMS: "SM",30,30,"SM",30,30,"SM",30,30'
    # The +CMTI may come in the same read as the OK.
    out = "\n".join(at.cmd("AT+CMGD=0,4")) + at.drain(0.3)
    assert '+CMTI: "SM",0' in out


def test_writing_to_full_storage_is_refused_with_cms_322(at, emulator):
    [part] = encode_submit("+15550001111", "draft")
    at.write(f"AT+CMGW={part.tpdu_length}\r".encode())
    at.expect("> ")
    at.write(part.hex.encode() + b"\x1a")
    assert at.lines(at.expect("OK\r\n")) == ["+CMGW: 0", "OK"]
    assert decode(at.cmd("AT+CMGR=0")[1]).text == "draft"
    emulator.fill_storage()
    at.write(f"AT+CMGW={part.tpdu_length}\r".encode())
    at.expect("> ")
    at.write(part.hex.encode() + b"\x1a")
    assert at.lines(at.expect("ERROR"))[-1] == "+CMS ERROR: 322"


def test_unplug_makes_the_port_fail_and_the_link_vanish_and_replug_restores_it(emulator):
    port = AtPort(emulator.device)
    port.cmd("AT")
    emulator.unplug()
    assert not os.path.exists(emulator.device)

    def read_until_the_port_fails():
        for _ in range(20):
            port.port.read(1)

    with pytest.raises(serial.SerialException):
        read_until_the_port_fails()
    port.close()
    emulator.replug()
    port = AtPort(emulator.device)
    try:
        assert port.cmd("AT")[-1] == "OK"
        assert port.cmd("AT+CMEE?") == ["AT+CMEE?", "+CMEE: 0", "OK"]  # settings reset, echo on
    finally:
        port.close()


def test_a_removed_sim_gives_cme_10_and_cms_310(at, emulator):
    emulator.remove_sim()
    at.drain(0.05)
    assert at.cmd("AT+CPIN?") == ["+CME ERROR: 10"]
    assert at.cmd("AT+CMGL=4") == ["+CMS ERROR: 310"]


def test_a_reset_powers_the_modem_up_again(at, emulator):
    assert at.cmd("AT+CFUN=1,1") == ["OK"]
    # The generic profile prints nothing on boot: its fresh state (echo on) is the sign.
    wait_until(lambda: emulator._booted and emulator._st.echo, 2, 0.01, "the modem to reboot")
    at.drain(0.05)
    at.write(b"AT\r")
    assert at.expect("OK\r\n") == "AT\r\r\nOK\r\n"  # echo is back on


def test_wait_sent_gives_up_after_its_timeout(emulator):
    with pytest.raises(TimeoutError):
        emulator.wait_sent(1, timeout=0.1)


def test_bad_controls_are_refused_clearly(emulator):
    with pytest.raises(ValueError, match="profile"):
        Emulator("no-such-modem")
    with pytest.raises(ValueError, match="permutation"):
        emulator.inject_sms("+1555", "x" * 200, multipart_order=[1, 1])
