"""One error format for every failure, and nothing half-written."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from .api_support import count_rows


def assert_error(r, status):
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.is_json
    body = r.get_json()
    assert body["error"] and body["message"] == body["error"] and body["code"]
    return body


def test_bad_json_is_a_400(client, bob, engine):
    before = count_rows(engine, "messages")
    r = client.post(
        "/api/sms",
        data='{"recipient": "+4915112345678", "message": ',
        headers={**bob.headers, "Content-Type": "application/json"},
    )
    assert assert_error(r, 400)["code"] == "invalid_json"
    r = client.post("/api/sms", data="[1, 2]", headers={**bob.headers, "Content-Type": "application/json"})
    assert "JSON object" in assert_error(r, 400)["error"]
    assert count_rows(engine, "messages") == before


def test_a_wrong_content_type_is_a_415(client, bob):
    r = client.post(
        "/api/sms",
        data="recipient=%2B4915112345678&message=hi",
        headers={**bob.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "application/json" in assert_error(r, 415)["error"]


def test_an_oversized_body_is_a_413(client, bob):
    r = client.post("/api/sms", json={"recipient": "+4915112345678", "message": "x" * 300_000}, headers=bob.headers)
    assert_error(r, 413)


@pytest.mark.parametrize(
    "method,path,status",
    [("GET", "/api/nothing-here", 404), ("DELETE", "/api/sms", 405), ("GET", "/api/sim-cards/abc", 404)],
)
def test_unknown_routes_and_methods_are_json(client, bob, method, path, status):
    assert_error(client.open(path, method=method, headers=bob.headers), status)


def test_a_request_id_goes_in_and_out(client, bob):
    r = client.get("/api/me", headers={**bob.headers, "X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    r = client.get("/api/me", headers={**bob.headers, "X-Request-ID": "bad id with spaces"})
    assert r.headers["X-Request-ID"] != "bad id with spaces" and len(r.headers["X-Request-ID"]) == 32


def test_cors_answers_only_allowed_origins(database_url, redis_url, mqtt_prefix):
    from smsgw_api import create_app
    from smsgw_api.core.extensions import db

    from .api_support import api_env

    app = create_app(
        {"ENV": api_env(database_url, redis_url, mqtt_prefix, CORS_ALLOWED_ORIGINS="https://gw.example.org")}
    )
    try:
        c = app.test_client()
        ok = c.get("/healthz", headers={"Origin": "https://gw.example.org"})
        assert ok.headers["Access-Control-Allow-Origin"] == "https://gw.example.org"
        other = c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
    finally:
        db.dispose(app)


# --- type confusion and NUL characters: a 400 in the one format, nothing written ---

_TABLES = ("messages", "sim_cards", "users", "api_keys", "opt_outs", "webhooks", "logs")


def _counts(engine):
    return {t: count_rows(engine, t) for t in _TABLES}


_SEND = {"recipient": "+4915112345678", "message": "hi"}
_MISTYPED = [
    # (method, path, body, field): a list/dict/number/bool where a string is
    # expected, a string, an unhashable or an out-of-range value where an int is.
    ("POST", "/api/sms", {**_SEND, "priority": []}, "priority"),
    ("POST", "/api/sms", {**_SEND, "priority": {}}, "priority"),
    ("POST", "/api/sms", {**_SEND, "priority": 10}, "priority"),
    ("POST", "/api/sms", {**_SEND, "on_unavailable": ["wait"]}, "on_unavailable"),
    ("POST", "/api/sms", {**_SEND, "message": ["hi"]}, "message"),
    ("POST", "/api/sms", {**_SEND, "recipient": {"n": 1}}, "recipient"),
    ("POST", "/api/sms", {**_SEND, "sim_card_id": "one"}, "sim_card_id"),
    ("POST", "/api/sms", {**_SEND, "sim_card_id": [1]}, "sim_card_id"),
    ("POST", "/api/sms", {**_SEND, "sim_card_id": True}, "sim_card_id"),
    ("POST", "/api/sms", {**_SEND, "sim_card_id": 10**30}, "sim_card_id"),
    ("POST", "/api/sms", {**_SEND, "send_at": {"at": 1}}, "send_at"),
    ("POST", "/api/sms/batch", {"messages": [{**_SEND, "priority": []}]}, "messages[0].priority"),
    (
        "POST",
        "/api/sms/batch",
        {"recipients": ["+4915112345678"], "message": "hi", "priority": {"a": 1}},
        "messages[0].priority",
    ),
    ("POST", "/api/sms/batch", {"recipients": [49151], "message": "hi"}, "messages[0].recipient"),
    ("POST", "/api/sim-cards", {"number": ["+4915100000001"]}, "number"),
    ("POST", "/api/sim-cards", {"number": "+4915100000001", "status": ["active"]}, "status"),
    ("POST", "/api/sim-cards", {"number": "+4915100000001", "label": 5}, "label"),
    ("POST", "/api/sim-cards", {"number": "+4915100000001", "limit_per_day": "lots"}, "limit_per_day"),
    ("POST", "/api/users", {"username": "typo1", "password": "a long password", "role": ["admin"]}, "role"),
    ("POST", "/api/users", {"username": ["typo1"], "password": "a long password"}, "username"),
    ("POST", "/api/users", {"username": "typo1", "password": 12345678901}, "password"),
    ("POST", "/api/api-keys", {"name": {"n": 1}}, "name"),
    ("POST", "/api/api-keys", {"name": "k", "user_id": "me"}, "user_id"),
    ("POST", "/api/api-keys", {"name": "k", "expires_at": [2099]}, "expires_at"),
    ("POST", "/api/opt-outs", {"number": 4915100000002}, "number"),
    ("POST", "/api/opt-outs", {"number": "+4915100000002", "note": {"n": 1}}, "note"),
    ("POST", "/api/webhooks", {"url": ["https://example.org/hook"]}, "url"),
    ("POST", "/api/webhooks", {"url": "https://example.org/hook", "events": "message.sent"}, "events"),
    ("POST", "/api/webhooks", {"url": "https://example.org/hook", "secret": 1234567890123456789}, "secret"),
]


@pytest.mark.parametrize("method,path,body,field", _MISTYPED, ids=[f"{m} {p} {f}" for m, p, _, f in _MISTYPED])
def test_a_field_of_the_wrong_type_is_a_400_that_names_it_and_writes_nothing(
    client, alice, engine, method, path, body, field
):
    before = _counts(engine)
    body = assert_error(client.open(path, method=method, json=body, headers=alice.headers), 400)
    assert field in body["fields"], body
    assert _counts(engine) == before


@pytest.mark.parametrize("field,value", [("sim_card_id", "Infinity"), ("sim_card_id", "-Infinity")])
def test_a_non_finite_json_number_where_an_int_is_expected_is_a_400(client, alice, engine, field, value):
    before = _counts(engine)
    raw = f'{{"recipient": "+4915112345678", "message": "hi", "{field}": {value}}}'
    r = client.post("/api/sms", data=raw, headers={**alice.headers, "Content-Type": "application/json"})
    assert field in assert_error(r, 400)["fields"]
    assert _counts(engine) == before


def test_a_put_with_a_limit_of_infinity_is_a_400(client, alice, sim, engine):
    r = client.put(
        f"/api/sim-cards/{sim.id}",
        data='{"limit_per_day": Infinity}',
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert "limit_per_day" in assert_error(r, 400)["fields"]


_NUL_BODIES = [
    ("POST", "/api/sms", {"recipient": "+4915112345678", "message": "hi\u0000there"}, "message"),
    (
        "POST",
        "/api/sms/batch",
        {
            "messages": [
                {"recipient": "+4915112345678", "message": "ok"},
                {"recipient": "+4915112345678", "message": "\u0000"},
            ]
        },
        "messages[1].message",
    ),
    ("POST", "/api/auth", {"username": "bob\u0000", "password": "whatever it is"}, "username"),
    ("POST", "/api/api-keys", {"name": "key\u0000"}, "name"),
    ("POST", "/api/sim-cards", {"number": "+4915100000003", "label": "a\u0000b"}, "label"),
    ("POST", "/api/opt-outs", {"number": "+4915100000004", "note": "\u0000"}, "note"),
    ("POST", "/api/sms", {"recipient": "+4915112345678", "message": "hi", "x\u0000": 1}, "x\u0000"),
]


@pytest.mark.parametrize("method,path,body,field", _NUL_BODIES, ids=[f"{m} {p} {f!r}" for m, p, _, f in _NUL_BODIES])
def test_a_nul_character_in_a_json_body_is_a_400_that_names_the_field(client, alice, engine, method, path, body, field):
    before = _counts(engine)
    body = assert_error(client.open(path, method=method, json=body, headers=alice.headers), 400)
    assert body["code"] == "nul_character" and field in body["fields"], body
    assert _counts(engine) == before


def test_a_nul_in_a_sim_label_update_is_a_400(client, alice, sim, engine):
    r = client.put(f"/api/sim-cards/{sim.id}", json={"label": "office\u0000"}, headers=alice.headers)
    assert assert_error(r, 400)["fields"] == {"label": "must not contain a NUL character (\\u0000)"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT label FROM sim_cards WHERE id = :id"), {"id": sim.id}).scalar() is None


def test_a_nul_in_the_idempotency_key_is_a_400(client, bob, engine):
    before = _counts(engine)
    r = client.post("/api/sms", json=_SEND, headers={**bob.headers, "Idempotency-Key": "key\u0000one"})
    assert "Idempotency-Key" in assert_error(r, 400)["fields"]
    assert _counts(engine) == before


@pytest.mark.parametrize(
    "path,field",
    [
        ("/api/sms/outbox?q=%00", "q"),
        ("/api/sms/outbox?number=%00", "number"),
        ("/api/sms/inbox?q=a%00", "q"),
        ("/api/sms-status?number=%2B49%00", "number"),
        ("/api/logs?action=%00", "action"),
        ("/api/logs?status=%00", "status"),
        ("/api/opt-outs?q=%00", "q"),
        ("/api/opt-outs/%2B49%00", "path"),
    ],
)
def test_a_nul_in_the_url_is_a_400_that_names_the_parameter(client, alice, path, field):
    method = "DELETE" if path.startswith("/api/opt-outs/") else "GET"
    body = assert_error(client.open(path, method=method, headers=alice.headers), 400)
    assert body["code"] == "nul_character" and field in body["fields"]


def test_an_exhausted_connection_pool_is_a_503(app, client, bob, monkeypatch):
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    def exhausted():
        raise PoolTimeout("QueuePool limit of size 5 overflow 0 reached, connection timed out, timeout 10.00")

    monkeypatch.setitem(app.view_functions, "auth.me", exhausted)
    body = assert_error(client.get("/api/me", headers=bob.headers), 503)
    assert body["code"] == "database_busy"
