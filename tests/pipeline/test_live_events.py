"""Socket.IO relay: authenticated connections, the seed's events and more,
each event once however many API workers run."""

from __future__ import annotations

import secrets
import time

import pytest
import socketio
from sqlalchemy import text
from support.pipeline import wait_modem_state_stored
from support.waits import holds_for

from smsgw_common.models import ApiKey, Message, User

from .conftest import (
    Persona,
    Socket,
    add_inbound,
    add_modem_and_sim,
    add_outbound,
    socket_opener,
    start_api,
    stop_process,
    wait_until,
)


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


def test_it_refuses_a_token_in_the_query_string(api, sockets, people):
    # Query strings end up in access logs: credentials go in the auth payload.
    with pytest.raises(socketio.exceptions.ConnectionError):
        sockets(query=f"?token={people['carol'].token()}")
    with pytest.raises(socketio.exceptions.ConnectionError):
        sockets(query=f"?api_key={people['carol'].api_key}")


def test_a_new_client_is_told_the_broker_state_at_once(api, sockets, people):
    sock = sockets(auth={"token": people["carol"].token()})
    assert sock.wait_for("mqtt_status")["connected"] is True


def test_it_relays_sent_and_delivered_with_the_seed_fields(api, sockets, people, mqtt, db_session):
    modem_id, sim_id = add_modem_and_sim(db_session)
    msg_id = add_outbound(db_session, sim_id, people["bob"].user_id, text="your code is 1234")
    sock = sockets(people["carol"])  # a viewer may read message events
    mqtt.message_event(message_id=msg_id, state="sent", sim_card_id=sim_id, modem_id=modem_id)
    mqtt.message_event(message_id=msg_id, state="delivered", sim_card_id=sim_id, modem_id=modem_id)
    sent = sock.wait_for("sms_status_update", lambda d: d["message_id"] == msg_id and d["status"] == "sent")
    delivered = sock.wait_for("sms_status_update", lambda d: d["message_id"] == msg_id and d["status"] == "delivered")
    for field in (
        "message_id",
        "id",
        "status",
        "state",
        "direction",
        "sender_number",
        "receiver_number",
        "message",
        "sim_card_id",
        "timestamp",
        "error_code",
        "error_text",
    ):
        assert field in delivered, field
    assert sent["message"] == "your code is 1234"
    assert delivered["direction"] == "outbound" and delivered["sim_card_id"] == sim_id


def test_each_event_reaches_a_client_once_with_two_api_workers(api, sockets, people, mqtt, db_session):
    modem_id, sim_id = add_modem_and_sim(db_session)
    # Pinned: the sweeper would otherwise even these queued messages out onto
    # other SIMs, and an event from this modem for a message on another
    # modem's SIM is refused as forged (pipeline/events.py).
    ids = [add_outbound(db_session, sim_id, people["bob"].user_id, pinned=True) for _ in range(5)]
    socks = [sockets(people["alice"]) for _ in range(4)]  # spread over both workers
    for mid in ids:
        mqtt.message_event(message_id=mid, state="sent", sim_card_id=sim_id, modem_id=modem_id)
    for sock in socks:
        for mid in ids:
            sock.wait_for("sms_status_update", lambda d, mid=mid: d["message_id"] == mid and d["status"] == "sent")
    # A copy relayed by the other worker would trail the first: none within the window.
    holds_for(
        lambda: all(
            len(s.seen("sms_status_update", lambda d: d["message_id"] in ids and d["status"] == "sent")) == len(ids)
            for s in socks
        ),
        0.5,
        message="one copy of each event per socket",
    )
    for sock in socks:
        assert len(sock.seen("sms_status_update", lambda d: d["message_id"] in ids and d["status"] == "sent")) == len(
            ids
        )


