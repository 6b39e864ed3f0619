"""The seed's protocol as the board worker reads it, and its settings."""

from __future__ import annotations

import json

import pytest

from smsgw_common.settings import SettingsError
from smsgw_worker.board.protocol import (
    ReceivePayload,
    SeedTopics,
    StatusPayload,
    message_id_of,
    parse_board,
    same_number,
    status_state,
)
from smsgw_worker.board.settings import BoardSettings
from smsgw_worker.settings import transport_of


def test_without_a_root_the_topics_are_the_seeds_own():
    topics = SeedTopics()
    assert topics.send("+49 151 1234-5678") == "sms/send/4915112345678"
    assert (topics.status(), topics.receive()) == ("/sms/status", "/sms/receive")
    assert SeedTopics("site-a/").status() == "site-a//sms/status"


@pytest.mark.parametrize(
    "word, state",
    [("sent", "sent"), ("DELIVERED", "delivered"), (" Failed ", "failed"), ("queued", None), ("", None)],
)
def test_status_words_are_read_in_any_case_and_others_are_not_guessed(word, state):
    assert status_state(word) == state


@pytest.mark.parametrize(
    "a, b, same",
    [
        ("+4915112345678", "4915112345678", True),
        ("004915112345678", "+49 151 12345678", True),
        ("+4915112345678", "+4915112345679", False),
        ("", "", False),
        (None, "+49", False),
    ],
)
def test_numbers_match_however_a_board_spells_them(a, b, same):
    assert same_number(a, b) is same


def test_a_status_may_carry_its_id_as_a_number_or_as_text():
    base = {"sender_number": "+49151", "status": "sent"}
    assert message_id_of(parse_board(StatusPayload, json.dumps({**base, "message_id": 42}).encode())) == 42
    assert message_id_of(parse_board(StatusPayload, json.dumps({**base, "message_id": "42"}).encode())) == 42
    seed_uuid = parse_board(StatusPayload, json.dumps({**base, "message_id": "5b0d7a52-64c1"}).encode())
    assert message_id_of(seed_uuid) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[]",
        json.dumps({"sender_number": "+1", "receiver_number": "+2"}).encode(),
        json.dumps({"sender_number": "+1", "receiver_number": "+2", "message": "a\x00b"}).encode(),
        json.dumps({"sender_number": "+1" * 40, "receiver_number": "+2", "message": "x"}).encode(),
    ],
)
def test_a_payload_that_is_not_the_seeds_is_dropped(raw):
    assert parse_board(ReceivePayload, raw) is None


def test_board_settings_name_the_board_by_its_number():
    settings = BoardSettings.from_env({"BOARD_NUMBER": "0049 151 12345678", "DATABASE_URL": "postgresql://x/y"})
    assert (settings.number, settings.modem_id, settings.topic_root) == ("+4915112345678", "board-4915112345678", "")


@pytest.mark.parametrize(
    "env, problem",
    [
        ({}, "BOARD_NUMBER"),
        ({"BOARD_NUMBER": "123"}, "E.164"),
        ({"BOARD_NUMBER": "+4915112345678", "BOARD_TOPIC_ROOT": "a/#"}, "wildcards"),
        ({"BOARD_NUMBER": "+4915112345678", "BOARD_STATUS_TIMEOUT": "0"}, "BOARD_STATUS_TIMEOUT"),
        ({"BOARD_NUMBER": "+4915112345678", "BOARD_OFFLINE_AFTER": "0"}, "BOARD_OFFLINE_AFTER"),
        ({"BOARD_NUMBER": "+4915112345678", "MODEM_ID": "demo-1"}, "must be board-4915112345678"),
    ],
)
def test_bad_board_settings_are_refused_by_name(env, problem):
    with pytest.raises(SettingsError, match=problem):
        BoardSettings.from_env({"DATABASE_URL": "postgresql://x/y", **env})


def test_the_transport_is_serial_unless_told_and_nothing_else_is_accepted():
    assert transport_of({}) == "serial"
    assert transport_of({"MODEM_TRANSPORT": "seed-mqtt"}) == "seed-mqtt"
    with pytest.raises(SettingsError, match="MODEM_TRANSPORT"):
        transport_of({"MODEM_TRANSPORT": "bluetooth"})
