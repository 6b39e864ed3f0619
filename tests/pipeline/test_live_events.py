"""Socket.IO relay: authenticated connections, the seed's events and more,
each event once however many API workers run."""
from __future__ import annotations

import secrets
import time

import pytest
import socketio

from smsgw_common.models import Message

from .conftest import add_inbound, add_modem_and_sim, add_outbound


def test_it_refuses_a_socket_without_credentials(api, sockets):
    with pytest.raises(socketio.exceptions.ConnectionError):
        sockets(auth={})


def test_it_refuses_a_socket_with_a_wrong_api_key(api, sockets):
    with pytest.raises(socketio.exceptions.ConnectionError):
        sockets(auth={"api_key": "sgw_" + "x" * 40})


def test_it_refuses_an_expired_token(api, sockets, people):
    with pytest.raises(socketio.exceptions.ConnectionError):
        sockets(auth={"token": people["bob"].token(ttl=-10)})


def test_a_browser_page_from_a_foreign_origin_cannot_connect(api, sockets, people):
    with pytest.raises(socketio.exceptions.ConnectionError):
        sockets(people["bob"], origin="http://evil.example")
    allowed = sockets(people["bob"], origin="http://127.0.0.1:8080")  # CORS_ALLOWED_ORIGINS
    assert allowed.wait_for("mqtt_status")


def test_it_accepts_a_token_in_the_query_string(api, sockets, people):
    sock = sockets(query=f"?token={people['carol'].token()}")
    # A new client is told the broker state straight away.
    assert sock.wait_for("mqtt_status")["connected"] is True


def test_it_relays_sent_and_delivered_with_the_seed_fields(api, sockets, people, mqtt, db_session):
    modem_id, sim_id = add_modem_and_sim(db_session)
    msg_id = add_outbound(db_session, sim_id, people["bob"].user_id, text="your code is 1234")
    sock = sockets(people["carol"])  # a viewer may read message events
    time.sleep(0.3)
    mqtt.message_event(message_id=msg_id, state="sent", sim_card_id=sim_id, modem_id=modem_id)
    mqtt.message_event(message_id=msg_id, state="delivered", sim_card_id=sim_id, modem_id=modem_id)
    sent = sock.wait_for("sms_status_update", lambda d: d["message_id"] == msg_id and d["status"] == "sent")
    delivered = sock.wait_for("sms_status_update",
                              lambda d: d["message_id"] == msg_id and d["status"] == "delivered")
    for field in ("message_id", "id", "status", "state", "direction", "sender_number", "receiver_number",
                  "message", "sim_card_id", "timestamp", "error_code", "error_text"):
        assert field in delivered, field
    assert sent["message"] == "your code is 1234"
    assert delivered["direction"] == "outbound" and delivered["sim_card_id"] == sim_id


def test_each_event_reaches_a_client_once_with_two_api_workers(api, sockets, people, mqtt, db_session):
    modem_id, sim_id = add_modem_and_sim(db_session)
    ids = [add_outbound(db_session, sim_id, people["bob"].user_id) for _ in range(5)]
    socks = [sockets(people["alice"]) for _ in range(4)]  # spread over both workers
    time.sleep(0.3)
    for mid in ids:
        mqtt.message_event(message_id=mid, state="sent", sim_card_id=sim_id, modem_id=modem_id)
    for sock in socks:
        for mid in ids:
            sock.wait_for("sms_status_update", lambda d, mid=mid: d["message_id"] == mid and d["status"] == "sent")
    time.sleep(0.5)
    for sock in socks:
        assert len(sock.seen("sms_status_update", lambda d: d["message_id"] in ids and d["status"] == "sent")) == len(ids)


def test_it_relays_an_inbound_sms_as_sms_received(api, sockets, people, mqtt, db_session):
    modem_id, sim_id = add_modem_and_sim(db_session)
    with db_session() as s:
        msg = Message(direction="inbound", sender="+4917612345678", recipient="+4915100000001",
                      message="hi there", status="received", sim_card_id=sim_id)
        s.add(msg)
        s.commit()
    sock = sockets(people["bob"])
    time.sleep(0.3)
    mqtt.message_event(message_id=msg.id, state="received", direction="inbound", sim_card_id=sim_id,
                       sender="+4917612345678", recipient="+4915100000001", message="hi there")
    got = sock.wait_for("sms_received", lambda d: d["id"] == msg.id)
    assert got["sender"] == "+4917612345678" and got["message"] == "hi there"
    status = sock.wait_for("sms_status_update", lambda d: d["message_id"] == msg.id)
    assert status["direction"] == "inbound" and status["status"] == "received"


def test_it_relays_modem_health_and_replays_it_to_new_clients(api, sockets, people, mqtt, db_session):
    modem_id, sim_id = add_modem_and_sim(db_session)
    sock = sockets(people["carol"])
    time.sleep(0.3)
    mqtt.modem_state(modem_id, True, signal_quality=21, operator="Test Net", sim_card_id=sim_id)
    got = sock.wait_for("modem_status", lambda d: d["modem_id"] == modem_id)
    assert got["online"] is True and got["signal_quality"] == 21 and got["operator"] == "Test Net"
    late = sockets(people["carol"])
    assert late.wait_for("modem_status", lambda d: d["modem_id"] == modem_id)["signal_quality"] == 21


def test_only_admins_hear_about_opt_out_changes(api, sockets, people, mqtt, db_session):
    modem_id, sim_id = add_modem_and_sim(db_session)
    number = f"+4916{secrets.randbelow(10**8):08d}"
    admin, viewer = sockets(people["alice"]), sockets(people["carol"])
    time.sleep(0.3)
    msg_id = add_inbound(db_session, mqtt, sim_id, number, "STOP")
    assert admin.wait_for("opt_out_update", lambda d: d["number"] == number)["opted_out"] is True
    viewer.wait_for("sms_received", lambda d: d["id"] == msg_id)
    time.sleep(0.3)
    assert viewer.seen("opt_out_update") == []
