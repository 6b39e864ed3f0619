"""The AT layer: quirks from scripted modems, whole profiles from the emulator."""

from __future__ import annotations

import queue
import time
from datetime import UTC, datetime

import pytest

from smsgw_worker import pdu
from smsgw_worker.atmodem import ATModem, csq_to_dbm, decode_ussd_text
from smsgw_worker.emulator import Emulator
from smsgw_worker.errors import (
    PERMANENT,
    SIM_PROBLEM,
    TRANSIENT,
    UNCONFIRMED,
    CmeError,
    CmsError,
    CommandError,
    ModemTimeout,
    NotSupported,
    SimProblem,
    SubmitUnconfirmed,
    classify_send_error,
)

from .scripted_modem import ScriptedModem

OK = b"\r\nOK\r\n"
BASE = {
    "AT": OK,
    "ATE0": OK,
    "AT+CMEE=1": OK,
    "AT+CMGF=0": OK,
    'AT+CPMS="SM","SM","SM"': OK,
    "AT+CNMI=2,1,0,2,0": OK,
    "AT+CSMS?": b"\r\n+CSMS: 0,1,1,1\r\n" + OK,
    "AT+CPIN?": b"\r\n+CPIN: READY\r\n" + OK,
}


@pytest.fixture
def scripted():
    made = []

    def make(table: dict, **kw) -> tuple[ScriptedModem, ATModem]:
        fake = ScriptedModem({**BASE, **table})
        modem = ATModem(fake.device, command_timeout=1.0, **kw)
        modem.open()
        made.append((fake, modem))
        return fake, modem

    yield make
    for fake, modem in made:
        modem.close()
        fake.close()


@pytest.mark.parametrize("profile", ["generic", "huawei", "simcom", "quectel"])
def test_it_initialises_every_emulated_profile_and_reads_its_identity(profile):
    emu = Emulator(profile, iccid="8901260000000000099", own_number="+15550000042").start()
    events: queue.Queue = queue.Queue()
    modem = ATModem(emu.device, sim_busy_timeout=5, command_timeout=2, on_event=events.put)
    try:
        modem.open()
        modem.init()
        ident = modem.identity()
        assert ident.iccid == "8901260000000000099"
        assert ident.imei == "356938035643809" and ident.imsi == "310260000000001"
        assert ident.number == "+15550000042"
        assert ident.manufacturer and ident.model and ident.firmware
        assert modem.signal() == (20, -73)
        assert modem.registration() == "home" and modem.operator() == "Emu Mobile"
        assert modem.cnmi is not None
        seg = pdu.encode_submit("+15550001111", "hi")[0]
        assert modem.send_pdu(seg.hex, seg.tpdu_length) == 0
        assert emu.wait_sent(1)[0]["text"] == "hi"
    finally:
        modem.close()
        emu.stop()


def test_it_accepts_cpin_ready_without_a_final_ok(scripted):
    _, modem = scripted({"AT+CPIN?": b"\r\n+CPIN: READY\r\n"})
    modem.init()
    assert modem.cnmi == "2,1,0,2,0"


def test_it_waits_while_the_sim_is_busy_after_power_up(scripted):
    answers = iter([b"\r\n+CME ERROR: 14\r\n"] * 3)

    def cpin(_):
        return next(answers, b"\r\n+CPIN: READY\r\n" + OK)

    fake, modem = scripted({"AT+CPIN?": cpin}, sim_busy_timeout=5)
    modem.init()
    assert fake.commands.count("AT+CPIN?") == 4


def test_it_gives_up_on_a_sim_that_stays_busy(scripted):
    _, modem = scripted({"AT+CPIN?": b"\r\n+CME ERROR: 14\r\n"}, sim_busy_timeout=0.5)
    with pytest.raises(SimProblem) as err:
        modem.init()
    assert err.value.reason == "sim_busy"


def test_it_enters_the_pin_from_the_secret_once(scripted):
    state = {"unlocked": False}

    def cpin_query(_):
        return b"\r\n+CPIN: READY\r\n" + OK if state["unlocked"] else b"\r\n+CPIN: SIM PIN\r\n" + OK

    def cpin_enter(command):
        state["unlocked"] = command == 'AT+CPIN="1234"'
        return OK if state["unlocked"] else b"\r\n+CME ERROR: 16\r\n"

    fake, modem = scripted({"AT+CPIN?": cpin_query, "AT+CPIN=*": cpin_enter}, pin="1234")
    modem.init()
    assert fake.commands.count('AT+CPIN="1234"') == 1


def test_a_wrong_pin_is_never_retried(scripted):
    fake, modem = scripted(
        {"AT+CPIN?": b"\r\n+CPIN: SIM PIN\r\n" + OK, "AT+CPIN=*": b"\r\n+CME ERROR: 16\r\n"}, pin="9999"
    )
    with pytest.raises(SimProblem) as err:
        modem.init()
    # Its own reason, apart from pin_required: the worker then never opens the port again.
    assert err.value.reason == "pin_rejected"
    assert sum(c.startswith("AT+CPIN=") for c in fake.commands) == 1


