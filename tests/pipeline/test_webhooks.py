"""Signed webhooks: registration rules, signatures, the delivery log, retries
with backoff, the failing mark, de-duplication of repeated events, and
deliveries derived from the message history in Postgres (not from MQTT)."""

from __future__ import annotations

import itertools
import secrets
import time
from datetime import UTC, datetime

from sqlalchemy import select, text
from support.waits import holds_for

from smsgw_common import queue as history
from smsgw_common.models import Message, WebhookDelivery

from .conftest import add_modem_and_sim, add_outbound, verify_signature, wait_until

CURSOR = "webhooks.message_events"


def record(db_session, msg_id: int, state: str, at=None, **fields) -> int:
    """What a worker does before it publishes: the state change and its
    history row, committed. Returns the history row's id."""
    with db_session() as s:
        ev = history.record(s, s.get(Message, msg_id), state, source="tests", at=at, **fields)
        s.commit()
        return ev.id


def hits_for(receiver, msg_id: int) -> list:
    return [h for h in list(receiver.hits) if h.json.get("data", {}).get("message_id") == msg_id]


def deliveries_of(db_session, hook_id: int) -> list[WebhookDelivery]:
    with db_session() as s:
        return s.scalars(select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook_id)).all()


def register(api, who, url, **body):
    resp = api.post("/api/webhooks", who, {"url": url, **body})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_it_refuses_urls_that_are_not_plain_http_receivers(api, people):
    bad = {
        "ftp://127.0.0.1/x": "http or https",
        "http://user:pw@127.0.0.1/x": "credentials",
        "http://169.254.169.254/latest/meta-data": "not a routable",
        "not a url": "http or https",
    }
    for url, reason in bad.items():
        resp = api.post("/api/webhooks", people["bob"], {"url": url})
        assert resp.status_code == 400, (url, resp.text)
        body = resp.json()
        assert body["code"] == "validation_error" and reason in body["fields"]["url"], (url, body)


def test_it_names_unknown_events_and_weak_secrets(api, people):
    resp = api.post(
        "/api/webhooks",
        people["bob"],
        {"url": "http://127.0.0.1:9/x", "events": ["message.sent", "sms.teleported"], "secret": "short"},
    )
    assert resp.status_code == 400
    fields = resp.json()["fields"]
    assert "sms.teleported" in fields["events"] and "16" in fields["secret"]


def test_a_viewer_cannot_register_a_webhook(api, people):
    resp = api.post("/api/webhooks", people["carol"], {"url": "http://127.0.0.1:9/x"})
    assert resp.status_code == 403


def test_a_user_neither_sees_nor_deletes_another_users_webhook(api, people):
    hook = register(api, people["bob"], "http://127.0.0.1:9/bob")
    assert hook["id"] not in [h["id"] for h in api.get("/api/webhooks", people["dave"]).json()["webhooks"]]
    assert api.delete(f"/api/webhooks/{hook['id']}", people["dave"]).status_code == 404
    assert hook["id"] in [h["id"] for h in api.get("/api/webhooks", people["alice"]).json()["webhooks"]]
    assert api.delete(f"/api/webhooks/{hook['id']}", people["bob"]).status_code == 200
    assert api.get(f"/api/webhooks/{hook['id']}/deliveries", people["bob"]).status_code == 404


def test_the_secret_is_shown_once(api, people):
    hook = register(api, people["bob"], "http://127.0.0.1:9/once")
    assert hook["secret"].startswith("whsec_")
    listed = [h for h in api.get("/api/webhooks", people["bob"]).json()["webhooks"] if h["id"] == hook["id"]]
    assert "secret" not in listed[0]


