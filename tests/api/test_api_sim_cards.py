"""SIM cards keep the seed's shapes; admins change them."""

from __future__ import annotations

from .api_support import count_rows, make_sim


def test_it_adds_updates_lists_and_deletes_a_sim_in_seed_shapes(client, alice, charlie):
    r = client.post("/api/sim-cards", json={"number": "49 151 2345 6789", "status": "inactive"}, headers=alice.headers)
    assert r.status_code == 200
    body = r.get_json()
    assert body["message"] == "SIM card added successfully"
    sim = body["sim_card"]
    assert sim["number"] == "+4915123456789" and sim["status"] == "inactive"
    r = client.put(f"/api/sim-cards/{sim['id']}", json={"limit_per_day": 100, "label": "office"}, headers=alice.headers)
    assert r.status_code == 200 and r.get_json()["sim_card"]["limit_per_day"] == 100
    listed = client.get("/api/sim-cards", headers=charlie.headers).get_json()
    found = [s for s in listed["sim_cards"] if s["id"] == sim["id"]][0]
    assert {"id", "number", "status", "usage", "online", "limit_per_minute"} <= set(found)
    assert found["usage"] == {"minute": 0, "day": 0, "month": 0}
    r = client.delete(f"/api/sim-cards/{sim['id']}", headers=alice.headers)
    assert r.status_code == 200 and r.get_json()["message"] == "SIM card deleted successfully"
    assert client.delete(f"/api/sim-cards/{sim['id']}", headers=alice.headers).status_code == 404


def test_it_refuses_bad_sim_input_without_writing(client, alice, engine):
    before = count_rows(engine, "sim_cards")
    for body, field in [
        ({}, "number"),
        ({"number": "   "}, "number"),
        ({"number": "+12ab"}, "number"),
        ({"number": "+4915123456789", "status": "broken"}, "status"),
        ({"number": "+4915123456789", "limit_per_day": -1}, "limit_per_day"),
        ({"number": "+4915123456789", "colour": "red"}, "colour"),
    ]:
        r = client.post("/api/sim-cards", json=body, headers=alice.headers)
        assert r.status_code == 400 and field in r.get_json()["fields"], (body, r.get_json())
    assert count_rows(engine, "sim_cards") == before


def test_it_will_not_delete_a_sim_with_queued_messages(client, alice, bob, engine):
    sim = make_sim(engine)
    r = client.post(
        "/api/sms", json={"recipient": "+4915112345678", "message": "hi", "sim_card_id": sim.id}, headers=bob.headers
    )
    assert r.status_code == 200
    r = client.delete(f"/api/sim-cards/{sim.id}", headers=alice.headers)
    assert r.status_code == 409 and r.get_json()["pending"] == 1
