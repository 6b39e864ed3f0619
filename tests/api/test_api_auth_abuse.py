"""Abuse of login, sessions and keys: limits that slow the attacker and not
the account, attempts reserved before the password is checked, sessions that
end when the password or role changes, keys that die with the key that made
them. The API runs in-process; the flood against real gunicorn is in
test_api_auth_flood.py, idle sockets in test_api_auth_sockets.py."""

from __future__ import annotations

import secrets
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import redis as redis_lib
from sqlalchemy import text

from .api_support import PASSWORD, count_rows, make_persona

ATTACKER = {"REMOTE_ADDR": "127.0.0.2"}
OWNER = {"REMOTE_ADDR": "127.0.0.1"}

# Within the ten-year window of expires_at (docs/api-contract.md, "Validation").
PARENT_EXPIRY = f"{datetime.now(UTC).year + 2}-01-01"
CHILD_EXPIRY = f"{datetime.now(UTC).year + 3}-01-01"


def login(client, username, password=PASSWORD, environ=None):
    return client.post("/api/auth", json={"username": username, "password": password}, environ_base=environ or OWNER)


def failed_checks(engine, username: str) -> int:
    return count_rows(
        engine, "logs", "action = 'authentication' AND status = 'failed' AND details LIKE :d", d=f"%{username}%"
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_wrong_passwords_from_another_address_do_not_lock_the_owner_out(client, engine):
    # LOGIN_MAX_ATTEMPTS is 5 in these tests.
    make_persona(engine, "ivy", "user")
    codes = [login(client, "ivy", "not her password", ATTACKER).status_code for _ in range(7)]
    assert codes == [401] * 5 + [429] * 2
    assert login(client, "ivy", environ=OWNER).status_code == 200
    # and the attacker is still slowed, whatever the owner did
    assert login(client, "ivy", PASSWORD, ATTACKER).status_code == 429


def test_parallel_wrong_passwords_get_no_more_checks_than_the_limit(client, engine):
    name = f"par-{secrets.token_hex(3)}"
    make_persona(engine, name, "user")
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda _: login(client, name, "wrong wrong wrong", ATTACKER).status_code, range(24)))
    assert sorted(set(codes)) == [401, 429]
    assert codes.count(401) == 5 == failed_checks(engine, name)


def test_parallel_logins_from_one_address_get_no_more_checks_than_the_address_limit(client, engine):
    # Every attempt names another user: only the per-address limit (5 x 5) applies.
    addr = {"REMOTE_ADDR": f"127.0.{secrets.randbelow(200) + 10}.{secrets.randbelow(200) + 10}"}
    tag = secrets.token_hex(3)
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda i: login(client, f"spray-{tag}-{i}", "guess guess", addr).status_code, range(40)))
    assert codes.count(401) == 25 and codes.count(429) == 15
    assert failed_checks(engine, f"spray-{tag}-") == 25


def test_a_huge_username_makes_no_large_audit_row_or_redis_key(client, engine, redis_url, mqtt_prefix):
    huge = "u" * 250_000
    r = login(client, huge, "whatever whatever", {"REMOTE_ADDR": "127.0.9.9"})
    assert r.status_code in (400, 401)
    with engine.connect() as conn:
        longest = conn.execute(text("SELECT coalesce(max(length(details)), 0) FROM logs")).scalar()
    assert longest < 1000
    keys = redis_lib.Redis.from_url(redis_url).keys("*")
    assert keys and max(len(k) for k in keys) < 200


def test_current_password_guesses_are_limited(client, engine):
    jack = make_persona(engine, "jack", "user")
    codes = []
    for i in range(7):
        r = client.put(
            "/api/me/password",
            json={"current_password": f"guess {i}", "new_password": "a brand new password"},
            headers=jack.headers,
        )
        codes.append(r.status_code)
        if r.status_code == 403:
            assert r.get_json()["code"] == "wrong_password" and "hash" not in r.get_data(as_text=True)
    assert codes == [403] * 5 + [429] * 2
    # and the right one waits out the window too: guesses are what is limited
    r = client.put(
        "/api/me/password",
        json={"current_password": PASSWORD, "new_password": "a brand new password"},
        headers=jack.headers,
    )
    assert r.status_code == 429


def test_a_password_change_ends_the_old_sessions(client, engine):
    make_persona(engine, "kate", "user")
    first = login(client, "kate").get_json()
    r = client.put(
        "/api/me/password",
        json={"current_password": PASSWORD, "new_password": "kate's new password"},
        headers=bearer(first["token"]),
    )
    assert r.status_code == 200
    assert client.get("/api/me", headers=bearer(first["token"])).status_code == 401
    assert client.get("/api/me", headers={"X-API-Key": first["api_key"]}).status_code == 401
    # the answer carries the caller's new session
    assert client.get("/api/me", headers=bearer(r.get_json()["token"])).status_code == 200