def test_a_test_delivery_is_signed_and_logged(api, people, receiver):
    hook = register(api, people["bob"], receiver.url, secret="s" * 32)
    resp = api.post(f"/api/webhooks/{hook['id']}/test", people["bob"])
    assert resp.status_code == 202
    hit = receiver.wait_for(lambda h: h.headers.get("X-SMSGW-Event-Id") == resp.json()["event_id"])
    assert verify_signature("s" * 32, hit)
    assert not verify_signature("t" * 32, hit)
    assert abs(int(hit.headers["X-SMSGW-Timestamp"]) - time.time()) < 30
    assert hit.json["type"] == "webhook.test"
    log = wait_until(
        lambda: [
            d
            for d in api.get(f"/api/webhooks/{hook['id']}/deliveries", people["bob"]).json()["deliveries"]
            if d["status"] == "delivered"
        ],
        5,
        0.1,
        "the delivery log",
    )
    assert log[0]["attempts"] == 1 and log[0]["last_status_code"] == 200


def test_message_events_reach_the_receiver_signed(api, people, receiver, mqtt, db_session):
    hook = register(api, people["bob"], receiver.url, events=["message.sent", "message.delivered"])
    _modem_id, sim_id = add_modem_and_sim(db_session)
    msg_id = add_outbound(db_session, sim_id, people["bob"].user_id, text="parcel arrives today")
    for state in ("sending", "sent", "delivered"):  # sending is not subscribable
        record(db_session, msg_id, state)
        mqtt.message_event(message_id=msg_id, state=state, sim_card_id=sim_id)
    for kind in ("message.sent", "message.delivered"):
        hit = receiver.wait_for(lambda h, k=kind: h.json["type"] == k and h.json["data"]["message_id"] == msg_id)
        assert verify_signature(hook["secret"], hit)
        assert hit.headers["X-SMSGW-Event-Id"] == hit.json["id"]
        assert hit.json["data"]["message"] == "parcel arrives today"
    holds_for(
        lambda: not [h for h in receiver.hits if h.json["data"].get("status") == "sending"],
        0.3,
        message="no hook for the unsubscribable sending state",
    )


def test_a_repeated_event_is_delivered_once(api, people, receiver, mqtt, db_session):
    register(api, people["bob"], receiver.url, events=["message.failed"])
    _modem_id, sim_id = add_modem_and_sim(db_session)
    msg_id = add_outbound(db_session, sim_id, people["bob"].user_id)
    at = datetime.now(UTC)
    record(db_session, msg_id, "failed", at=at, error_code=500, error_text="unknown error")
    for _ in range(3):  # MQTT QoS 1 may deliver one event more than once
        mqtt.message_event(
            message_id=msg_id, state="failed", sim_card_id=sim_id, at=at, error_code=500, error_text="unknown error"
        )
    receiver.wait_for(lambda h: h.json["data"]["message_id"] == msg_id)
    # The repeats arrive within the dispatcher's next rounds, if at all.
    holds_for(lambda: len(hits_for(receiver, msg_id)) == 1, 0.5, message="one delivery of the repeated event")
    hits = [h for h in receiver.hits if h.json["data"]["message_id"] == msg_id]
    assert len(hits) == 1 and hits[0].json["data"]["error_code"] == 500


def test_a_users_hook_gets_only_their_own_outbound_messages(api, people, receiver, mqtt, db_session):
    register(api, people["dave"], receiver.url, events=["message.sent", "message.received"])
    _modem_id, sim_id = add_modem_and_sim(db_session)
    bobs = add_outbound(db_session, sim_id, people["bob"].user_id)
    daves = add_outbound(db_session, sim_id, people["dave"].user_id)
    with db_session() as s:
        inbound = Message(
            direction="inbound", sender="+4917611111111", message="hello gateway", status="received", sim_card_id=sim_id
        )
        s.add(inbound)
        s.commit()
    for mid in (bobs, daves):
        record(db_session, mid, "sent")
        mqtt.message_event(message_id=mid, state="sent", sim_card_id=sim_id)
    record(db_session, inbound.id, "received")
    mqtt.message_event(
        message_id=inbound.id,
        state="received",
        direction="inbound",
        sim_card_id=sim_id,
        sender="+4917611111111",
        message="hello gateway",
    )
    receiver.wait_for(lambda h: h.json["data"]["message_id"] == daves)
    receiver.wait_for(lambda h: h.json["data"]["message_id"] == inbound.id)
    holds_for(lambda: not hits_for(receiver, bobs), 0.3, message="nothing about Bob's message reaches Dave's hook")


