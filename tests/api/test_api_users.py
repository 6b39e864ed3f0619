"""Users are managed by admins; the last admin cannot lock everyone out."""

from __future__ import annotations

from .api_support import PASSWORD, count_rows


def test_it_creates_lists_updates_and_deletes_a_user(client, alice):
    r = client.post(
        "/api/users", json={"username": "ivan", "password": "a long password", "role": "viewer"}, headers=alice.headers
    )
    assert r.status_code == 201
    user_id = r.get_json()["id"]
    assert "password_hash" not in r.get_json()["user"]
    assert "ivan" in [u["username"] for u in client.get("/api/users", headers=alice.headers).get_json()["users"]]
    r = client.put(f"/api/users/{user_id}", json={"role": "user"}, headers=alice.headers)
    assert r.status_code == 200 and r.get_json()["user"]["role"] == "user"
    login = client.post("/api/auth", json={"username": "ivan", "password": "a long password"}).get_json()
    assert login["role"] == "user"
    assert client.delete(f"/api/users/{user_id}", headers=alice.headers).status_code == 200
    assert client.get("/api/me", headers={"X-API-Key": login["api_key"]}).status_code == 401


def test_it_refuses_bad_user_input_without_writing(client, alice, engine):
    before = count_rows(engine, "users")
    cases = [
        ({"username": "jo", "password": "a long password"}, "username"),
        ({"username": "judy", "password": "short"}, "password"),
        ({"username": "judy", "password": "a long password", "role": "root"}, "role"),
        ({"username": "bad name!", "password": "a long password"}, "username"),
    ]
    for body, field in cases:
        r = client.post("/api/users", json=body, headers=alice.headers)
        assert r.status_code == 400 and field in r.get_json()["fields"], body
    r = client.post("/api/users", json={"username": "alice", "password": "a long password"}, headers=alice.headers)
    assert r.status_code == 409
    assert client.put("/api/users/999999", json={"role": "user"}, headers=alice.headers).status_code == 404
    assert count_rows(engine, "users") == before


def test_it_keeps_at_least_one_admin(client, alice):
    assert client.delete(f"/api/users/{alice.id}", headers=alice.headers).status_code == 409
    r = client.post(
        "/api/users", json={"username": "kim", "password": PASSWORD, "role": "admin"}, headers=alice.headers
    )
    kim = r.get_json()["id"]
    # With two admins, one may step down; then the other is the last again.
    assert client.put(f"/api/users/{kim}", json={"role": "user"}, headers=alice.headers).status_code == 200
    r = client.put(f"/api/users/{alice.id}", json={"role": "user"}, headers=alice.headers)
    assert r.status_code == 409 and r.get_json()["code"] == "last_admin"


def test_an_invalid_field_for_the_last_admin_is_a_400_not_last_admin(client, alice, engine):
    # She is the last active admin: a valid demotion is refused as such ...
    r = client.put(f"/api/users/{alice.id}", json={"role": "user"}, headers=alice.headers)
    assert r.status_code == 409 and r.get_json()["code"] == "last_admin"
    # ... but an invalid value is first of all invalid, and changes nothing.
    for body, field in [
        ({"role": "superuser"}, "role"),
        ({"role": ["admin"]}, "role"),
        ({"is_active": "no"}, "is_active"),
        ({"role": "user", "password": "short"}, "password"),
    ]:
        r = client.put(f"/api/users/{alice.id}", json=body, headers=alice.headers)
        assert r.status_code == 400, (body, r.get_json())
        assert r.get_json()["code"] == "validation_error" and field in r.get_json()["fields"]
    assert count_rows(engine, "users", "id = :id AND role = 'admin' AND is_active", id=alice.id) == 1