def test_it_relays_an_inbound_sms_as_sms_received(api, sockets, people, mqtt, db_session):
    _modem_id, sim_id = add_modem_and_sim(db_session)
    with db_session() as s:
        msg = Message(
            direction="inbound",
            sender="+4917612345678",
            recipient="+4915100000001",
            message="hi there",
            status="received",
            sim_card_id=sim_id,
        )
        s.add(msg)
        s.commit()
    sock = sockets(people["bob"])
    mqtt.message_event(
        message_id=msg.id,
        state="received",
        direction="inbound",
        sim_card_id=sim_id,
        sender="+4917612345678",
        recipient="+4915100000001",
        message="hi there",
    )
    got = sock.wait_for("sms_received", lambda d: d["id"] == msg.id)
    assert got["sender"] == "+4917612345678" and got["message"] == "hi there"
    status = sock.wait_for("sms_status_update", lambda d: d["message_id"] == msg.id)
    assert status["direction"] == "inbound" and status["status"] == "received"


def test_it_relays_modem_health_and_replays_it_to_new_clients(api, sockets, people, mqtt, db_session, pipeline_env):
    modem_id, sim_id = add_modem_and_sim(db_session)
    sock = sockets(people["carol"])
    mqtt.modem_state(modem_id, True, signal_quality=21, operator="Test Net", sim_card_id=sim_id)
    got = sock.wait_for("modem_status", lambda d: d["modem_id"] == modem_id)
    assert got["online"] is True and got["signal_quality"] == 21 and got["operator"] == "Test Net"
    wait_modem_state_stored(pipeline_env, modem_id)
    late = sockets(people["carol"])
    assert late.wait_for("modem_status", lambda d: d["modem_id"] == modem_id)["signal_quality"] == 21


def test_only_admins_hear_about_opt_out_changes(api, sockets, people, mqtt, db_session):
    _modem_id, sim_id = add_modem_and_sim(db_session)
    number = f"+4916{secrets.randbelow(10**8):08d}"
    admin, viewer = sockets(people["alice"]), sockets(people["carol"])
    msg_id = add_inbound(db_session, mqtt, sim_id, number, "STOP")
    assert admin.wait_for("opt_out_update", lambda d: d["number"] == number)["opted_out"] is True
    viewer.wait_for("sms_received", lambda d: d["id"] == msg_id)
    holds_for(lambda: viewer.seen("opt_out_update") == [], 0.3, message="the viewer hears no opt-out change")


# --- Open sockets lose their access with their credentials ------------------

REAUTH_SECONDS = 1.0


@pytest.fixture(scope="module")
def quick_api(api, pipeline_env, python, tmp_path_factory):
    """A second API whose sockets are re-checked every second. It never runs
    for leader (PIPELINE_BACKGROUND=off): the leader of `api` relays, through
    Redis, to its sockets too."""
    log_path = tmp_path_factory.mktemp("quick-api") / "gunicorn.log"
    server = start_api(
        dict(pipeline_env, SOCKETIO_REAUTH_SECONDS=str(REAUTH_SECONDS), PIPELINE_BACKGROUND="off"),
        python,
        log_path,
        workers=1,
    )
    try:
        yield server
    finally:
        stop_process(server.proc)


@pytest.fixture
def quick_sockets(quick_api):
    with socket_opener(quick_api.base) as connect:
        yield connect


def throwaway(db_session, role: str) -> Persona:
    """A user of its own with a key: these tests revoke and deactivate."""
    from smsgw_api.core.security import new_api_key
    from smsgw_api.domain.accounts import hash_password

    with db_session() as s:
        user = User(
            username=f"temp-{secrets.token_hex(4)}", password_hash=hash_password(secrets.token_hex(8)), role=role
        )
        s.add(user)
        s.flush()
        key, prefix, digest = new_api_key()
        s.add(ApiKey(user_id=user.id, name="tests", prefix=prefix, key_hash=digest))
        s.commit()
        return Persona(user.username, role, user.id, key)


def run_sql(db_session, sql: str, **params) -> None:
    with db_session() as s:
        s.execute(text(sql), params)
        s.commit()


def wait_disconnected(sock: Socket, timeout: float) -> None:
    wait_until(lambda: not sock.sio.connected, timeout, 0.05, "the server to disconnect the socket")