def test_a_missing_pin_and_a_missing_sim_are_reported_as_sim_problems(scripted):
    _, modem = scripted({"AT+CPIN?": b"\r\n+CPIN: SIM PIN\r\n" + OK})
    with pytest.raises(SimProblem, match="MODEM_PIN"):
        modem.init()
    _, modem = scripted({"AT+CPIN?": b"\r\n+CME ERROR: 10\r\n"})
    with pytest.raises(SimProblem) as err:
        modem.init()
    assert err.value.reason == "sim_missing"


def test_it_tries_iccid_variants_past_command_not_support(scripted):
    _fake, modem = scripted(
        {
            "AT+CCID": b"\r\nCOMMAND NOT SUPPORT\r\n",
            "AT+ICCID": b"\r\nERROR\r\n",
            "AT^ICCID?": b"\r\n^ICCID: 98684000000000000071\r\n" + OK,
        }
    )
    assert modem.iccid() == "89860400000000000017"  # Huawei gives the nibble-swapped raw EF


def test_it_falls_back_to_cnmi_variants_a_modem_accepts(scripted):
    # No storage for reports: they come as +CDS, journaled as they arrive.
    _, modem = scripted({"AT+CNMI=2,1,0,2,0": b"\r\n+CMS ERROR: 303\r\n", "AT+CNMI=2,1,0,1,0": OK})
    modem.init()
    assert modem.cnmi == "2,1,0,1,0"


def test_it_tolerates_echo_until_ate0(scripted):
    _, modem = scripted(
        {"AT": b"AT\r\r\nOK\r\n", "ATE0": b"ATE0\r\r\nOK\r\n", "AT+CGMI": b"\r\nACME Wireless\r\n" + OK}
    )
    modem.init()
    assert modem._first_value("AT+CGMI") == "ACME Wireless"


def test_it_lists_reads_and_deletes_stored_messages(scripted):
    deliver = pdu.encode_deliver("+15550002222", "stored one", scts=datetime(2026, 1, 1, tzinfo=UTC))[0]
    listing = (f"\r\n+CMGL: 1,0,,24\r\n{deliver}\r\n+CMGL: 4,1,,24\r\n{deliver}\r\n").encode() + OK
    fake, modem = scripted(
        {
            "AT+CMGL=4": listing,
            "AT+CMGR=4": f"\r\n+CMGR: 1,,24\r\n{deliver}\r\n".encode() + OK,
            "AT+CMGR=9": b"\r\n+CMS ERROR: 321\r\n",
            "AT+CMGD=4": OK,
        }
    )
    stored = modem.list_messages()
    assert [(m.index, m.stat) for m in stored] == [(1, 0), (4, 1)]
    assert pdu.decode(stored[0].pdu).text == "stored one"
    assert modem.read_message(4).pdu == deliver
    assert modem.read_message(9) is None
    modem.delete_message(4)
    assert "AT+CMGD=4" in fake.commands


def test_a_cms_error_on_send_carries_the_code(scripted):
    _, modem = scripted({"AT+CMGS=*": b"\r\n> ", "PDU:*": b"\r\n+CMS ERROR: 38\r\n"})
    with pytest.raises(CmsError) as err:
        modem.send_pdu("0011", 7)
    assert (err.value.code, err.value.text) == (38, "network out of order")


@pytest.mark.parametrize(
    "answer", [b"\r\nOK\r\n", b"\r\nERROR\r\n", b"\r\n+CMGS: x\r\nOK\r\n", b"\r\nCOMMAND NOT SUPPORT\r\n"]
)
def test_a_send_answered_without_a_reference_after_the_pdu_may_have_left(scripted, answer):
    _, modem = scripted({"AT+CMGS=*": b"\r\n> ", "PDU:*": answer})
    with pytest.raises(SubmitUnconfirmed) as err:
        modem.send_pdu("0011", 7)
    assert err.value.submitted is True
    assert not isinstance(err.value, CommandError)  # never taken for a refusal that is safe to retry


def test_a_plain_error_before_the_prompt_is_a_refusal(scripted):
    _, modem = scripted({"AT+CMGS=*": b"\r\nERROR\r\n"})
    with pytest.raises(CommandError):
        modem.send_pdu("0011", 7)


def test_ussd_replies_in_ucs2_hex_are_decoded(scripted):
    fake, modem = scripted({'AT+CUSD=1,"*101#",15': OK})
    import threading

    def later():
        fake.wait_command('AT+CUSD=1,"*101#",15')
        fake.push(b'\r\n+CUSD: 0,"00420061006C0061006E00630065003A00200035002C0030003020AC",72\r\n')

    threading.Thread(target=later, daemon=True).start()
    assert modem.ussd("*101#", timeout=3)["text"] == "Balance: 5,00€"


