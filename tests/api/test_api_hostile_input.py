"""Hostile input is refused at the door: a 400 in the one error format that
names the field, and nothing written (docs/api-contract.md, "Validation")."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from .api_support import count_rows

_TABLES = ("messages", "sim_cards", "users", "api_keys", "opt_outs", "webhooks", "logs")
RECIPIENT = "+15550007777"


def _counts(engine):
    return {t: count_rows(engine, t) for t in _TABLES}


def _post_raw(client, path, raw: str | bytes, headers, method="POST"):
    return client.open(path, method=method, data=raw, headers={**headers, "Content-Type": "application/json"})


def _refused(r, field: str) -> dict:
    assert r.status_code == 400, r.get_data(as_text=True)[:500]
    body = r.get_json()
    assert body["error"] and body["message"] == body["error"] and body["code"]
    assert field in (body.get("fields") or {}), body
    return body


# --- timestamps: normalised to UTC, inside a documented window ---------------------

_OUT_OF_WINDOW = [
    "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
    "0001-01-01T00:00:00+14:00",  # 1 BC in UTC
    "9999-12-31T23:59:59+00:00",
    "1900-01-01T00:00:00Z",
    253402300800,  # Unix seconds past the year 9999
    -62135596800,
]


@pytest.mark.parametrize("when", _OUT_OF_WINDOW, ids=str)
@pytest.mark.parametrize("field", ["send_at", "expires_at"])
def test_a_send_time_outside_the_window_is_refused(client, bob, engine, field, when):
    before = _counts(engine)
    r = client.post("/api/sms", json={"recipient": RECIPIENT, "message": "x", field: when}, headers=bob.headers)
    _refused(r, field)
    assert _counts(engine) == before


@pytest.mark.parametrize("when", _OUT_OF_WINDOW, ids=str)
def test_a_batch_send_time_outside_the_window_is_refused(client, bob, engine, when):
    before = _counts(engine)
    r = client.post(
        "/api/sms/batch", json={"recipients": [RECIPIENT], "message": "x", "send_at": when}, headers=bob.headers
    )
    _refused(r, "messages[0].send_at")
    assert _counts(engine) == before


def test_send_at_more_than_a_year_ahead_or_a_week_behind_is_refused(client, bob, engine):
    now = datetime.now(UTC)
    for when in (now + timedelta(days=367), now - timedelta(days=8)):
        r = client.post(
            "/api/sms", json={"recipient": RECIPIENT, "message": "x", "send_at": when.isoformat()}, headers=bob.headers
        )
        _refused(r, "send_at")


def test_expires_at_more_than_ten_years_ahead_is_refused(client, bob):
    when = datetime.now(UTC) + timedelta(days=3700)
    r = client.post(
        "/api/sms", json={"recipient": RECIPIENT, "message": "x", "expires_at": when.isoformat()}, headers=bob.headers
    )
    _refused(r, "expires_at")


def test_a_send_time_with_an_offset_is_stored_in_utc(client, bob, sim):
    when = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    local = when.astimezone(__import__("datetime").timezone(timedelta(hours=-14)))
    r = client.post(
        "/api/sms",
        json={"recipient": RECIPIENT, "message": "x", "sim_card_id": sim.id, "send_at": local.isoformat()},
        headers=bob.headers,
    )
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["send_at"] == when.isoformat()


@pytest.mark.parametrize("when", _OUT_OF_WINDOW, ids=str)
def test_an_api_key_expiry_outside_the_window_is_refused_and_the_list_still_works(client, bob, engine, when):
    before = _counts(engine)
    _refused(client.post("/api/api-keys", json={"name": "k", "expires_at": when}, headers=bob.headers), "expires_at")
    assert _counts(engine) == before
    assert client.get("/api/api-keys", headers=bob.headers).status_code == 200


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1e30"])
@pytest.mark.parametrize("name", ["since", "until"])
def test_a_listing_filter_outside_the_window_is_a_400(client, charlie, name, when):
    from urllib.parse import quote

    _refused(client.get(f"/api/sms/outbox?{name}={quote(when)}", headers=charlie.headers), name)


# --- strings: no lone surrogates anywhere, no control characters in names -----------

_SURROGATE = "\ud800"
_SURROGATE_BODIES = [
    ("POST", "/api/auth", {"username": "bob" + _SURROGATE, "password": "whatever it is"}, "username"),
    ("POST", "/api/auth", {"username": "bob", "password": _SURROGATE}, "password"),
    ("POST", "/api/sms", {"recipient": RECIPIENT, "message": "hi" + _SURROGATE}, "message"),
    ("POST", "/api/sms/batch", {"recipients": [RECIPIENT], "message": _SURROGATE}, "message"),
    ("POST", "/api/api-keys", {"name": _SURROGATE}, "name"),
    ("POST", "/api/opt-outs", {"number": "+4915100000009", "note": _SURROGATE}, "note"),
    ("POST", "/api/webhooks", {"url": "https://example.org/" + _SURROGATE}, "url"),
    ("PUT", "/api/me/password", {"current_password": _SURROGATE, "new_password": "long enough pw"}, "current_password"),
    ("POST", "/api/users", {"username": "zed", "password": "x" * 12 + _SURROGATE}, "password"),
    ("POST", "/api/sms", {"recipient": RECIPIENT, "message": "hi", "k" + _SURROGATE: 1}, "k"),
]


@pytest.mark.parametrize(
    "method,path,body,field", _SURROGATE_BODIES, ids=[f"{m} {p} {f}" for m, p, _, f in _SURROGATE_BODIES]
)
def test_a_lone_surrogate_is_a_400_that_names_the_field(client, alice, engine, method, path, body, field):
    before = _counts(engine)
    # json.dumps writes the lone surrogate as the escape \ud800, as a hostile client would.
    r = _post_raw(client, path, json.dumps(body), alice.headers, method)
    _refused(r, field)
    assert _counts(engine) == before


def test_a_lone_surrogate_as_raw_bytes_is_a_400(client, alice, engine):
    before = _counts(engine)
    raw = b'{"recipient": "+15550007777", "message": "hi \xed\xa0\x80"}'
    _refused(_post_raw(client, "/api/sms", raw, alice.headers), "message")
    assert _counts(engine) == before


def test_a_lone_surrogate_in_a_sim_update_is_a_400(client, alice, sim):
    r = _post_raw(client, f"/api/sim-cards/{sim.id}", json.dumps({"label": _SURROGATE}), alice.headers, "PUT")
    _refused(r, "label")


_CONTROL = [
    ("POST", "/api/users", {"username": "eve\nadmin", "password": "a long password"}, "username"),
    ("POST", "/api/api-keys", {"name": "billing\x1b[31m"}, "name"),
    ("POST", "/api/sim-cards", {"number": "+4915100000011", "label": "desk\r\nX-Evil: 1"}, "label"),
    ("POST", "/api/auth", {"username": "bob\x07", "password": "whatever it is"}, "username"),
    ("POST", "/api/sms", {"recipient": RECIPIENT, "message": "bell \x07"}, "message"),
]


@pytest.mark.parametrize("method,path,body,field", _CONTROL, ids=[f"{m} {p} {f}" for m, p, _, f in _CONTROL])
def test_a_control_character_where_none_belongs_is_a_400(client, alice, engine, method, path, body, field):
    before = _counts(engine)
    _refused(client.open(path, method=method, json=body, headers=alice.headers), field)
    assert _counts(engine) == before


def test_an_sms_text_may_hold_newlines_and_tabs(client, bob, sim):
    r = client.post(
        "/api/sms",
        json={"recipient": RECIPIENT, "message": "line one\nline\ttwo", "sim_card_id": sim.id},
        headers=bob.headers,
    )
    assert r.status_code == 200, r.get_json()


# --- JSON shape: depth and element counts bounded before the parser recurses ---------


@pytest.mark.parametrize("path", ["/api/auth", "/api/sms", "/api/sms/batch", "/api/users"])
def test_deeply_nested_json_is_a_400_even_unauthenticated(client, engine, path):
    before = _counts(engine)
    raw = "[" * 100_000 + "]" * 100_000
    r = _post_raw(client, path, raw, {})
    assert r.status_code == 400, r.get_data(as_text=True)[:300]
    assert r.get_json()["code"] == "json_too_deep"
    nested = '{"username": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + ', "password": "x"}'
    assert _post_raw(client, path, nested, {}).get_json()["code"] == "json_too_deep"
    assert _counts(engine) == before


def test_brackets_inside_strings_do_not_count_as_depth(client, bob, sim):
    r = client.post(
        "/api/sms",
        json={"recipient": RECIPIENT, "message": "[[[[{{{{" * 10 + '\\"[', "sim_card_id": sim.id},
        headers=bob.headers,
    )
    assert r.status_code == 200, r.get_json()


def test_a_body_with_too_many_elements_is_a_400(client, bob, engine):
    before = _counts(engine)
    raw = '{"recipients": [' + ",".join(["1"] * 60_000) + '], "message": "x"}'
    r = _post_raw(client, "/api/sms/batch", raw, bob.headers)
    assert r.status_code == 400 and r.get_json()["code"] == "json_too_large", r.get_data(as_text=True)[:300]
    assert _counts(engine) == before


# --- numbers: ASCII digits only ---------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "+\u0661\u0665\u0665\u0665\u0660\u0660\u0660\u0667\u0667\u0667\u0667",  # Arabic-Indic
        "+\uff11\uff15\uff15\uff15\uff10\uff10\uff10\uff17\uff17\uff17\uff17",  # full-width
        "+1555\u09670007777",  # one Bengali digit
        "\uff0b15550007777",  # full-width plus
    ],
)
def test_a_recipient_with_non_ascii_digits_is_refused(client, bob, engine, number):
    before = _counts(engine)
    _refused(client.post("/api/sms", json={"recipient": number, "message": "x"}, headers=bob.headers), "recipient")
    _refused(
        client.post("/api/sms/batch", json={"recipients": [number], "message": "x"}, headers=bob.headers),
        "messages[0].recipient",
    )
    assert _counts(engine) == before


def test_a_sim_or_opt_out_number_with_non_ascii_digits_is_refused(client, alice, engine):
    before = _counts(engine)
    number = "+\u0664\u0669\u0661\u0665\u0661\u0660\u0660\u0660\u0660\u0660\u0661\u0662"
    _refused(client.post("/api/sim-cards", json={"number": number}, headers=alice.headers), "number")
    _refused(client.post("/api/opt-outs", json={"number": number}, headers=alice.headers), "number")
    assert _counts(engine) == before


# --- lengths: every free-text field is bounded --------------------------------------------


def test_an_overlong_login_username_is_refused_before_it_reaches_the_audit_trail_or_redis(client, engine):
    before = count_rows(engine, "logs")
    r = client.post("/api/auth", json={"username": "u" * 250_000, "password": "whatever it is"})
    assert r.status_code in (400, 413)
    if r.status_code == 400:
        _refused(r, "username")
    r = client.post("/api/auth", json={"username": "u" * 5000, "password": "whatever it is"})
    _refused(r, "username")
    assert count_rows(engine, "logs") == before


_TOO_LONG = [
    ("POST", "/api/auth", {"username": "bob", "password": "p" * 5000}, "password"),
    ("POST", "/api/api-keys", {"name": "n" * 101}, "name"),
    ("POST", "/api/sim-cards", {"number": "+4915100000012", "label": "l" * 101}, "label"),
    ("POST", "/api/opt-outs", {"number": "+4915100000013", "note": "n" * 501}, "note"),
    ("POST", "/api/webhooks", {"url": "https://example.org/" + "a" * 2100}, "url"),
    ("POST", "/api/sms", {"recipient": "+" + "1" * 200, "message": "x"}, "recipient"),
    ("POST", "/api/sms", {"recipient": RECIPIENT, "message": "x" * 20_000}, "message"),
    ("POST", "/api/modems/m1/ussd", {"code": "*" * 100}, "code"),
]


@pytest.mark.parametrize("method,path,body,field", _TOO_LONG, ids=[f"{m} {p} {f}" for m, p, _, f in _TOO_LONG])
def test_an_overlong_string_is_a_400_that_names_the_field(client, alice, engine, method, path, body, field):
    before = _counts(engine)
    _refused(client.open(path, method=method, json=body, headers=alice.headers), field)
    assert _counts(engine) == before


@pytest.mark.parametrize(
    "query,field",
    [("q=" + "a" * 201, "q"), ("number=" + "1" * 100, "number"), ("status=" + "queued," * 100, "status")],
)
def test_an_overlong_query_parameter_is_a_400(client, charlie, query, field):
    _refused(client.get(f"/api/sms/outbox?{query}", headers=charlie.headers), field)


# --- batches: the same message twice to one recipient -----------------------------------


def test_a_batch_that_repeats_a_recipient_and_text_is_refused_item_by_item(client, bob, sim, engine):
    before = _counts(engine)
    r = client.post(
        "/api/sms/batch",
        json={"recipients": [RECIPIENT, "+1 555 000 7777", "+15550008888", "0015550007777"], "message": "same"},
        headers=bob.headers,
    )
    body = _refused(r, "messages[1].recipient")
    assert "messages[0]" in body["fields"]["messages[1].recipient"]
    assert "messages[3].recipient" in body["fields"] and "messages[2].recipient" not in body["fields"]
    assert body["code"] == "duplicate_recipient"
    assert _counts(engine) == before


def test_a_batch_may_send_different_texts_to_one_recipient(client, bob, sim):
    r = client.post(
        "/api/sms/batch",
        json={
            "messages": [
                {"recipient": RECIPIENT, "message": "part one", "sim_card_id": sim.id},
                {"recipient": RECIPIENT, "message": "part two", "sim_card_id": sim.id},
            ]
        },
        headers=bob.headers,
    )
    assert r.status_code == 201, r.get_json()


# --- every string field of every documented body, from the document itself ---------


def _string_fields(doc, schema):
    """(name, maxLength) of each property that may be a string."""
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    for name, prop in schema.get("properties", {}).items():
        options = prop.get("anyOf", [prop])
        for option in options:
            if option.get("type") == "string" and "maxLength" in option and option.get("format") != "uuid":
                yield name, option["maxLength"]
                break


def _documented_string_fields(app):
    with app.test_client() as c:
        doc = c.get("/api/openapi.json").get_json()
    out = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if op.get("x-request-model") in (None, "none") or path == "/api/generate-api-key":
                continue  # generate-api-key takes a JWT only; its body is CreateApiKey, tested via /api/api-keys
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            for name, max_length in _string_fields(doc, schema):
                out.append(
                    (
                        method.upper(),
                        path.replace("{", "")
                        .replace("}", "")
                        .replace("sim_id", "999999")
                        .replace("user_id", "999999")
                        .replace("seed_id", "00000000-0000-4000-8000-000000000000")
                        .replace("modem_id", "m1"),
                        name,
                        max_length,
                    )
                )
    return out


def _base_body(path: str, persona) -> dict:
    # What the route reads before its model: the login's two names, a batch's
    # recipients, the caller's current password.
    if path == "/api/me/password":
        return {"current_password": persona.password}
    if path == "/api/auth":
        return {"username": "bob", "password": "whatever it is"}
    if path == "/api/sms/batch":
        return {"recipients": [RECIPIENT], "message": "hi"}
    return {}


def _named(fields: dict, name: str) -> bool:
    return any(key == name or key.endswith("." + name) for key in fields)


def test_every_documented_string_field_refuses_more_than_its_max_length(app, client, alice, engine):
    cases = _documented_string_fields(app)
    assert len(cases) >= 25, cases  # the document lost its bodies
    before = _counts(engine)
    for method, path, name, max_length in cases:
        body = {**_base_body(path, alice), name: "7" * (max_length + 1)}
        r = client.open(path, method=method, json=body, headers=alice.headers)
        assert r.status_code == 400, (method, path, name, r.get_json())
        assert _named(r.get_json()["fields"], name), (method, path, name, r.get_json())
    assert _counts(engine) == before


def test_every_documented_string_field_refuses_a_number_and_a_lone_surrogate(app, client, alice, engine):
    before = _counts(engine)
    for method, path, name, _ in _documented_string_fields(app):
        for value in (12345, "x\ud800"):
            body = {**_base_body(path, alice), name: value}
            r = _post_raw(client, path, json.dumps(body), alice.headers, method)
            assert r.status_code == 400, (method, path, name, value, r.get_json())
            assert _named(r.get_json()["fields"], name), (method, path, name, r.get_json())
    assert _counts(engine) == before
