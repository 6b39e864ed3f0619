"""USSD as real networks answer it: plain text, hex of UCS-2 (DCS 72, or 17
after a language code), hex of packed GSM 7-bit under DCS 15 (Huawei), and
menus that keep the session open for a reply."""

from __future__ import annotations

import uuid

import pytest

from smsgw_worker import pdu
from smsgw_worker.atmodem import decode_ussd_text

from .worker_harness import Rig


def _command(r: Rig, **args) -> dict:
    request_id = uuid.uuid4().hex
    r.mqtt.publish(r.topics.command(r.modem_id), {"command": "ussd", "request_id": request_id, "args": args})
    return r.mqtt.wait(r.topics.command_reply(r.modem_id), lambda p: p["request_id"] == request_id, timeout=10)


@pytest.mark.parametrize(
    ("text", "dcs", "meant"),
    [
        ("Your balance is 12.34", 15, "Your balance is 12.34"),
        (pdu.pack_gsm7("Your balance is 12.34 EUR").hex().upper(), 15, "Your balance is 12.34 EUR"),
        (pdu.pack_gsm7("Bundles: 1 GB left").hex(), 0, "Bundles: 1 GB left"),
        ("Баланс: 5,00€".encode("utf-16-be").hex().upper(), 72, "Баланс: 5,00€"),
        ((pdu.pack_gsm7("ru") + "Баланс".encode("utf-16-be")).hex(), 17, "Баланс"),
        ("100", 15, "100"),
        ("CAFE", 15, "CAFE"),
        ("12345678", 15, "12345678"),
    ],
    ids=[
        "plain",
        "gsm7-hex-dcs15",
        "gsm7-hex-dcs0",
        "ucs2-hex-dcs72",
        "ucs2-language-dcs17",
        "digits",
        "short-word",
        "long-digits",
    ],
)
def test_a_ussd_answer_is_decoded_by_its_dcs_and_its_bytes(text, dcs, meant):
    assert decode_ussd_text(text, dcs) == meant


@pytest.mark.parametrize("quirk", ["ussd_gsm7_packed_hex", "ussd_ucs2_hex", "ussd_ucs2_language_hex"])
def test_a_modem_answering_ussd_in_hex_gives_the_worker_plain_text(rig, quirk):
    r = rig()
    r.emulator.set_quirk(quirk)
    r.start_worker()
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p["online"])
    reply = _command(r, code="*100#")
    assert reply["ok"] is True and reply["result"]["text"] == "Your balance is 12.34"


def test_a_ussd_menu_is_answered_within_its_session(rig):
    r = rig()
    r.start_worker()
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p["online"])
    menu = _command(r, code="*101#")["result"]
    assert menu["session_open"] is True and menu["text"] == "1 Balance 2 Bundles"
    answer = _command(r, code="1")["result"]
    assert answer["session_open"] is False and answer["text"] == "Your balance is 12.34 EUR"


def test_a_ussd_menu_can_be_left_without_answering_it(rig):
    r = rig()
    r.start_worker()
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p["online"])
    assert _command(r, code="*101#")["result"]["session_open"] is True
    left = _command(r, cancel=True)
    assert left["ok"] is True and left["result"]["session_open"] is False
    assert "AT+CUSD=2" in r.emulator.commands
    # A new session starts afresh: "1" is now a code of its own, not a menu choice.
    assert _command(r, code="*100#")["result"]["text"] == "Your balance is 12.34"
