"""One events leader per deployment; when it dies another API process takes
over, and events published in between are not lost (persistent MQTT session)."""
from __future__ import annotations

import os
import signal

import redis as redis_lib

from .conftest import add_modem_and_sim, add_outbound, wait_until


def leader_pid(env) -> int:
    raw = redis_lib.Redis.from_url(env["REDIS_URL"]).get(env["MQTT_PREFIX"] + "leader")
    return int(raw.decode().split(":")[1]) if raw else 0


def test_a_killed_leader_is_replaced_and_its_backlog_delivered(api, pipeline_env, people, mqtt, db_session,
                                                               sockets, receiver):
    hook = api.post("/api/webhooks", people["bob"], {"url": receiver.url, "events": ["message.sent"]}).json()
    modem_id, sim_id = add_modem_and_sim(db_session)
    msg_id = add_outbound(db_session, sim_id, people["bob"].user_id)
    old = leader_pid(pipeline_env)
    assert old
    os.kill(old, signal.SIGKILL)
    # Published while no leader holds the MQTT session: the broker keeps it.
    mqtt.message_event(message_id=msg_id, state="sent", sim_card_id=sim_id, modem_id=modem_id)
    new = wait_until(lambda: (p := leader_pid(pipeline_env)) and p != old and p, 15, 0.1, "a new leader")
    assert new != old
    hit = receiver.wait_for(lambda h: h.json["data"].get("message_id") == msg_id, 15)
    assert hit.json["type"] == "message.sent"
    assert hook["id"]
    # Clients of the surviving workers still get live events.
    sock = sockets(people["alice"])
    msg2 = add_outbound(db_session, sim_id, people["bob"].user_id)
    mqtt.message_event(message_id=msg2, state="sent", sim_card_id=sim_id, modem_id=modem_id)
    sock.wait_for("sms_status_update", lambda d: d["message_id"] == msg2)