@pytest.mark.parametrize(
    "change", [{"password": "reset by the admin"}, {"role": "viewer"}, {"is_active": False}], ids=str
)
def test_an_admin_reset_role_change_or_deactivation_ends_the_sessions(client, engine, alice, change):
    name = f"leo-{secrets.token_hex(3)}"
    leo = make_persona(engine, name, "user")
    session = login(client, name).get_json()
    assert client.get("/api/me", headers=bearer(session["token"])).status_code == 200
    assert client.get("/api/me", headers={"X-API-Key": session["api_key"]}).status_code == 200
    assert client.put(f"/api/users/{leo.id}", json=change, headers=alice.headers).status_code == 200
    if change.get("is_active") is False:
        assert client.put(f"/api/users/{leo.id}", json={"is_active": True}, headers=alice.headers).status_code == 200
    assert client.get("/api/me", headers=bearer(session["token"])).status_code == 401
    assert client.get("/api/me", headers={"X-API-Key": session["api_key"]}).status_code == 401
    # named keys are for integrations and survive (deactivation aside)
    assert client.get("/api/me", headers=leo.headers).status_code == 200


def test_a_key_made_by_a_key_dies_with_its_parent(client, engine):
    mia = make_persona(engine, "mia", "user")
    parent = client.post("/api/api-keys", json={"name": "parent"}, headers=mia.headers).get_json()
    child = client.post("/api/api-keys", json={"name": "child"}, headers={"X-API-Key": parent["api_key"]})
    assert child.status_code == 201
    grandchild = client.post(
        "/api/api-keys", json={"name": "grandchild"}, headers={"X-API-Key": child.get_json()["api_key"]}
    )
    assert grandchild.status_code == 201
    assert client.delete(f"/api/api-keys/{parent['id']}", headers=mia.headers).status_code == 200
    for made in (child.get_json(), grandchild.get_json()):
        assert client.get("/api/me", headers={"X-API-Key": made["api_key"]}).status_code == 401
    assert client.get("/api/me", headers=mia.headers).status_code == 200


def test_a_key_made_by_a_login_key_dies_with_the_session(client, engine):
    make_persona(engine, "ned", "user")
    session = login(client, "ned").get_json()
    child = client.post("/api/api-keys", json={"name": "from login"}, headers={"X-API-Key": session["api_key"]})
    assert child.status_code == 201
    assert login(client, "ned").status_code == 200  # rotates the login key
    assert client.get("/api/me", headers={"X-API-Key": child.get_json()["api_key"]}).status_code == 401


def test_a_key_cannot_outlive_its_parent(client, engine):
    olga = make_persona(engine, "olga", "user")
    parent = client.post(
        "/api/api-keys", json={"name": "short", "expires_at": f"{PARENT_EXPIRY}T00:00:00Z"}, headers=olga.headers
    ).get_json()
    child = client.post(
        "/api/api-keys",
        json={"name": "longer", "expires_at": f"{CHILD_EXPIRY}T00:00:00Z"},
        headers={"X-API-Key": parent["api_key"]},
    )
    assert child.status_code == 201
    assert child.get_json()["key"]["expires_at"].startswith(PARENT_EXPIRY)
    forever = client.post("/api/api-keys", json={"name": "forever"}, headers={"X-API-Key": parent["api_key"]})
    assert forever.get_json()["key"]["expires_at"].startswith(PARENT_EXPIRY)


def test_a_user_with_keys_made_by_keys_can_be_deleted(client, engine, alice):
    pat = make_persona(engine, "pat", "user")
    parent = client.post("/api/api-keys", json={"name": "parent"}, headers=pat.headers).get_json()
    child = client.post("/api/api-keys", json={"name": "child"}, headers={"X-API-Key": parent["api_key"]}).get_json()
    client.post("/api/api-keys", json={"name": "grandchild"}, headers={"X-API-Key": child["api_key"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. the ORM finding rows the database cascade already deleted
        assert client.delete(f"/api/users/{pat.id}", headers=alice.headers).status_code == 200
    assert count_rows(engine, "api_keys", "user_id = :id", id=pat.id) == 0


@pytest.fixture
def another_process(env):
    """A second app on the same database and Redis: another worker process,
    with its own auth cache."""
    from smsgw_api import create_app
    from smsgw_api.core.extensions import bus, db

    app = create_app({"ENV": env, "TESTING": True})
    yield app.test_client()
    bus.stop(app)
    db.dispose(app)


def test_another_process_stops_trusting_a_revoked_key_at_once(client, engine, another_process):
    rita = make_persona(engine, "rita", "user")
    made = client.post("/api/api-keys", json={"name": "cached elsewhere"}, headers=rita.headers).get_json()
    key = {"X-API-Key": made["api_key"]}
    assert another_process.get("/api/me", headers=key).status_code == 200  # now in its cache
    assert client.delete(f"/api/api-keys/{made['id']}", headers=rita.headers).status_code == 200
    assert another_process.get("/api/me", headers=key).status_code == 401


@pytest.fixture
def without_redis(database_url, mqtt_prefix):
    """The API with its Redis unreachable (nothing listens on port 1)."""
    from smsgw_api import create_app
    from smsgw_api.core.extensions import bus, db

    from .api_support import api_env

    app = create_app({"ENV": api_env(database_url, "redis://127.0.0.1:1/0", mqtt_prefix), "TESTING": True})
    yield app.test_client()
    bus.stop(app)
    db.dispose(app)


def test_without_redis_each_process_still_limits_logins(without_redis, engine):
    make_persona(engine, "sam", "user")
    codes = [login(without_redis, "sam", "not his password", ATTACKER).status_code for _ in range(7)]
    assert codes == [401] * 5 + [429] * 2
    assert login(without_redis, "sam", environ=OWNER).status_code == 200
