"""Login, JWTs and the login API key."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import text

from .api_support import PASSWORD, count_rows, make_persona


def login(client, username, password=PASSWORD):
    return client.post("/api/auth", json={"username": username, "password": password})


def test_it_logs_in_with_the_seed_response_keys(client, bob):
    r = login(client, "bob")
    assert r.status_code == 200
    body = r.get_json()
    assert {"token", "username", "role", "api_key", "expires_at"} <= set(body)
    assert body["username"] == "bob" and body["role"] == "user"
    assert client.get("/api/me", headers={"Authorization": f"Bearer {body['token']}"}).get_json()["username"] == "bob"
    assert client.get("/api/me", headers={"X-API-Key": body["api_key"]}).status_code == 200


def test_it_rotates_the_login_key_on_each_login(client, engine):
    dora = make_persona(engine, "dora", "user")
    first = login(client, "dora").get_json()["api_key"]
    second = login(client, "dora").get_json()["api_key"]
    assert first != second
    assert client.get("/api/me", headers={"X-API-Key": first}).status_code == 401
    assert client.get("/api/me", headers={"X-API-Key": second}).status_code == 200
    # The persona's own named key is untouched by logins.
    assert client.get("/api/me", headers=dora.headers).status_code == 200


def test_it_refuses_a_wrong_password_and_audits_it(client, bob, engine):
    before = count_rows(engine, "logs", "action = 'authentication' AND status = 'failed'")
    r = login(client, "bob", "wrong password!")
    assert r.status_code == 401
    assert r.get_json()["error"] == "Invalid credentials!"
    assert count_rows(engine, "logs", "action = 'authentication' AND status = 'failed'") == before + 1


def test_it_refuses_an_unknown_user_the_same_way(client):
    r = login(client, "nobody-here")
    assert r.status_code == 401 and r.get_json()["code"] == "invalid_credentials"


def test_it_requires_username_and_password(client):
    r = client.post("/api/auth", json={"username": "bob"})
    assert r.status_code == 400
    assert r.get_json()["message"] == "Username and password are required!"
    assert "password" in r.get_json()["fields"]


def test_it_rate_limits_login_attempts(client, engine):
    make_persona(engine, "erin", "user")
    codes = [login(client, "erin", "nope-nope-nope").status_code for _ in range(5)]
    assert codes == [401] * 5
    r = login(client, "erin")  # even the right password waits out the window
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) > 0
    assert "too many attempts" in r.get_json()["error"]


def _token(app, **claims):
    secret = app.config["SMSGW_SETTINGS"].jwt_secret
    base = {"sub": "1", "exp": datetime.now(UTC) + timedelta(hours=1)}
    base.update(claims)
    return jwt.encode(base, secret, algorithm="HS256")


def test_it_rejects_an_expired_token(client, app, bob):
    token = _token(app, sub=str(bob.id), exp=datetime.now(UTC) - timedelta(seconds=5))
    r = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.get_json()["code"] == "token_expired"


def test_it_rejects_a_token_signed_with_another_key(client, bob):
    token = jwt.encode({"sub": str(bob.id), "exp": int(time.time()) + 600}, "x" * 40, algorithm="HS256")
    r = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.get_json()["code"] == "invalid_token"


def test_it_rejects_an_unsigned_alg_none_token(client, bob):
    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': str(bob.id), 'exp': int(time.time()) + 600})}."
    r = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


def test_it_rejects_a_token_of_a_deactivated_user(client, app, engine, alice):
    frank = make_persona(engine, "frank", "user")
    token = _token(app, sub=str(frank.id))
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/api/me", headers=frank.headers).status_code == 200
    r = client.put(f"/api/users/{frank.id}", json={"is_active": False}, headers=alice.headers)
    assert r.status_code == 200
    # Both were cached by the requests above; the change must not wait for the cache.
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert client.get("/api/me", headers=frank.headers).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "sgw_not-a-real-key-at-all"},
        {"X-API-Key": "garbage"},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": "Basic Ym9iOmJvYg=="},
    ],
)
def test_it_refuses_missing_or_bad_credentials(client, headers):
    r = client.get("/api/sms/outbox", headers=headers)
    assert r.status_code == 401
    body = r.get_json()
    assert body["error"] and body["message"] == body["error"] and body["code"]


def test_it_changes_the_own_password(client, engine):
    gina = make_persona(engine, "gina", "viewer")
    r = client.put(
        "/api/me/password", json={"current_password": "wrong", "new_password": "another long one"}, headers=gina.headers
    )
    assert r.status_code == 403
    r = client.put(
        "/api/me/password", json={"current_password": PASSWORD, "new_password": "short"}, headers=gina.headers
    )
    assert r.status_code == 400 and "new_password" in r.get_json()["fields"]
    r = client.put(
        "/api/me/password",
        json={"current_password": PASSWORD, "new_password": "another long one"},
        headers=gina.headers,
    )
    assert r.status_code == 200
    assert login(client, "gina", "another long one").status_code == 200


@pytest.fixture
def proxied(database_url, redis_url, mqtt_prefix):
    """The API as it runs behind nginx (TRUST_PROXY), with a small login limit."""
    from smsgw_api import create_app
    from smsgw_api.core.extensions import bus, db

    from .api_support import api_env

    app = create_app(
        {"ENV": api_env(database_url, redis_url, mqtt_prefix, TRUST_PROXY="1", LOGIN_MAX_ATTEMPTS="2"), "TESTING": True}
    )
    yield app.test_client()
    bus.stop(app)
    db.dispose(app)


def test_behind_the_proxy_a_forged_forwarded_for_is_attributed_to_the_address_the_proxy_added(proxied, engine):
    r = proxied.post(
        "/api/auth",
        json={"username": "nobody-forged", "password": "not the password"},
        headers={"X-Forwarded-For": "1.2.3.4, 9.9.9.9", "X-Request-ID": "forged-xff-1"},
    )
    assert r.status_code == 401
    with engine.connect() as conn:
        ip = conn.execute(text("SELECT ip FROM logs WHERE request_id = 'forged-xff-1'")).scalar()
    assert ip == "9.9.9.9"


def test_behind_the_proxy_the_per_address_login_limit_cannot_be_dodged_by_a_forged_header(proxied):
    import secrets

    client_addr = f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"  # fresh counters each run
    limit = 2 * 5  # LOGIN_MAX_ATTEMPTS per user, five times that per address
    codes = []
    for i in range(limit + 2):
        # Another user each time (no per-user limit) and another forged address in front.
        r = proxied.post(
            "/api/auth",
            json={"username": f"spray-{secrets.token_hex(4)}", "password": "guess-guess"},
            headers={"X-Forwarded-For": f"10.0.{i}.{i}, {client_addr}"},
        )
        codes.append(r.status_code)
    assert codes[:limit] == [401] * limit
    assert codes[limit:] == [429, 429], codes


def test_the_api_keeps_no_cookie_session_and_does_not_reuse_the_jwt_secret(app, client, bob):
    # Every request carries its key or token: a cookie session would be a
    # second way in (and signing it cost an HMAC key derivation per request).
    import flask

    r = login(client, "bob")
    assert r.status_code == 200 and "Set-Cookie" not in r.headers
    assert not app.secret_key  # the JWT secret signs tokens only
    with app.test_request_context("/api/me", headers={"X-API-Key": r.get_json()["api_key"]}):
        app.preprocess_request()
        session = app.session_interface.open_session(app, flask.request)
        with pytest.raises(RuntimeError):
            session["user"] = "bob"
