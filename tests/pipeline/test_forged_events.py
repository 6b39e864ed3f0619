"""Every modem worker may publish on the shared events topic, and MQTT does
not say who published: the events consumer re-reads the message from
Postgres and refuses an event that does not match it (docs/security.md)."""

from __future__ import annotations

import time

from smsgw_common.models import Message

from .conftest import add_modem_and_sim, add_outbound, wait_until

FORGED_TEXT = "your bank: confirm at http://evil.example"


def _hooked(api, people, receiver) -> None:
    r = api.post(
        "/api/webhooks",
        people["bob"],
        {"url": receiver.url, "events": ["message.received", "message.failed", "message.sent"]},
    )
    assert r.status_code == 201, r.text


def test_a_forged_inbound_sms_for_no_stored_message_reaches_no_dashboard(
    api, sockets, people, mqtt, db_session, receiver
):
    _hooked(api, people, receiver)
    forger_modem, forger_sim = add_modem_and_sim(db_session)
    sock = sockets(people["alice"])
    time.sleep(0.3)
    ghost = 2_000_000_000
    mqtt.message_event(
        message_id=ghost,
        state="received",
        direction="inbound",
        sim_card_id=forger_sim,
        modem_id=forger_modem,
        sender="+4917600000000",
        message=FORGED_TEXT,
    )
    # A real event after the forged one: once it is relayed, the forged one was handled.
    _, control = _control_event(db_session, mqtt, people)
    sock.wait_for("sms_status_update", lambda d: d["message_id"] == control)
    assert sock.seen("sms_received", lambda d: d["id"] == ghost) == []
    assert sock.seen("sms_status_update", lambda d: d["message_id"] == ghost) == []
    time.sleep(0.5)
    assert [h for h in receiver.hits if h.json["data"].get("message_id") == ghost] == []
    wait_until(lambda: "message event refused: no such message" in api.log(), 5, 0.1, "the refusal in the log")


def test_a_worker_cannot_announce_a_state_of_another_modems_message(api, sockets, people, mqtt, db_session):
    forger_modem, forger_sim = add_modem_and_sim(db_session)
    _victim_modem, victim_sim = add_modem_and_sim(db_session)
    victim = add_outbound(db_session, victim_sim, people["bob"].user_id, text="real text")
    sock = sockets(people["alice"])
    time.sleep(0.3)
    # Its own modem id with the victim's SIM, its own SIM, no SIM at all; and no modem with a made-up state.
    mqtt.message_event(message_id=victim, state="failed", sim_card_id=victim_sim, modem_id=forger_modem)
    mqtt.message_event(message_id=victim, state="failed", sim_card_id=forger_sim, modem_id=forger_modem)
    mqtt.message_event(message_id=victim, state="failed", modem_id=forger_modem)
    mqtt.message_event(message_id=victim, state="failed", error_text=FORGED_TEXT)
    _, control = _control_event(db_session, mqtt, people)
    sock.wait_for("sms_status_update", lambda d: d["message_id"] == control)
    time.sleep(0.3)
    assert sock.seen("sms_status_update", lambda d: d["message_id"] == victim) == []
    with db_session() as s:
        assert s.get(Message, victim).status == "queued"


def test_what_browsers_see_comes_from_the_database_not_the_event(api, sockets, people, mqtt, db_session):
    modem_id, sim_id = add_modem_and_sim(db_session)
    with db_session() as s:
        msg = Message(
            direction="inbound", sender="+4917612340000", message="the real text", status="received", sim_card_id=sim_id
        )
        s.add(msg)
        s.commit()
    sock = sockets(people["alice"])
    time.sleep(0.3)
    mqtt.message_event(
        message_id=msg.id,
        state="received",
        direction="inbound",
        sim_card_id=sim_id,
        modem_id=modem_id,
        sender="+4917699999999",
        message=FORGED_TEXT,
    )
    got = sock.wait_for("sms_received", lambda d: d["id"] == msg.id)
    assert got["message"] == "the real text" and got["sender"] == "+4917612340000"


def _control_event(db_session, mqtt, people) -> tuple[str, int]:
    modem_id, sim_id = add_modem_and_sim(db_session)
    mid = add_outbound(db_session, sim_id, people["bob"].user_id, text="control")
    mqtt.message_event(message_id=mid, state="sent", sim_card_id=sim_id, modem_id=modem_id)
    return modem_id, mid
