"""Liveness while a send is pending, byte by byte against a scripted modem
(serial_link.py; docs/modems.md, "Modem faults")."""

from __future__ import annotations

import threading
import time

import pytest
from support.waits import wait_until

from smsgw_worker.atmodem import ATModem
from smsgw_worker.errors import ModemTimeout
from smsgw_worker.serial_link import SerialLink

from .scripted_modem import ScriptedModem

OK = b"\r\nOK\r\n"
PROMPT = b"\r\n> "


@pytest.fixture
def link_to():
    made = []

    def make(table) -> tuple[ScriptedModem, SerialLink]:
        modem = ScriptedModem(table)
        link = SerialLink(modem.device)
        link.open()
        made.append((modem, link))
        return modem, link

    yield make
    for modem, link in made:
        link.close()
        modem.close()


def test_a_modem_that_lost_the_send_answers_the_probe_and_the_wait_ends_at_once(link_to):
    modem, link = link_to({"AT+CMGS=*": PROMPT, "PDU:0011AA": b"", "AT": OK})
    started = time.monotonic()
    with pytest.raises(ModemTimeout) as caught:
        link.command_with_data("AT+CMGS=2", "0011AA", timeout=30, probe_after=0.5)
    assert time.monotonic() - started < 5  # not the 30 s limit
    assert caught.value.submitted is True  # the SMS may have left: never resent
    assert "liveness probe" in str(caught.value)
    wait_until(
        lambda: bytes(modem.written) == b"AT+CMGS=2\r0011AA\x1aAT\r", 2, 0.02, lambda: repr(bytes(modem.written))
    )


def test_a_modem_still_submitting_answers_the_send_first_and_the_probe_answer_is_not_taken_for_the_next(link_to):
    modem: ScriptedModem

    def slow_network(_: str) -> bytes:
        # The modem queues the probe and answers it after the send, as 3GPP modems do.
        threading.Timer(1.5, lambda: modem.push(b"\r\n+CMGS: 9\r\n" + OK + OK)).start()
        return b""

    modem, link = link_to(
        {"AT+CMGS=*": PROMPT, "PDU:0011AA": slow_network, "AT": b"", "AT+CSQ": b"\r\n+CSQ: 20,99\r\n" + OK}
    )
    assert link.command_with_data("AT+CMGS=2", "0011AA", timeout=30, probe_after=0.5) == ["+CMGS: 9"]
    assert b"\x1aAT\r" in bytes(modem.written)
    modem.table["AT+CSQ"] = lambda _: time.sleep(0.2) or b"\r\n+CSQ: 20,99\r\n" + OK
    assert link.command("AT+CSQ", 3) == ["+CSQ: 20,99"]


def test_after_a_probe_even_a_cms_error_does_not_prove_that_nothing_left(link_to):
    # The error may answer the probe, not the send: resending could duplicate it.
    _, link = link_to({"AT+CMGS=*": PROMPT, "PDU:0011AA": b"", "AT": b"\r\n+CMS ERROR: 500\r\n"})
    with pytest.raises(ModemTimeout) as caught:
        link.command_with_data("AT+CMGS=2", "0011AA", timeout=30, probe_after=0.5)
    assert caught.value.submitted is True


def test_a_probe_answered_before_its_write_returns_is_still_the_probes_answer(link_to):
    """Found by make test under CPU load: the probe was counted only after
    its write returned, so a modem that answered at once had its +CMS error
    taken for the send's (a sure failure, resent: a possible duplicate)."""
    _, link = link_to({"AT+CMGS=*": PROMPT, "PDU:0011AA": b"", "AT": b"\r\n+CMS ERROR: 500\r\n"})
    write = link._write

    def slow_return(data: bytes) -> None:
        write(data)
        if data == b"AT\r":
            time.sleep(0.3)  # the answer is read before this write returns

    link._write = slow_return
    with pytest.raises(ModemTimeout) as caught:
        link.command_with_data("AT+CMGS=2", "0011AA", timeout=30, probe_after=0.5)
    assert caught.value.submitted is True


def test_with_probing_off_only_the_limit_ends_the_wait_and_nothing_is_written_after_the_pdu(link_to):
    modem, link = link_to({"AT+CMGS=*": PROMPT, "PDU:0011AA": b"", "AT": OK})
    started = time.monotonic()
    with pytest.raises(ModemTimeout) as caught:
        link.command_with_data("AT+CMGS=2", "0011AA", timeout=1.5, probe_after=0)
    assert time.monotonic() - started >= 1.5
    assert caught.value.submitted is True
    assert bytes(modem.written) == b"AT+CMGS=2\r0011AA\x1a"


def test_no_prompt_is_a_timeout_before_anything_was_written(link_to):
    modem, link = link_to({"AT+CMGS=*": b""})
    with pytest.raises(ModemTimeout) as caught:
        link.command_with_data("AT+CMGS=2", "0011AA", timeout=30, prompt_timeout=0.5, probe_after=0.5)
    assert caught.value.submitted is False  # safe to send again
    # Cancelled with ESC, no PDU (the modem's reader records it a moment later).
    wait_until(lambda: bytes(modem.written) == b"AT+CMGS=2\r\x1b", 2, 0.02, lambda: repr(bytes(modem.written)))


def test_the_send_limit_scales_with_the_pdu_on_the_line_and_the_network_time_never_past_the_hard_limit():
    modem = ATModem("/dev/null", baudrate=9600, submit_timeout=60.0, send_timeout=120.0)
    pdu = "00" * 160
    on_the_line = (len("AT+CMGS=159") + len(pdu) + 2) * 10 / 9600
    assert modem.submit_wait("AT+CMGS=159", pdu) == pytest.approx(60.0 + on_the_line)
    assert ATModem("/dev/null", submit_timeout=200.0, send_timeout=120.0).submit_wait("AT+CMGS=159", pdu) == 120.0


def test_a_negative_probe_delay_is_refused_and_zero_turns_probing_off():
    from smsgw_common.settings import SettingsError
    from smsgw_worker.settings import WorkerSettings

    base = {"DATABASE_URL": "postgresql://u@h/db", "MODEM_ID": "m1", "MODEM_DEVICE": "/dev/ttyUSB*"}
    with pytest.raises(SettingsError, match="MODEM_SEND_PROBE_AFTER must not be negative"):
        WorkerSettings.from_env({**base, "MODEM_SEND_PROBE_AFTER": "-1"})
    settings = WorkerSettings.from_env({**base, "MODEM_SEND_PROBE_AFTER": "0", "MODEM_SUBMIT_TIMEOUT": "30"})
    assert (settings.send_probe_after, settings.submit_timeout, settings.send_timeout) == (0.0, 30.0, 120.0)
