"""One events leader per deployment; when it dies another API process takes
over, and events published in between are not lost (persistent MQTT session
for the live relay; the history in Postgres for webhooks and opt-outs)."""

from __future__ import annotations

import os
import secrets
import signal

from sqlalchemy import func, select
from support.waits import holds_for

from smsgw_common import queue as history
from smsgw_common.models import Message, OptOut

from .conftest import add_modem_and_sim, add_outbound, current_leader, wait_until


def record(db_session, msg_id: int, state: str) -> None:
    with db_session() as s:
        history.record(s, s.get(Message, msg_id), state, source="tests")
        s.commit()


def leader_pid(env) -> int:
    """The pid of the process holding the leader's advisory lock (its id,
    `host:pid:random`, is its connection's application_name)."""
    leader = current_leader(env["DATABASE_URL"], env["MQTT_PREFIX"])
    return int(leader.split(":")[1]) if leader else 0


def test_a_killed_leader_is_replaced_and_its_backlog_delivered(
    api, pipeline_env, people, mqtt, db_session, sockets, receiver
):
    hook = api.post("/api/webhooks", people["bob"], {"url": receiver.url, "events": ["message.sent"]}).json()
    modem_id, sim_id = add_modem_and_sim(db_session)
    msg_id = add_outbound(db_session, sim_id, people["bob"].user_id)
    old = leader_pid(pipeline_env)
    assert old
    os.kill(old, signal.SIGKILL)
    # Published while no leader holds the MQTT session: the broker keeps it.
    record(db_session, msg_id, "sent")
    mqtt.message_event(message_id=msg_id, state="sent", sim_card_id=sim_id, modem_id=modem_id)
    new = wait_until(lambda: (p := leader_pid(pipeline_env)) and p != old and p, 15, 0.1, "a new leader")
    assert new != old
    hit = receiver.wait_for(lambda h: h.json["data"].get("message_id") == msg_id, 15)
    assert hit.json["type"] == "message.sent"
    assert hook["id"]
    # Clients of the surviving workers still get live events.
    sock = sockets(people["alice"])
    msg2 = add_outbound(db_session, sim_id, people["bob"].user_id)
    record(db_session, msg2, "sent")
    mqtt.message_event(message_id=msg2, state="sent", sim_card_id=sim_id, modem_id=modem_id)
    sock.wait_for("sms_status_update", lambda d: d["message_id"] == msg2)


def test_an_event_no_leader_ever_heard_of_is_delivered_once_by_the_next(
    api, pipeline_env, people, db_session, receiver
):
    """The leader dies; an event is recorded with no MQTT copy at all (lost
    with the old leader's in-memory queue, or never published). The next
    leader derives its delivery from the history."""
    api.post("/api/webhooks", people["bob"], {"url": receiver.url, "events": ["message.delivered"]})
    _modem_id, sim_id = add_modem_and_sim(db_session)
    msg_id = add_outbound(db_session, sim_id, people["bob"].user_id)
    old = wait_until(lambda: leader_pid(pipeline_env), 15, 0.1, "a leader")
    os.kill(old, signal.SIGKILL)
    record(db_session, msg_id, "delivered")
    wait_until(lambda: (p := leader_pid(pipeline_env)) and p != old and p, 15, 0.1, "a new leader")
    hit = receiver.wait_for(lambda h: h.json["data"].get("message_id") == msg_id, 15)
    assert hit.json["type"] == "message.delivered"
    # The new leader replays from its cursor: no second delivery within its rounds.
    holds_for(
        lambda: len([h for h in receiver.hits if h.json["data"].get("message_id") == msg_id]) == 1,
        1.0,
        message="a single delivery across the hand-over",
    )
    assert len([h for h in receiver.hits if h.json["data"].get("message_id") == msg_id]) == 1


def test_a_stop_the_old_leader_never_applied_is_applied_by_the_next(api, pipeline_env, people, db_session):
    """The leader dies with an inbound STOP in its in-memory queue (its MQTT
    copy acknowledged and gone): the next leader applies it from the
    `messages` table, once."""
    _, sim_id = add_modem_and_sim(db_session)
    who = f"+4916{secrets.randbelow(10**8):08d}"
    old = wait_until(lambda: leader_pid(pipeline_env), 15, 0.1, "a leader")
    os.kill(old, signal.SIGKILL)
    with db_session() as s:
        s.add(
            Message(
                direction="inbound",
                sender=who,
                recipient="+4915100000001",
                message="Stop.",
                status="received",
                sim_card_id=sim_id,
            )
        )
        s.commit()
    wait_until(lambda: (p := leader_pid(pipeline_env)) and p != old and p, 15, 0.1, "a new leader")

    def opted_out() -> int:
        with db_session() as s:
            return s.scalar(select(func.count()).select_from(OptOut).where(OptOut.number == who))

    wait_until(opted_out, 15, 0.1, "the opt-out by the next leader")
    holds_for(lambda: opted_out() == 1, 1.0, message="one opt-out row across the hand-over")
    refused = api.post("/api/sms", people["bob"], {"recipient": who, "message": "hello"})
    assert refused.status_code == 422 and refused.json()["code"] == "recipient_opted_out"
