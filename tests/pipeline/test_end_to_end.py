"""End to end: the API under gunicorn, real workers on emulated modems, real
Postgres, Mosquitto and Redis. What a client, a browser and a webhook
receiver see of a message's life."""

from __future__ import annotations

import secrets
import time

from support.waits import holds_for

from smsgw_common.models import Message, MessageEvent

from .conftest import verify_signature, wait_until

FINAL = {"delivered", "sent", "unknown", "failed", "expired"}


def recipient() -> str:
    return f"+4917{secrets.randbelow(10**8):08d}"


def send(api, who, **body):
    resp = api.post("/api/sms", who, {"recipient": recipient(), "message": "hello", **body})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_a_message_is_seen_sent_then_delivered_by_a_browser_and_a_webhook(api, people, workers, sockets, receiver):
    (worker,) = workers(1)
    hook = api.post(
        "/api/webhooks", people["bob"], {"url": receiver.url, "events": ["message.sent", "message.delivered"]}
    ).json()
    sock = sockets(people["bob"])
    queued = send(api, people["bob"], message="Your code is 481516")
    mid = queued["message_id"]
    assert queued["sim_card_id"] == worker.sim_id
    for state in ("sent", "delivered"):
        event = sock.wait_for("sms_status_update", lambda d, s=state: d["message_id"] == mid and d["status"] == s, 15)
        assert event["message"] == "Your code is 481516" and event["sender_number"] == worker.number
        hit = receiver.wait_for(
            lambda h, s=state: h.json["type"] == f"message.{s}" and h.json["data"]["message_id"] == mid, 15
        )
        assert verify_signature(hook["secret"], hit)
    detail = api.get(f"/api/sms/{mid}", people["bob"]).json()["message"]
    assert [e["state"] for e in detail["events"]][:4] == ["queued", "sending", "sent", "delivered"]
    assert all(e["at"] for e in detail["events"])
    assert [s["number"] for s in worker.sent()] == [queued["recipient"]]


def test_an_inbound_sms_reaches_a_browser_and_a_webhook(api, people, workers, sockets, receiver):
    (worker,) = workers(1)
    hook = api.post("/api/webhooks", people["bob"], {"url": receiver.url, "events": ["message.received"]}).json()
    sock = sockets(people["carol"])
    worker.inject("+4917699887766", "Is the shop open on Sunday?")
    got = sock.wait_for("sms_received", lambda d: d["sender"] == "+4917699887766", 15)
    assert got["message"] == "Is the shop open on Sunday?" and got["sim_card_id"] == worker.sim_id
    hit = receiver.wait_for(lambda h: h.json["data"]["sender"] == "+4917699887766", 15)
    assert hit.json["data"]["message"] == "Is the shop open on Sunday?" and verify_signature(hook["secret"], hit)


def test_stop_from_a_phone_blocks_further_messages_and_start_lifts_it(api, people, workers):
    (worker,) = workers(1)
    phone = recipient()
    worker.inject(phone, "STOP")

    def refused():
        r = api.post("/api/sms", people["bob"], {"recipient": phone, "message": "promo"})
        return r.status_code == 422 and r.json()["code"] == "recipient_opted_out"

    wait_until(refused, 15, 0.2, "the opt-out to take effect")
    worker.inject(phone, "START")
    wait_until(
        lambda: api.post("/api/sms", people["bob"], {"recipient": phone, "message": "welcome back"}).status_code == 200,
        15,
        0.2,
        "the opt-in",
    )


def test_idempotent_retries_create_one_message(api, people, workers, db_session):
    (worker,) = workers(1)
    key = secrets.token_hex(8)
    body = {"recipient": recipient(), "message": "pay 10 EUR"}
    answers = [api.post("/api/sms", people["bob"], body, headers={"Idempotency-Key": key}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len({a.json()["message_id"] for a in answers}) == 1
    other = api.post("/api/sms", people["bob"], {**body, "message": "pay 1000 EUR"}, headers={"Idempotency-Key": key})
    assert other.status_code == 409
    wait_until(lambda: [s for s in worker.sent() if s["number"] == body["recipient"]], 15, 0.1, "the send")
    # Several claim rounds: the repeated requests must not make a second send.
    holds_for(lambda: len([s for s in worker.sent() if s["number"] == body["recipient"]]) == 1, 1.0, message="one send")
    assert len([s for s in worker.sent() if s["number"] == body["recipient"]]) == 1
    with db_session() as s:
        assert s.query(Message).filter_by(idempotency_key=key).count() == 1


def test_a_killed_worker_loses_nothing_and_its_queue_moves(api, people, workers, db_session):
    # One message at a time and a slow modem: the doomed worker holds a queue.
    doomed, survivor = workers(2, send_latency=0.7, WORKER_CLAIM_BATCH=1, WORKER_LEASE_SECONDS=3)
    ids = [send(api, people["bob"])["message_id"] for _ in range(8)]
    with db_session() as s:
        on_doomed = [m.id for m in s.query(Message).filter(Message.id.in_(ids), Message.sim_card_id == doomed.sim_id)]
    assert len(on_doomed) >= 2
    wait_until(lambda: doomed.sent(), 10, 0.05, "the doomed worker to start sending")
    doomed.kill()

    def all_final():
        with db_session() as s:
            rows = s.query(Message).filter(Message.id.in_(ids)).all()
            return all(m.status in FINAL for m in rows) and rows

    rows = wait_until(all_final, 40, 0.2, "every message to reach a final state")
    assert {m.status for m in rows} <= {"delivered", "sent", "unknown"}
    with db_session() as s:
        moved = {
            e.message_id
            for e in s.query(MessageEvent).filter(
                MessageEvent.message_id.in_(on_doomed), MessageEvent.detail.like(f"rerouted from SIM {doomed.sim_id}%")
            )
        }
    assert moved, "the doomed SIM's queue was not rerouted"
    survivor_sent = {s["number"] for s in survivor.sent()}
    for m in rows:
        if m.id in moved:
            assert m.sim_card_id == survivor.sim_id and m.recipient in survivor_sent


def test_a_sim_never_exceeds_its_per_minute_limit(api, people, workers):
    (limited, other) = workers(2)
    resp = api.http.put(
        api.url(f"/api/sim-cards/{limited.sim_id}"),
        headers=people["alice"].headers,
        json={"limit_per_minute": 3},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    # A cache's lifetime (ROUTING_CACHE_SECONDS) has no outside sign: every API
    # process sees the new limit once its SIM snapshot is this old.
    time.sleep(1.2)
    answers = [
        api.post(
            "/api/sms",
            people["bob"],
            {"recipient": recipient(), "message": "hi", "sim_card_id": limited.sim_id, "on_unavailable": "fail"},
        )
        for _ in range(5)
    ]
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 3 and codes.count(429) == 2, codes
    assert answers[-1].json()["code"] == "sim_limit_reached"
    wait_until(lambda: len(limited.sent()) >= 3, 10, 0.1, "the three accepted sends")
    holds_for(lambda: len(limited.sent()) == 3, 1.0, message="no send past the limit")
    stamps = sorted(s["at"] for s in limited.sent())
    assert len(stamps) == 3
    # Unpinned traffic goes around the full SIM.
    for _ in range(3):
        assert send(api, people["bob"])["sim_card_id"] == other.sim_id
