"""Inbox, outbox and sms-status: newest first, bounded pages, filters."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from .api_support import make_sim


@pytest.fixture
def filled(client, bob, engine):
    """A SIM of its own with 7 outbound and 3 inbound messages."""
    sim = make_sim(engine)
    ids = []
    for i in range(7):
        r = client.post(
            "/api/sms",
            json={"recipient": f"+49151000000{i}", "message": f"listing text {i}", "sim_card_id": sim.id},
            headers=bob.headers,
        )
        ids.append(r.get_json()["message_id"])
    with engine.begin() as conn:
        for i in range(3):
            conn.execute(
                text(
                    "INSERT INTO messages (direction, sender, recipient, message, status, encoding, segments, "
                    "sim_card_id, sender_sim, received_at) VALUES ('inbound', :s, :r, :m, 'received', 'GSM-7', 1, "
                    ":sim, :r, now())"
                ),
                {"s": f"+4917600000{i}", "r": sim.number, "m": f"reply {i}", "sim": sim.id},
            )
        conn.execute(text("UPDATE messages SET status = 'delivered' WHERE id = ANY(:ids)"), {"ids": ids[:2]})
    return sim, ids


def test_it_pages_the_outbox_newest_first(client, charlie, filled):
    sim, ids = filled
    r = client.get(f"/api/sms/outbox?sim_card_id={sim.id}&per_page=3", headers=charlie.headers)
    body = r.get_json()
    assert [m["id"] for m in body["messages"]] == ids[::-1][:3]
    assert body["pagination"]["total"] == 7 and body["pagination"]["has_more"] is True
    cursor = body["pagination"]["next_before_id"]
    page2 = client.get(
        f"/api/sms/outbox?sim_card_id={sim.id}&per_page=3&before_id={cursor}", headers=charlie.headers
    ).get_json()
    assert [m["id"] for m in page2["messages"]] == ids[::-1][3:6]
    page3 = client.get(f"/api/sms/outbox?sim_card_id={sim.id}&per_page=3&page=3", headers=charlie.headers).get_json()
    assert [m["id"] for m in page3["messages"]] == [ids[0]]
    assert page3["pagination"]["next_before_id"] is None


def test_it_filters_by_state_number_text_and_time(client, charlie, filled):
    sim, ids = filled
    base = f"/api/sms/outbox?sim_card_id={sim.id}"
    delivered = client.get(base + "&status=delivered", headers=charlie.headers).get_json()["messages"]
    assert sorted(m["id"] for m in delivered) == sorted(ids[:2])
    both = client.get(base + "&status=delivered,queued", headers=charlie.headers).get_json()["messages"]
    assert len(both) == 7
    by_number = client.get(base + "&number=491510000003", headers=charlie.headers).get_json()["messages"]
    assert [m["id"] for m in by_number] == [ids[3]]
    by_text = client.get(base + "&q=TEXT 5", headers=charlie.headers).get_json()["messages"]
    assert [m["id"] for m in by_text] == [ids[5]]
    future = client.get(base + "&since=2099-01-01", headers=charlie.headers).get_json()["messages"]
    assert future == []
    past = client.get(base + "&until=2000-01-01T00:00:00Z", headers=charlie.headers).get_json()["messages"]
    assert past == []


def test_it_lists_the_inbox_and_the_seed_statuses(client, charlie, filled):
    sim, _ = filled
    inbox = client.get(f"/api/sms/inbox?sim_card_id={sim.id}", headers=charlie.headers).get_json()
    assert [m["message"] for m in inbox["messages"]] == ["reply 2", "reply 1", "reply 0"]
    assert inbox["messages"][0]["sender"] == "+49176000002"
    statuses = client.get(f"/api/sms-status?sim_card_id={sim.id}", headers=charlie.headers).get_json()["statuses"]
    assert len(statuses) == 10
    assert {"id", "sender_number", "receiver_number", "message", "status", "timestamp"} <= set(statuses[0])


@pytest.mark.parametrize(
    "query,field",
    [
        ("per_page=0", "per_page"),
        ("per_page=201", "per_page"),
        ("page=0", "page"),
        ("before_id=abc", "before_id"),
        ("status=lost", "status"),
        ("since=yesterday", "since"),
        ("sim_card_id=x", "sim_card_id"),
    ],
)
def test_it_refuses_bad_listing_parameters(client, charlie, query, field):
    r = client.get(f"/api/sms/outbox?{query}", headers=charlie.headers)
    assert r.status_code == 400 and field in r.get_json()["fields"]


def test_listings_give_the_seeds_unix_timestamp_and_an_iso_created_at(client, charlie, filled):
    from datetime import datetime

    sim, _ = filled
    rows = [
        client.get(f"{path}?sim_card_id={sim.id}&per_page=1", headers=charlie.headers).get_json()[key][0]
        for path, key in (
            ("/api/sms/outbox", "messages"),
            ("/api/sms/inbox", "messages"),
            ("/api/sms-status", "statuses"),
        )
    ]
    rows.append(client.get("/api/logs?per_page=1", headers=charlie.headers).get_json()["logs"][0])
    for row in rows:
        # The seed's clients read `timestamp` as whole Unix seconds.
        assert type(row["timestamp"]) is int
        created = datetime.fromisoformat(row["created_at"])
        assert created.utcoffset() is not None
        assert row["timestamp"] == int(created.timestamp())