def assert_cut_off(doomed: Socket, control: Socket, db_session, mqtt) -> None:
    """An event after the disconnect reaches a live socket but not the dropped one."""
    modem_id, sim_id = add_modem_and_sim(db_session)
    msg_id = add_outbound(db_session, sim_id, None, text="after the cut")
    mqtt.message_event(message_id=msg_id, state="sent", sim_card_id=sim_id, modem_id=modem_id)
    control.wait_for("sms_status_update", lambda d: d["message_id"] == msg_id)
    holds_for(
        lambda: doomed.seen("sms_status_update", lambda d: d["message_id"] == msg_id) == [],
        0.3,
        message="the dropped socket hears nothing more",
    )
    assert doomed.seen("sms_status_update", lambda d: d["message_id"] == msg_id) == []


def test_a_socket_whose_key_is_revoked_is_disconnected(quick_sockets, people, db_session, mqtt):
    who = throwaway(db_session, "viewer")
    doomed = quick_sockets(auth={"api_key": who.api_key})
    control = quick_sockets(auth={"api_key": people["carol"].api_key})
    doomed.wait_for("mqtt_status"), control.wait_for("mqtt_status")
    # Revoked behind the API's back (another replica, psql): no cache to clear.
    run_sql(db_session, "UPDATE api_keys SET revoked_at = now() WHERE user_id = :id", id=who.user_id)
    wait_disconnected(doomed, REAUTH_SECONDS + 3)
    assert control.sio.connected
    assert_cut_off(doomed, control, db_session, mqtt)


def test_a_socket_of_a_deactivated_user_is_disconnected(quick_sockets, people, db_session, mqtt):
    who = throwaway(db_session, "user")
    doomed = quick_sockets(auth={"token": who.token()})
    control = quick_sockets(auth={"api_key": people["carol"].api_key})
    doomed.wait_for("mqtt_status"), control.wait_for("mqtt_status")
    run_sql(db_session, "UPDATE users SET is_active = false WHERE id = :id", id=who.user_id)
    wait_disconnected(doomed, REAUTH_SECONDS + 3)
    assert_cut_off(doomed, control, db_session, mqtt)


def test_a_socket_of_a_deleted_user_is_disconnected(quick_sockets, db_session):
    who = throwaway(db_session, "viewer")
    doomed = quick_sockets(auth={"api_key": who.api_key})
    doomed.wait_for("mqtt_status")
    run_sql(db_session, "DELETE FROM users WHERE id = :id", id=who.user_id)
    wait_disconnected(doomed, REAUTH_SECONDS + 3)


def test_a_socket_is_disconnected_when_its_token_expires(api, sockets, people, db_session, mqtt):
    # The main API re-checks only every 30 s (the default): this is the
    # expiry timer, not the periodic pass.
    doomed = sockets(auth={"token": people["carol"].token(ttl=2)})
    control = sockets(people["carol"])
    doomed.wait_for("mqtt_status"), control.wait_for("mqtt_status")
    started = time.monotonic()
    wait_disconnected(doomed, 5)
    assert time.monotonic() - started < 4
    assert_cut_off(doomed, control, db_session, mqtt)


def test_a_demoted_admin_socket_stops_hearing_admin_events(quick_sockets, people, db_session, mqtt):
    who = throwaway(db_session, "admin")
    demoted = quick_sockets(auth={"api_key": who.api_key})
    admin = quick_sockets(auth={"api_key": people["alice"].api_key})
    demoted.wait_for("mqtt_status"), admin.wait_for("mqtt_status")
    run_sql(db_session, "UPDATE users SET role = 'viewer' WHERE id = :id", id=who.user_id)
    # The re-check runs on a timer with no outside sign of a pass: its period is what waits.
    time.sleep(REAUTH_SECONDS + 1.5)  # one pass, with room to spare
    _modem_id, sim_id = add_modem_and_sim(db_session)
    number = f"+4916{secrets.randbelow(10**8):08d}"
    msg_id = add_inbound(db_session, mqtt, sim_id, number, "STOP")
    assert admin.wait_for("opt_out_update", lambda d: d["number"] == number)["opted_out"] is True
    # Still connected, now as a viewer: it hears what viewers hear and no more.
    demoted.wait_for("sms_received", lambda d: d["id"] == msg_id)
    holds_for(
        lambda: demoted.seen("opt_out_update", lambda d: d["number"] == number) == [],
        0.3,
        message="the demoted socket hears no admin event",
    )
    assert demoted.sio.connected
    assert demoted.seen("opt_out_update", lambda d: d["number"] == number) == []
