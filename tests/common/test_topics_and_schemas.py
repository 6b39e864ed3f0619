import json
import logging

import pytest

from smsgw_common.schemas import ModemCommand, ModemState, OutboxWakeup, parse
from smsgw_common.topics import Topics


def test_topics_follow_the_design_under_the_prefix():
    t = Topics("smsgw/")
    assert t.outbox("modem1") == "smsgw/modems/modem1/outbox"
    assert t.state("modem1") == "smsgw/modems/modem1/state"
    assert t.command("modem1") == "smsgw/modems/modem1/command"
    assert t.message_events() == "smsgw/events/messages"
    assert t.stats("api") == "smsgw/stats/api"
    assert t.modem_id_of("smsgw/modems/modem1/state") == "modem1"
    assert t.modem_id_of("smsgw/events/messages") is None


# "abc\n": re.match with `$` once let a trailing newline through (check_id).
@pytest.mark.parametrize("bad", ["a/b", "+", "#", "", "x" * 65, "sp ace", "abc\n"])
def test_an_id_that_would_change_the_topic_is_refused(bad):
    with pytest.raises(ValueError):
        Topics().outbox(bad)


@pytest.mark.parametrize("field", ["node", "site"])
@pytest.mark.parametrize("bad", ["de\n", "a/b", "x" * 65, ""])
def test_a_modem_state_with_a_node_or_site_routing_could_not_match_is_dropped(field, bad):
    raw = ModemState(modem_id="m1", online=True, ts="2026-12-07T12:00:00Z").as_dict()
    assert parse(ModemState, json.dumps({**raw, field: "de"}).encode()) is not None
    assert parse(ModemState, json.dumps({**raw, field: bad}).encode()) is None


def test_a_valid_payload_parses_and_unknown_fields_are_ignored():
    msg = parse(OutboxWakeup, b'{"message_id": 7, "future_field": 1}')
    assert msg == OutboxWakeup(message_id=7)
    assert OutboxWakeup(message_id=7).to_json() == b'{"message_id":7}'


@pytest.mark.parametrize("raw", [b"not json", b'{"message_id": "seven"}', b"[]", b'{"command": "rm -rf"}'])
def test_an_invalid_payload_is_logged_and_dropped(raw, caplog):
    with caplog.at_level(logging.WARNING):
        model = ModemCommand if b"command" in raw else OutboxWakeup
        assert parse(model, raw) is None
    assert "dropping invalid" in caplog.text
