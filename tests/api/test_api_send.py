"""POST /api/sms and friends: validation, routing, idempotency, opt-outs,
batches, detail, cancel, and the MQTT wake-up after the commit."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import text
from support.waits import holds_for, wait_until

from .api_support import api_env, count_rows, make_sim

RECIPIENT = "+4915112345678"
# Scheduled sends may be at most a year ahead (docs/api-contract.md, "Validation").
LATER = (datetime.now(UTC) + timedelta(days=200)).date().isoformat()
LATER_NEXT_DAY = (datetime.now(UTC) + timedelta(days=201)).date().isoformat()


def send(client, persona, body, **headers):
    return client.post("/api/sms", json=body, headers={**persona.headers, **headers})


def test_it_queues_a_message_in_the_seed_shape(client, bob, sim, engine):
    r = send(client, bob, {"recipient": RECIPIENT, "message": "Hello from the gateway", "sim_card_id": sim.id})
    assert r.status_code == 200
    body = r.get_json()
    assert body["message"] == "SMS queued for sending" and body["sender_sim"] == sim.number
    assert body["status"] == "queued" and body["encoding"] == "GSM-7" and body["segments"] == 1
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM messages WHERE id = :id"), {"id": body["message_id"]}).mappings().one()
        events = conn.execute(
            text("SELECT state, source FROM message_events WHERE message_id = :id"), {"id": body["message_id"]}
        ).all()
        audit = (
            conn.execute(
                text("SELECT * FROM logs WHERE action = 'send_sms' AND details LIKE :d"),
                {"d": f"SMS {body['message_id']} %"},
            )
            .mappings()
            .one()
        )
    assert row["status"] == "queued" and row["sim_card_id"] == sim.id and row["queued_at"] is not None
    assert row["user_id"] == bob.id and row["direction"] == "outbound"
    assert [tuple(e) for e in events] == [("queued", "api")]
    assert audit["actor"].startswith("bob") and audit["ip"] == "127.0.0.1"
    assert audit["request_id"] == r.headers["X-Request-ID"]


def test_it_counts_segments_and_picks_the_encoding(client, bob, sim):
    r = send(client, bob, {"recipient": RECIPIENT, "message": "Grüße 😀", "sim_card_id": sim.id})
    assert (r.get_json()["encoding"], r.get_json()["segments"]) == ("UCS-2", 1)
    r = send(client, bob, {"recipient": RECIPIENT, "message": "€" * 81, "sim_card_id": sim.id})
    assert (r.get_json()["encoding"], r.get_json()["segments"]) == ("GSM-7", 2)  # 162 septets


@pytest.mark.parametrize(
    "body,field",
    [
        ({"message": "hi"}, "recipient"),
        ({"recipient": "", "message": "hi"}, "recipient"),
        ({"recipient": "+49abc", "message": "hi"}, "recipient"),
        ({"recipient": "+0123456", "message": "hi"}, "recipient"),
        ({"recipient": "+1234567890123456", "message": "hi"}, "recipient"),
        ({"recipient": 4915112345678, "message": "hi"}, "recipient"),
        ({"recipient": RECIPIENT}, "message"),
        ({"recipient": RECIPIENT, "message": "   "}, "message"),
        ({"recipient": RECIPIENT, "message": "x" * 1531}, "message"),
        ({"recipient": RECIPIENT, "message": "hi", "priority": "urgent"}, "priority"),
        ({"recipient": RECIPIENT, "message": "hi", "send_at": "tomorrow"}, "send_at"),
        ({"recipient": RECIPIENT, "message": "hi", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"recipient": RECIPIENT, "message": "hi", "on_unavailable": "retry"}, "on_unavailable"),
        ({"recipient": RECIPIENT, "message": "hi", "sim_card_id": "sim1"}, "sim_card_id"),
        ({"recipient": RECIPIENT, "message": "hi", "sim_card_id": 987654}, "sim_card_id"),
    ],
)
def test_it_refuses_an_invalid_message_without_writing(client, bob, engine, body, field):
    before = count_rows(engine, "messages")
    r = send(client, bob, body)
    assert r.status_code == 400, r.get_json()
    assert field in r.get_json()["fields"] and r.get_json()["error"]
    assert count_rows(engine, "messages") == before


def test_it_refuses_an_opted_out_recipient(client, bob, sim, engine):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO opt_outs (number, source) VALUES ('+4915199999999', 'admin')"))
    before = count_rows(engine, "messages")
    r = send(client, bob, {"recipient": "+49 151 99999999", "message": "promo", "sim_card_id": sim.id})
    assert r.status_code == 422 and r.get_json()["code"] == "recipient_opted_out"
    assert count_rows(engine, "messages") == before


def test_it_answers_a_repeated_idempotency_key_with_the_original(client, bob, sim, engine):
    body = {"recipient": RECIPIENT, "message": "once only", "sim_card_id": sim.id}
    first = send(client, bob, body, **{"Idempotency-Key": "order-42"})
    again = send(client, bob, body, **{"Idempotency-Key": "order-42"})
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count_rows(engine, "messages", "idempotency_key = 'order-42'") == 1
    # Still the original answer once the message has moved on.
    with engine.begin() as conn:
        conn.execute(text("UPDATE messages SET status = 'sent' WHERE idempotency_key = 'order-42'"))
    later = send(client, bob, body, **{"Idempotency-Key": "order-42"})
    assert later.get_json() == first.get_json()
    other = send(client, bob, {**body, "message": "something else"}, **{"Idempotency-Key": "order-42"})
    assert other.status_code == 409 and other.get_json()["code"] == "idempotency_mismatch"


def test_it_routes_to_an_online_sim_with_the_fewest_queued_segments(client, bob, engine):
    busy, idle, offline = make_sim(engine), make_sim(engine), make_sim(engine, online=False)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE sim_cards SET status = 'inactive' WHERE id NOT IN (:a, :b, :c)"),
            {"a": busy.id, "b": idle.id, "c": offline.id},
        )
    try:
        for _ in range(2):
            assert (
                send(client, bob, {"recipient": RECIPIENT, "message": "x", "sim_card_id": busy.id}).status_code == 200
            )
        r = send(client, bob, {"recipient": RECIPIENT, "message": "route me"})
        assert r.status_code == 200 and r.get_json()["sim_card_id"] == idle.id
        with engine.begin() as conn:
            conn.execute(text("UPDATE sim_cards SET limit_per_minute = 1 WHERE id = :id"), {"id": idle.id})
        r = send(client, bob, {"recipient": RECIPIENT, "message": "route me again"})
        assert r.get_json()["sim_card_id"] == busy.id  # idle used its minute
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE sim_cards SET status = 'inactive' WHERE id IN (:a, :b)"), {"a": busy.id, "b": idle.id}
            )
        r = send(client, bob, {"recipient": RECIPIENT, "message": "only the offline one is left"})
        assert r.status_code == 200 and r.get_json()["sim_card_id"] == offline.id
        with engine.begin() as conn:
            conn.execute(text("UPDATE sim_cards SET status = 'inactive'"))
        r = send(client, bob, {"recipient": RECIPIENT, "message": "no SIM"})
        assert r.status_code == 503 and r.get_json()["code"] == "no_sim_available"
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE sim_cards SET status = 'active'"))


def test_a_pinned_sim_waits_or_fails_as_asked(client, bob, engine):
    offline = make_sim(engine, online=False)
    body = {"recipient": RECIPIENT, "message": "pinned", "sim_card_id": offline.id}
    assert send(client, bob, body).status_code == 200
    r = send(client, bob, {**body, "on_unavailable": "fail"})
    assert r.status_code == 503 and r.get_json()["code"] == "sim_unavailable"
    limited = make_sim(engine, limit_per_day=1)
    body = {"recipient": RECIPIENT, "message": "pinned", "sim_card_id": limited.id, "on_unavailable": "fail"}
    assert send(client, bob, body).status_code == 200
    r = send(client, bob, body)
    assert r.status_code == 429 and r.get_json()["code"] == "sim_limit_reached"
    inactive = make_sim(engine, status="inactive")
    r = send(client, bob, {"recipient": RECIPIENT, "message": "x", "sim_card_id": inactive.id})
    assert r.status_code == 409


def test_it_keeps_schedule_priority_and_expiry(client, bob, sim):
    r = send(
        client,
        bob,
        {
            "recipient": RECIPIENT,
            "message": "later",
            "sim_card_id": sim.id,
            "priority": "high",
            "send_at": f"{LATER}T10:00:00Z",
            "expires_at": f"{LATER_NEXT_DAY}T10:00:00+00:00",
        },
    )
    assert r.status_code == 200
    detail = client.get(f"/api/sms/{r.get_json()['message_id']}", headers=bob.headers).get_json()["message"]
    assert detail["priority"] == "high" and detail["send_at"].startswith(f"{LATER}T10:00")
    assert detail["expires_at"].startswith(f"{LATER_NEXT_DAY}T10:00")


def test_a_batch_is_all_or_nothing(client, bob, sim, engine):
    before = count_rows(engine, "messages")
    r = client.post(
        "/api/sms/batch",
        headers=bob.headers,
        json={
            "messages": [
                {"recipient": RECIPIENT, "message": "one", "sim_card_id": sim.id},
                {"recipient": "not a number", "message": "two", "sim_card_id": sim.id},
            ]
        },
    )
    assert r.status_code == 400 and "messages[1].recipient" in r.get_json()["fields"]
    assert count_rows(engine, "messages") == before
    r = client.post(
        "/api/sms/batch",
        headers=bob.headers,
        json={"recipients": [RECIPIENT, "+4915187654321"], "message": "to both", "sim_card_id": sim.id},
    )
    assert r.status_code == 201
    body = r.get_json()
    assert len(body["messages"]) == 2
    assert count_rows(engine, "messages", "batch_id = :b", b=body["batch_id"]) == 2


def test_a_batch_with_an_opted_out_recipient_writes_nothing(client, bob, sim, engine):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO opt_outs (number, source) VALUES ('+4915188888888', 'admin')"))
    before = count_rows(engine, "messages")
    r = client.post(
        "/api/sms/batch",
        headers=bob.headers,
        json={"recipients": [RECIPIENT, "+4915188888888"], "message": "x", "sim_card_id": sim.id},
    )
    assert r.status_code == 422 and r.get_json()["opted_out"] == ["+4915188888888"]
    assert count_rows(engine, "messages") == before


def test_it_previews_encoding_and_segments(client, charlie):
    r = client.post("/api/sms/preview", json={"message": "a" * 161}, headers=charlie.headers)
    body = r.get_json()
    assert (body["encoding"], body["segments"], body["per_segment"], body["characters"]) == ("GSM-7", 2, 153, 161)
    assert body["within_limit"] is True


def test_it_shows_a_message_with_its_history_and_cancels_it(client, alice, bob, sim):
    message_id = send(client, bob, {"recipient": RECIPIENT, "message": "cancel me", "sim_card_id": sim.id}).get_json()[
        "message_id"
    ]
    other = send(client, alice, {"recipient": RECIPIENT, "message": "alice's", "sim_card_id": sim.id}).get_json()[
        "message_id"
    ]
    assert client.post(f"/api/sms/{other}/cancel", headers=bob.headers).status_code == 403
    r = client.post(f"/api/sms/{message_id}/cancel", headers=bob.headers)
    assert r.status_code == 200 and r.get_json()["status"] == "cancelled"
    again = client.post(f"/api/sms/{message_id}/cancel", headers=bob.headers)
    assert again.status_code == 409 and again.get_json()["status"] == "cancelled"
    detail = client.get(f"/api/sms/{message_id}", headers=bob.headers).get_json()["message"]
    assert [e["state"] for e in detail["events"]] == ["queued", "cancelled"]
    assert detail["cancelled_at"] and detail["parts"] == []
    assert client.get("/api/sms/98765432", headers=bob.headers).status_code == 404


def _subscribe(topic: str):
    received: list[dict] = []
    ready = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = lambda cl, u, msg: received.append(json.loads(msg.payload))
    c.connect("127.0.0.1", 1883)
    c.loop_start()
    assert ready.wait(5), "could not subscribe to the test broker"
    return c, received


def test_it_publishes_the_wake_up_to_the_chosen_modem(client, bob, sim, mqtt_prefix):
    c, received = _subscribe(f"{mqtt_prefix}modems/{sim.modem_id}/outbox")
    try:
        message_id = send(
            client, bob, {"recipient": RECIPIENT, "message": "wake up", "sim_card_id": sim.id}
        ).get_json()["message_id"]
        wait_until(lambda: {"message_id": message_id} in received, 5, 0.05, lambda: f"the wake-up; got {received}")
    finally:
        c.loop_stop()
        c.disconnect()


def test_a_batch_wakes_each_modem_once_and_replays_by_its_idempotency_key(client, bob, sim, mqtt_prefix):
    c, received = _subscribe(f"{mqtt_prefix}modems/{sim.modem_id}/outbox")
    body = {"recipients": [RECIPIENT, "+4915112345679"], "message": "to both", "sim_card_id": sim.id}
    headers = {**bob.headers, "Idempotency-Key": "batch-7"}
    try:
        first = client.post("/api/sms/batch", json=body, headers=headers)
        assert first.status_code == 201, first.get_json()
        ids = [m["message_id"] for m in first.get_json()["messages"]]
        wait_until(lambda: received, 5, 0.05, "the batch's wake-up")
        holds_for(lambda: len(received) == 1, 0.2, message="one wake-up for the modem")
        assert received == [{"message_id": ids[0]}]
    finally:
        c.loop_stop()
        c.disconnect()
    again = client.post("/api/sms/batch", json=body, headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["batch_id"] == first.get_json()["batch_id"]
    assert [m["message_id"] for m in again.get_json()["messages"]] == ids


def test_it_accepts_messages_while_the_broker_is_down(database_url, redis_url, mqtt_prefix, bob, engine):
    from smsgw_api import create_app
    from smsgw_api.core.extensions import bus, db

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens here once closed
    app = create_app({"ENV": api_env(database_url, redis_url, mqtt_prefix, MQTT_PORT=closed_port)})
    try:
        sim = make_sim(engine)
        client = app.test_client()
        started = time.monotonic()
        for i in range(3):
            r = send(client, bob, {"recipient": RECIPIENT, "message": f"broker down {i}", "sim_card_id": sim.id})
            assert r.status_code == 200
        assert time.monotonic() - started < 3
        assert count_rows(engine, "messages", "sim_card_id = :s AND status = 'queued'", s=sim.id) == 3
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.get_json()["checks"]["broker"]["ok"] is False
    finally:
        bus.stop(app)
        db.dispose(app)


def test_it_takes_the_api_key_from_the_json_body_as_the_seed_did(client, bob, sim):
    r = client.post(
        "/api/sms",
        json={"recipient": RECIPIENT, "message": "key in body", "sim_card_id": sim.id, "api_key": bob.api_key},
    )
    assert r.status_code == 200


def test_the_access_log_line_of_a_send_names_the_message_it_created(client, bob, sim, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="smsgw_api.access"):
        r = send(client, bob, {"recipient": RECIPIENT, "message": "trace me", "sim_card_id": sim.id})
        refused = send(client, bob, {"recipient": "not-a-number", "message": "x"})
    assert r.status_code == 200 and refused.status_code == 400
    lines = [rec for rec in caplog.records if rec.name == "smsgw_api.access" and rec.path == "/api/sms"]
    assert [getattr(rec, "message_id", None) for rec in lines] == [r.get_json()["message_id"], None]


def test_a_cancel_is_published_as_a_message_event(client, bob, sim, env):
    prefix = env["MQTT_PREFIX"]
    got, ready = [], threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, *a: c.subscribe(prefix + "events/messages", qos=1)
    sub.on_subscribe = lambda *a: ready.set()  # the broker acknowledged: nothing published after is missed
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    sub.connect("127.0.0.1", 1883)
    sub.loop_start()
    try:
        assert ready.wait(5)
        r = send(
            client,
            bob,
            {"recipient": RECIPIENT, "message": "never mind", "sim_card_id": sim.id, "send_at": f"{LATER}T00:00:00Z"},
        )
        mid = r.get_json()["message_id"]
        assert client.post(f"/api/sms/{mid}/cancel", headers=bob.headers).status_code == 200
        wait_until(lambda: any(e.get("message_id") == mid for e in got), 5, 0.05, "the cancel event")
    finally:
        sub.loop_stop()
        sub.disconnect()
    [event] = [e for e in got if e.get("message_id") == mid]
    assert event["state"] == "cancelled" and event["sim_card_id"] == sim.id


def test_it_refuses_a_recipient_without_its_country_code_instead_of_guessing_one(client, bob, sim, engine):
    before = count_rows(engine, "messages")
    r = send(client, bob, {"recipient": "7911 123456", "message": "which country?", "sim_card_id": sim.id})
    assert r.status_code == 400
    assert "country code" in r.get_json()["fields"]["recipient"]
    assert count_rows(engine, "messages") == before
    r = send(client, bob, {"recipient": "0049 151 1234-5678", "message": "00 is +", "sim_card_id": sim.id})
    assert r.status_code == 200 and r.get_json()["recipient"] == "+4915112345678"
