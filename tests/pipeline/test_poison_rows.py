"""Rows the API would never write, already in Postgres: the sweeper sets them
aside, the events leader relays what it can, and both loops keep going."""

from __future__ import annotations

import time

import requests
from sqlalchemy import text

from .conftest import add_modem_and_sim, add_outbound, wait_until


def _poison(db_session, mid: int, assignment: str) -> None:
    with db_session() as s:
        s.execute(text(f"UPDATE messages SET {assignment} WHERE id = :id"), {"id": mid})
        s.commit()


def _leader_loops(api) -> dict | None:
    # A new connection each time: either gunicorn worker may answer, one of them leads.
    body = requests.get(api.url("/readyz"), timeout=5).json()
    pipeline = body.get("pipeline") or {}
    if (pipeline.get("leader") or {}).get("this_process"):
        return pipeline["loops"]
    return None


def test_the_sweeper_fails_unreadable_rows_and_both_loops_stay_fresh(api, people, mqtt, db_session, sockets):
    modem_id, sim_id = add_modem_and_sim(db_session)
    bob = people["bob"].user_id
    far_send = add_outbound(db_session, sim_id, bob, text="year 10000")
    _poison(db_session, far_send, "send_at = '10000-01-01 00:00:00+00'")
    bc_expiry = add_outbound(db_session, sim_id, bob, text="1 BC")
    _poison(db_session, bc_expiry, "expires_at = '0001-01-01 00:00:00+00 BC'")
    far_lease = add_outbound(db_session, sim_id, bob, text="lease for ever", status="sending")
    _poison(db_session, far_lease, "lease_until = '10000-01-01 00:00:00+00', worker_id = 'gone'")
    far_sent = add_outbound(db_session, sim_id, bob, text="sent in year 10000", status="sent")
    _poison(db_session, far_sent, "sent_at = '10000-01-01 00:00:00+00'")
    sock = sockets(people["alice"])
    time.sleep(0.3)
    # The events leader reads the poisoned rows too.
    for mid in (far_sent, far_send):
        mqtt.message_event(message_id=mid, state="sent", sim_card_id=sim_id, modem_id=modem_id)
    for mid, field in ((far_send, "send_at"), (bc_expiry, "expires_at"), (far_lease, "lease_until")):
        wait_until(lambda mid=mid: _status(db_session, mid) == "failed", 10, 0.1, f"message {mid} to fail")
        assert _error(db_session, mid) == f"unreadable row: {field} out of range"
        sock.wait_for("sms_status_update", lambda d, mid=mid: d["message_id"] == mid and d["status"] == "failed")
    assert _status(db_session, far_sent) == "sent"  # a final state is not the queue's to change
    sock.wait_for("sms_status_update", lambda d: d["message_id"] == far_sent and d["status"] == "sent")

    # Two further rounds of every loop after all of it, each recent.
    first = wait_until(lambda: _leader_loops(api), 15, 0.1, "the leader's /readyz")
    rounds = {name: loop["rounds"] for name, loop in first.items()}

    def moved_on():
        loops = _leader_loops(api)
        return loops and all(loops[n]["rounds"] >= rounds[n] + 2 for n in ("sweeper", "events-consumer")) and loops

    loops = wait_until(moved_on, 15, 0.1, "the sweeper and events consumer to keep going")
    for name in ("sweeper", "events-consumer"):
        assert loops[name]["ok"] and loops[name]["alive"]
        assert loops[name]["seconds_since_round"] < loops[name]["stale_after"]
    assert "sweep failed" not in api.log()


def _status(db_session, mid: int) -> str:
    with db_session() as s:
        return s.scalar(text("SELECT status FROM messages WHERE id = :id"), {"id": mid})


def _error(db_session, mid: int) -> str:
    with db_session() as s:
        return s.scalar(text("SELECT error_text FROM messages WHERE id = :id"), {"id": mid})