def test_a_ussd_code_with_anything_but_digits_stars_and_hashes_is_refused(scripted):
    _, modem = scripted({})
    with pytest.raises(ValueError, match="not a USSD code"):
        modem.ussd('*100#"\rATD123;')


def test_reset_falls_back_to_a_full_reboot_when_atz_gets_no_answer(scripted):
    fake, modem = scripted({"ATZ": b"", "AT+CFUN=1,1": OK})
    assert modem.reset(timeout=0.3) == "cfun"
    assert fake.commands[-2:] == ["ATZ", "AT+CFUN=1,1"]


def test_a_silent_port_times_out_cleanly(scripted):
    _, modem = scripted({"AT": b""})
    with pytest.raises(ModemTimeout):
        modem.sync(attempts=2, timeout=0.2)


def test_signal_index_maps_to_dbm_and_unknown_is_none():
    assert (csq_to_dbm(0), csq_to_dbm(31), csq_to_dbm(99), csq_to_dbm(None)) == (-113, -51, None, None)
    assert decode_ussd_text("plain", 15) == "plain"


@pytest.mark.parametrize(
    "exc, kind",
    [
        (CmsError(500), TRANSIENT),
        (CmsError(332), TRANSIENT),
        (CmsError(42), TRANSIENT),
        (CmsError(21), PERMANENT),
        (CmsError(1), PERMANENT),
        (CmsError(200), PERMANENT),
        (CmsError(304), PERMANENT),
        (CmsError(310), SIM_PROBLEM),
        (CmeError(10), SIM_PROBLEM),
        (CmeError(100), TRANSIENT),
        (NotSupported("AT+CMGS=9", "COMMAND NOT SUPPORT"), TRANSIENT),
        (ModemTimeout("AT+CMGS=9", 1.0), TRANSIENT),
        (ModemTimeout("AT+CMGS=9", 1.0, submitted=True), UNCONFIRMED),
        (SubmitUnconfirmed("AT+CMGS=9", "OK"), UNCONFIRMED),
    ],
)
def test_send_errors_are_classified_into_retry_fail_sim_or_unconfirmed(exc, kind):
    assert classify_send_error(exc) == kind


def test_init_retries_storage_and_indications_while_sms_is_not_ready_after_sim_ready():
    import dataclasses

    from smsgw_worker.emulator import PROFILES

    emu = Emulator(dataclasses.replace(PROFILES["quectel"], sms_ready_seconds=1.5)).start()
    modem = ATModem(emu.device, sim_busy_timeout=5, command_timeout=2, sms_ready_timeout=10)
    try:
        modem.open()
        modem.init()
        assert (modem.cnmi, modem.cpms, modem.setup_problem) == ("2,1,0,2,0", '"SM","SM","SM"', None)
        assert emu._st.cnmi == [2, 1, 0, 2, 0]
        assert any(c.startswith("AT+CNMI=") for c in emu.commands[:-1])  # refused at first, then retried
    finally:
        modem.close()
        emu.stop()


def test_init_gives_up_after_its_bound_and_says_what_is_missing(scripted):
    _, modem = scripted({"AT+CNMI=2,1,0,2,0": b"\r\n+CMS ERROR: 302\r\n"}, sms_ready_timeout=0.5)
    started = time.monotonic()
    modem.init()
    assert time.monotonic() - started < 3
    assert modem.cnmi is None and "AT+CNMI" in modem.setup_problem


def test_direct_delivery_sets_csms_1_and_acknowledges_and_sr_is_counted():
    emu = Emulator("quectel", report_delay=0.05).start()
    events: queue.Queue = queue.Queue()
    modem = ATModem(emu.device, sim_busy_timeout=5, command_timeout=2, direct_delivery=True, on_event=events.put)
    try:
        modem.open()
        modem.init()
        assert (modem.cnmi, modem.needs_ack, modem.report_storage) == ("2,2,0,1,0", True, "SR")
        assert modem.report_storage_usage() == (0, 30)
        emu.inject_status_report(5, "+15550001111", store=True)
        assert modem.report_storage_usage() == (1, 30)
        [stored] = modem.list_messages(4, "SR")
        assert isinstance(pdu.decode(stored.pdu), pdu.StatusReport)
        assert modem.storage_usage() == (0, 30)  # the receive storage is back to SM
        emu.inject_sms("+15550002222", "direct", store=False)
        event = events.get(timeout=3)
        while event.kind != "sms":
            event = events.get(timeout=3)
        modem.ack()
        assert emu.direct_deliveries[-1]["outcome"] == "acked"
    finally:
        modem.close()
        emu.stop()
