"""Named API keys: shown once, stored hashed, revocable; admins manage anyone's."""

from __future__ import annotations

import hashlib

from sqlalchemy import text

from .api_support import PASSWORD, make_persona


def test_it_shows_a_new_key_once_and_stores_only_its_hash(client, bob, engine):
    r = client.post("/api/api-keys", json={"name": "billing system"}, headers=bob.headers)
    assert r.status_code == 201
    body = r.get_json()
    key = body["api_key"]
    assert key.startswith(body["prefix"]) and body["name"] == "billing system"
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": body["id"]}).mappings().one()
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(dict(row))
    listed = client.get("/api/api-keys", headers=bob.headers).get_json()["api_keys"]
    mine = [k for k in listed if k["id"] == body["id"]]
    assert mine and "api_key" not in mine[0] and key not in str(listed)
    assert client.get("/api/me", headers={"X-API-Key": key}).get_json()["username"] == "bob"


def test_it_revokes_a_key(client, bob):
    body = client.post("/api/api-keys", json={"name": "short-lived"}, headers=bob.headers).get_json()
    assert client.delete(f"/api/api-keys/{body['id']}", headers=bob.headers).status_code == 200
    r = client.get("/api/me", headers={"X-API-Key": body["api_key"]})
    assert r.status_code == 401


def test_it_hides_other_users_keys_from_non_admins(client, bob, charlie):
    body = client.post("/api/api-keys", json={"name": "charlie's"}, headers=charlie.headers).get_json()
    assert client.delete(f"/api/api-keys/{body['id']}", headers=bob.headers).status_code == 404
    assert client.get(f"/api/api-keys?user_id={charlie.id}", headers=bob.headers).status_code == 403
    r = client.post("/api/api-keys", json={"name": "for charlie", "user_id": charlie.id}, headers=bob.headers)
    assert r.status_code == 403
    assert client.get("/api/me", headers={"X-API-Key": body["api_key"]}).status_code == 200


def test_it_lets_an_admin_manage_anyones_keys(client, alice, charlie):
    r = client.post("/api/api-keys", json={"name": "made by alice", "user_id": charlie.id}, headers=alice.headers)
    assert r.status_code == 201
    key = r.get_json()
    assert client.get("/api/me", headers={"X-API-Key": key["api_key"]}).get_json()["username"] == "charlie"
    listed = client.get(f"/api/api-keys?user_id={charlie.id}", headers=alice.headers).get_json()["api_keys"]
    assert key["id"] in [k["id"] for k in listed]
    assert client.delete(f"/api/api-keys/{key['id']}", headers=alice.headers).status_code == 200
    assert client.get("/api/me", headers={"X-API-Key": key["api_key"]}).status_code == 401


def test_it_refuses_bad_key_requests_without_writing(client, bob, engine):
    def keys():
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM api_keys")).scalar()

    before = keys()
    assert client.post("/api/api-keys", json={"name": ""}, headers=bob.headers).status_code == 400
    assert client.post("/api/api-keys", json={"name": "x" * 101}, headers=bob.headers).status_code == 400
    assert (
        client.post(
            "/api/api-keys", json={"name": "old", "expires_at": "2001-01-01T00:00:00Z"}, headers=bob.headers
        ).status_code
        == 400
    )
    assert client.delete("/api/api-keys/987654", headers=bob.headers).status_code == 404
    assert keys() == before


def test_the_seed_generate_endpoint_needs_a_jwt(client, engine):
    hank = make_persona(engine, "hank", "user")
    r = client.post("/api/generate-api-key", headers=hank.headers)
    assert r.status_code == 401 and r.get_json()["code"] == "jwt_required"
    token = client.post("/api/auth", json={"username": "hank", "password": PASSWORD}).get_json()["token"]
    r = client.post("/api/generate-api-key", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    body = r.get_json()
    assert body["message"] == "API key generated successfully" and body["api_key"]
    assert client.get("/api/me", headers={"X-API-Key": body["api_key"]}).status_code == 200
