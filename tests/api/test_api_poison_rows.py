"""Rows the API would never write, already in the database (by hand, an older
version, a restore): listings still answer with the good rows, the bad field
shows as null with `unreadable_fields`, and a bad message can still be read
and cancelled (or gets a clear 4xx)."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import text

from .api_support import make_sim

FAR = "'10000-01-01 00:00:00+00'"
BC = "'0001-01-01 00:00:00+00 BC'"


def _insert(engine, sim, *, status="queued", direction="outbound", priority=0, message="poison", **dates) -> int:
    columns = ", ".join(dates)
    values = ", ".join(dates.values())
    with engine.begin() as conn:
        return conn.execute(
            text(
                "INSERT INTO messages (direction, sender, recipient, message, status, encoding, segments, "
                f"sim_card_id, sender_sim, priority, user_id{', ' if dates else ''}{columns}) "
                f"VALUES (:d, :s, '+491510000001', :m, :st, 'GSM-7', 1, :sim, :s, :p, "
                f"(SELECT id FROM users WHERE username = 'bob'){', ' if dates else ''}{values}) RETURNING id"
            ),
            {"d": direction, "s": sim.number, "m": message, "st": status, "sim": sim.id, "p": priority},
        ).scalar_one()


@pytest.fixture
def poisoned(client, bob, engine):
    sim = make_sim(engine)
    good = client.post(
        "/api/sms", json={"recipient": "+4915100000099", "message": "good", "sim_card_id": sim.id}, headers=bob.headers
    ).get_json()["message_id"]
    bad = {
        "far_send_at": _insert(engine, sim, send_at=FAR),
        "bc_send_at": _insert(engine, sim, send_at=BC),
        "far_expires_at": _insert(engine, sim, expires_at=FAR),
        "bc_expires_at": _insert(engine, sim, expires_at=BC),
        "far_sent_at": _insert(engine, sim, status="sent", sent_at=FAR),
        "bogus_status": _insert(engine, sim, status="bogus"),
        "priority_99": _insert(engine, sim, priority=99),
        "sideways": _insert(engine, sim, direction="sideways"),
        "huge": _insert(engine, sim, message="y" * (1024 * 1024)),
    }
    return sim, good, bad


def test_the_outbox_answers_with_the_good_rows_and_flags_the_unreadable_fields(client, charlie, poisoned):
    sim, good, bad = poisoned
    r = client.get(f"/api/sms/outbox?sim_card_id={sim.id}&per_page=50", headers=charlie.headers)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    rows = {m["id"]: m for m in r.get_json()["messages"]}
    assert good in rows and "unreadable_fields" not in rows[good]
    assert rows[bad["far_send_at"]]["send_at"] is None
    assert rows[bad["far_send_at"]]["unreadable_fields"] == ["send_at"]
    assert rows[bad["bc_send_at"]]["unreadable_fields"] == ["send_at"]
    assert rows[bad["far_sent_at"]]["sent_at"] is None
    assert rows[bad["far_sent_at"]]["unreadable_fields"] == ["sent_at"]
    assert rows[bad["bogus_status"]]["status"] == "bogus"
    assert rows[bad["priority_99"]]["priority"] == 99
    assert len(rows[bad["huge"]]["message"]) == 1024 * 1024
    assert bad["sideways"] not in rows
    for path in ("/api/sms-status", "/api/sms/inbox"):
        assert client.get(f"{path}?sim_card_id={sim.id}", headers=charlie.headers).status_code == 200


def test_the_detail_of_an_unreadable_message_shows_null_and_the_flag(client, charlie, poisoned):
    _, _, bad = poisoned
    for key, field in (("far_send_at", "send_at"), ("bc_expires_at", "expires_at"), ("far_expires_at", "expires_at")):
        r = client.get(f"/api/sms/{bad[key]}", headers=charlie.headers)
        assert r.status_code == 200, r.get_data(as_text=True)[:500]
        message = r.get_json()["message"]
        assert message[field] is None and message["unreadable_fields"] == [field]
    sideways = client.get(f"/api/sms/{bad['sideways']}", headers=charlie.headers)
    assert sideways.status_code == 200 and sideways.get_json()["message"]["direction"] == "sideways"


def test_an_unreadable_message_can_be_cancelled_and_a_bogus_one_gets_a_clear_409(client, bob, poisoned):
    _, _, bad = poisoned
    for key in ("far_send_at", "bc_send_at", "far_expires_at"):
        r = client.post(f"/api/sms/{bad[key]}/cancel", headers=bob.headers)
        assert r.status_code == 200, r.get_data(as_text=True)[:500]
        assert r.get_json()["status"] == "cancelled"
    r = client.post(f"/api/sms/{bad['bogus_status']}/cancel", headers=bob.headers)
    assert r.status_code == 409 and r.get_json()["code"] == "not_cancellable"


def test_api_keys_with_out_of_range_expiry_still_list(client, alice, bob, engine):
    with engine.begin() as conn:
        for name, when in (("restored far", FAR), ("restored bc", BC)):
            conn.execute(
                text(
                    "INSERT INTO api_keys (user_id, name, prefix, key_hash, expires_at) "
                    f"VALUES (:u, :n, :p, :h, {when})"
                ),
                {"u": bob.id, "n": name, "p": "pz" + secrets.token_hex(5), "h": secrets.token_hex(32)},
            )
    for who, query in ((bob, ""), (alice, "?all=1"), (alice, f"?user_id={bob.id}")):
        r = client.get(f"/api/api-keys{query}", headers=who.headers)
        assert r.status_code == 200, r.get_data(as_text=True)[:500]
        restored = {k["name"]: k for k in r.get_json()["api_keys"] if k["name"].startswith("restored")}
        assert set(restored) == {"restored far", "restored bc"}
        for key in restored.values():
            assert key["expires_at"] is None and key["unreadable_fields"] == ["expires_at"]
        # As authentication compares them in Postgres: year 10000 is later than now, 1 BC earlier.
        assert restored["restored far"]["active"] is True and restored["restored bc"]["active"] is False
    assert client.get("/api/api-keys", headers=bob.headers).status_code == 200


def test_the_audit_log_lists_a_line_stamped_in_year_10000(client, alice, engine):
    with engine.begin() as conn:
        line = conn.execute(
            text(
                "INSERT INTO logs (action, details, status, timestamp) "
                f"VALUES ('restored_poison', 'from a restore', 'success', {FAR}) RETURNING id"
            )
        ).scalar_one()
    r = client.get("/api/logs?action=restored_poison", headers=alice.headers)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    (row,) = [x for x in r.get_json()["logs"] if x["id"] == line]
    assert row["timestamp"] is None and row["unreadable_fields"] == ["timestamp"]