def test_it_retries_with_backoff_then_marks_the_hook_failing(api, people, receiver, db_session):
    receiver.status = 503
    hook = register(api, people["bob"], receiver.url)
    resp = api.post(f"/api/webhooks/{hook['id']}/test", people["bob"])
    event_id = resp.json()["event_id"]

    def gave_up():
        d = api.get(f"/api/webhooks/{hook['id']}/deliveries", people["bob"]).json()["deliveries"][0]
        return d if d["status"] == "failed" else None

    delivery = wait_until(gave_up, 15, 0.1, "the delivery to give up")
    hits = [h for h in receiver.hits if h.headers["X-SMSGW-Event-Id"] == event_id]
    assert len(hits) == 3 == delivery["attempts"]  # WEBHOOK_MAX_ATTEMPTS in the test env
    assert delivery["last_status_code"] == 503 and "503" in delivery["last_error"]
    gaps = [b.at - a.at for a, b in itertools.pairwise(hits)]
    # Base 0.3 s doubling, with +-10% jitter and up to one poll interval late.
    assert 0.25 <= gaps[0] < 1.5 and gaps[1] >= 0.5, gaps
    assert [h.headers["X-SMSGW-Delivery-Attempt"] for h in hits] == ["1", "2", "3"]
    listed = [h for h in api.get("/api/webhooks", people["bob"]).json()["webhooks"] if h["id"] == hook["id"]][0]
    assert listed["failing"] is True and listed["consecutive_failures"] == 3

    receiver.status = 200
    api.post(f"/api/webhooks/{hook['id']}/test", people["bob"])
    wait_until(
        lambda: (
            not [h for h in api.get("/api/webhooks", people["bob"]).json()["webhooks"] if h["id"] == hook["id"]][0][
                "failing"
            ]
        ),
        10,
        0.1,
        "the failing mark to clear",
    )


def test_a_delivery_row_is_the_queue(api, people, receiver, db_session):
    """Whatever process wrote a pending row (or crashed after writing it), the
    leader sends it: the table is the queue, not any process's memory."""
    from smsgw_common.models import Webhook

    with db_session() as s:
        hook = Webhook(user_id=people["bob"].user_id, url=receiver.url, events=["message.sent"], secret="r" * 32)
        s.add(hook)
        s.flush()
        event_id = secrets.token_hex(8)
        s.add(
            WebhookDelivery(
                webhook_id=hook.id,
                event_id=event_id,
                event_type="message.sent",
                payload={"id": event_id, "type": "message.sent", "data": {"message_id": 0}},
            )
        )
        s.commit()
    hit = receiver.wait_for(lambda h: h.headers.get("X-SMSGW-Event-Id") == event_id, 10)
    assert verify_signature("r" * 32, hit)


def test_an_event_whose_mqtt_copy_never_arrived_is_delivered_exactly_once(api, people, receiver, db_session):
    """Postgres is the truth: a history row alone (its MQTT copy lost, or
    acknowledged by a leader that died with it in memory) is delivered."""
    hook = register(api, people["bob"], receiver.url, events=["message.sent"])
    _modem_id, sim_id = add_modem_and_sim(db_session)
    msg_id = add_outbound(db_session, sim_id, people["bob"].user_id, text="no mqtt for this one")
    record(db_session, msg_id, "sent")  # and nothing published
    hit = receiver.wait_for(lambda h: h.json["data"].get("message_id") == msg_id, 10)
    assert verify_signature(hook["secret"], hit) and hit.json["data"]["message"] == "no mqtt for this one"
    # Several dispatcher rounds: none may deliver it again.
    holds_for(lambda: len(hits_for(receiver, msg_id)) == 1, 1.0, message="a single delivery")
    assert [d.event_id for d in deliveries_of(db_session, hook["id"])] == [hit.json["id"]]


