"""The sweeper: a dead modem's queue moves on, pinned messages wait or fail as
the client chose, lapsed leases come back, nothing stays pending forever."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from support.waits import holds_for

from smsgw_common.models import Message, MessageEvent, Modem, SimCard

from .conftest import add_modem_and_sim, add_outbound, wait_until


def state_of(db_session, msg_id: int) -> Message:
    with db_session() as s:
        return s.get(Message, msg_id)


def online_sim_ids(db_session) -> set[int]:
    with db_session() as s:
        return {
            sim.id
            for sim, online in s.query(SimCard, Modem.online).join(Modem, Modem.id == SimCard.modem_id)
            if online and sim.status == "active"
        }


def test_a_dead_modems_queue_moves_to_an_online_sim(api, people, mqtt, db_session, sockets, receiver):
    api.post("/api/webhooks", people["bob"], {"url": receiver.url, "events": ["modem.offline"]})
    dead_modem, dead_sim = add_modem_and_sim(db_session)
    add_modem_and_sim(db_session)  # somewhere to go
    mqtt.modem_state(dead_modem, True)
    sock = sockets(people["carol"])
    # The worker's last will, as the broker publishes it. The queue is what it
    # left behind; written once the gateway knows the modem is gone, because
    # before that a sweep may rightly even out the queues with it instead.
    mqtt.modem_state(dead_modem, False, reason="lwt")

    def modem_is_offline():
        with db_session() as s:
            return s.get(Modem, dead_modem).online is False

    wait_until(modem_is_offline, 10, 0.05, "the will to mark the modem offline")
    unpinned = [add_outbound(db_session, dead_sim, people["bob"].user_id) for _ in range(3)]
    waits = add_outbound(db_session, dead_sim, people["bob"].user_id, pinned=True, on_unavailable="wait")
    fails = add_outbound(db_session, dead_sim, people["bob"].user_id, pinned=True, on_unavailable="fail")

    for mid in unpinned:
        moved = wait_until(
            lambda mid=mid: (m := state_of(db_session, mid)).sim_card_id != dead_sim and m,
            10,
            0.1,
            f"message {mid} to move",
        )
        assert moved.status == "queued" and moved.sim_card_id in online_sim_ids(db_session)
        with db_session() as s:
            detail = s.query(MessageEvent.detail).filter_by(message_id=mid).order_by(MessageEvent.id.desc()).first()[0]
        assert detail.startswith(f"rerouted from SIM {dead_sim}") and "offline" in detail
    failed = wait_until(lambda: (m := state_of(db_session, fails)).status == "failed" and m, 10, 0.1, "pinned fail")
    assert "offline" in failed.error_text
    waiting = state_of(db_session, waits)
    assert waiting.status == "queued" and waiting.sim_card_id == dead_sim
    # Browsers see the modem go and the messages move.
    sock.wait_for("modem_status", lambda d: d["modem_id"] == dead_modem and d["online"] is False)
    sock.wait_for("sms_status_update", lambda d: d["message_id"] == fails and d["status"] == "failed")
    hit = receiver.wait_for(lambda h: h.json["type"] == "modem.offline" and h.json["data"]["modem_id"] == dead_modem)
    assert hit.json["data"]["online"] is False


def test_a_modem_coming_back_is_announced_once(api, people, mqtt, db_session, receiver):
    api.post("/api/webhooks", people["bob"], {"url": receiver.url, "events": ["modem.online", "modem.offline"]})
    modem_id, _ = add_modem_and_sim(db_session, online=False)
    mqtt.modem_state(modem_id, False, reason="lwt")
    mqtt.modem_state(modem_id, True, signal_quality=17)
    mqtt.modem_state(modem_id, True, signal_quality=18)  # a health refresh, not a change
    receiver.wait_for(lambda h: h.json["type"] == "modem.online" and h.json["data"]["modem_id"] == modem_id)
    with db_session() as s:
        assert s.get(Modem, modem_id).online is True

    # Deliveries run concurrently: no order between them (docs/webhooks.md).
    def kinds():
        return sorted(h.json["type"] for h in receiver.hits if h.json["data"].get("modem_id") == modem_id)

    wait_until(lambda: kinds() == ["modem.offline", "modem.online"], 5, 0.05, "both modem hooks")
    # A health refresh is no change: no third hook follows.
    holds_for(lambda: kinds() == ["modem.offline", "modem.online"], 0.5, message="no hook for a refresh")


def test_an_exhausted_sim_hands_its_queue_over(api, people, db_session):
    _modem_id, sim_id = add_modem_and_sim(db_session, limit_per_minute=2)
    add_modem_and_sim(db_session)
    now = datetime.now(UTC)
    for _ in range(2):  # what it already sent this minute
        add_outbound(db_session, sim_id, people["bob"].user_id, status="sent", sending_at=now, sent_at=now)
    queued = add_outbound(db_session, sim_id, people["bob"].user_id)
    moved = wait_until(
        lambda: (m := state_of(db_session, queued)).sim_card_id != sim_id and m, 10, 0.1, "the queue to move"
    )
    assert moved.status == "queued"


def test_a_lapsed_lease_comes_back_and_an_unsure_send_is_not_repeated(api, people, db_session):
    from smsgw_common.models import MessagePart

    _modem_id, sim_id = add_modem_and_sim(db_session)
    past = datetime.now(UTC) - timedelta(minutes=1)
    clean = add_outbound(
        db_session, sim_id, people["bob"].user_id, status="sending", worker_id="w-dead", lease_until=past
    )
    unsure = add_outbound(
        db_session, sim_id, people["bob"].user_id, status="sending", worker_id="w-dead", lease_until=past
    )
    with db_session() as s:
        s.add(MessagePart(message_id=unsure, seq=1, sim_card_id=sim_id, status="submitting"))
        s.commit()
    wait_until(lambda: state_of(db_session, clean).status == "queued", 10, 0.1, "the lease to lapse")
    wait_until(lambda: state_of(db_session, unsure).status == "unknown", 10, 0.1, "the unsure send")


def test_nothing_stays_pending_forever(api, people, db_session, sockets):
    _modem_id, sim_id = add_modem_and_sim(db_session)
    long_ago = datetime.now(UTC) - timedelta(hours=2)  # REPORT_TIMEOUT is 1 h in the test env
    no_report = add_outbound(db_session, sim_id, people["bob"].user_id, status="sent", sent_at=long_ago)
    sock = sockets(people["carol"])
    with db_session() as s:
        msg = s.get(Message, no_report)
        msg.expires_at = None
        s.commit()
    expired = wait_until(
        lambda: (m := state_of(db_session, no_report)).status == "expired" and m, 10, 0.1, "the message to expire"
    )
    assert expired.expired_at is not None
    sock.wait_for("sms_status_update", lambda d: d["message_id"] == no_report and d["status"] == "expired")


def test_a_queued_message_past_its_validity_expires(api, people, db_session):
    _modem_id, sim_id = add_modem_and_sim(db_session, online=False)
    mid = add_outbound(
        db_session,
        sim_id,
        people["bob"].user_id,
        pinned=True,
        expires_at=datetime.now(UTC) + timedelta(seconds=1),
    )
    wait_until(lambda: state_of(db_session, mid).status == "expired", 10, 0.1, "validity to end")
