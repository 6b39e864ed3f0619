"""One error format for every failure, and nothing half-written."""
from __future__ import annotations

import pytest
from .api_support import count_rows


def assert_error(r, status):
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.is_json
    body = r.get_json()
    assert body["error"] and body["message"] == body["error"] and body["code"]
    return body


def test_bad_json_is_a_400(client, bob, engine):
    before = count_rows(engine, "messages")
    r = client.post("/api/sms", data='{"recipient": "+4915112345678", "message": ', headers={
        **bob.headers, "Content-Type": "application/json"})
    assert assert_error(r, 400)["code"] == "invalid_json"
    r = client.post("/api/sms", data="[1, 2]", headers={**bob.headers, "Content-Type": "application/json"})
    assert "JSON object" in assert_error(r, 400)["error"]
    assert count_rows(engine, "messages") == before


def test_a_wrong_content_type_is_a_415(client, bob):
    r = client.post("/api/sms", data="recipient=%2B4915112345678&message=hi",
                    headers={**bob.headers, "Content-Type": "application/x-www-form-urlencoded"})
    assert "application/json" in assert_error(r, 415)["error"]


def test_an_oversized_body_is_a_413(client, bob):
    r = client.post("/api/sms", json={"recipient": "+4915112345678", "message": "x" * 300_000}, headers=bob.headers)
    assert_error(r, 413)


@pytest.mark.parametrize("method,path,status", [("GET", "/api/nothing-here", 404), ("DELETE", "/api/sms", 405),
                                                ("GET", "/api/sim-cards/abc", 404)])
def test_unknown_routes_and_methods_are_json(client, bob, method, path, status):
    assert_error(client.open(path, method=method, headers=bob.headers), status)


def test_a_request_id_goes_in_and_out(client, bob):
    r = client.get("/api/me", headers={**bob.headers, "X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    r = client.get("/api/me", headers={**bob.headers, "X-Request-ID": "bad id with spaces"})
    assert r.headers["X-Request-ID"] != "bad id with spaces" and len(r.headers["X-Request-ID"]) == 32


def test_cors_answers_only_allowed_origins(database_url, redis_url, mqtt_prefix):
    from .api_support import api_env
    from smsgw_api import create_app
    from smsgw_api.extensions import db

    app = create_app({"ENV": api_env(database_url, redis_url, mqtt_prefix,
                                     CORS_ALLOWED_ORIGINS="https://gw.example.org")})
    try:
        c = app.test_client()
        ok = c.get("/healthz", headers={"Origin": "https://gw.example.org"})
        assert ok.headers["Access-Control-Allow-Origin"] == "https://gw.example.org"
        other = c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
    finally:
        db.dispose(app)