def test_replaying_the_history_never_duplicates_a_delivery(api, people, receiver, db_session, mqtt):
    hook = register(api, people["bob"], receiver.url, events=["message.sent", "message.delivered"])
    _modem_id, sim_id = add_modem_and_sim(db_session)
    msg_id = add_outbound(db_session, sim_id, people["bob"].user_id)
    first = record(db_session, msg_id, "sent")
    last = record(db_session, msg_id, "delivered")
    wait_until(lambda: len(hits_for(receiver, msg_id)) == 2, 10, 0.05, "both deliveries")
    ids = sorted(h.json["id"] for h in hits_for(receiver, msg_id))
    # An operator (or a restore) moves the cursor back over both events.
    with db_session() as s:
        s.execute(text("UPDATE event_cursors SET last_id = :c WHERE name = :n"), {"c": first - 1, "n": CURSOR})
        s.commit()
    mqtt.message_event(message_id=msg_id, state="delivered", sim_card_id=sim_id)  # wakes the dispatcher

    def caught_up():
        with db_session() as s:
            return s.scalar(text("SELECT last_id FROM event_cursors WHERE name = :n"), {"n": CURSOR}) >= last

    wait_until(caught_up, 10, 0.05, "the cursor to pass the replayed events again")
    holds_for(
        lambda: sorted(h.json["id"] for h in hits_for(receiver, msg_id)) == ids,
        0.5,
        message=f"the replay delivers nothing twice: {ids}",
    )
    assert sorted(d.event_id for d in deliveries_of(db_session, hook["id"])) == ids


def test_an_event_committed_after_a_later_one_is_not_skipped(api, people, receiver, db_session, mqtt):
    """History ids come from a sequence; a writer that took id N can commit
    after another committed N+1. The cursor must not jump over N."""
    register(api, people["bob"], receiver.url, events=["message.sent"])
    _modem_id, sim_id = add_modem_and_sim(db_session)
    slow_msg = add_outbound(db_session, sim_id, people["bob"].user_id)
    fast_msg = add_outbound(db_session, sim_id, people["bob"].user_id)
    slow = db_session()
    try:
        history.record(slow, slow.get(Message, slow_msg), "sent", source="tests")
        slow.flush()  # id N taken, not committed
        record(db_session, fast_msg, "sent")  # id N+1, committed
        mqtt.message_event(message_id=fast_msg, state="sent", sim_card_id=sim_id)
        receiver.wait_for(lambda h: h.json["data"].get("message_id") == fast_msg, 10)
        # The late commit is the case under test: the dispatcher moves on meanwhile.
        time.sleep(0.6)
        slow.commit()
    finally:
        slow.close()
    receiver.wait_for(lambda h: h.json["data"].get("message_id") == slow_msg, 10, "the late event")
    holds_for(
        lambda: len(hits_for(receiver, slow_msg)) == 1 and len(hits_for(receiver, fast_msg)) == 1,
        0.5,
        message="one delivery each",
    )
    assert len(hits_for(receiver, slow_msg)) == 1 and len(hits_for(receiver, fast_msg)) == 1


def test_the_wake_up_path_delivers_promptly(api, people, receiver, db_session, mqtt):
    register(api, people["bob"], receiver.url, events=["message.sent"])
    _modem_id, sim_id = add_modem_and_sim(db_session)
    latencies = []
    for _ in range(5):
        msg_id = add_outbound(db_session, sim_id, people["bob"].user_id)
        start = time.monotonic()
        record(db_session, msg_id, "sent")
        mqtt.message_event(message_id=msg_id, state="sent", sim_card_id=sim_id)
        hit = receiver.wait_for(lambda h, m=msg_id: h.json["data"].get("message_id") == m, 10)
        latencies.append(hit.at - start)
    # Deriving from Postgres adds a query, not a poll interval of waiting.
    assert sorted(latencies)[2] < 0.5, latencies
