"""Every endpoint of this service refuses a role below the one it needs (403)
and lets the role it needs through."""

from __future__ import annotations

import pytest

ROLE_ORDER = ["viewer", "user", "admin"]

# (method, path, json body, weakest role allowed)
ENDPOINTS = [
    ("GET", "/api/me", None, "viewer"),
    ("GET", "/api/sim-cards", None, "viewer"),
    ("POST", "/api/sim-cards", {"number": "+4915100000001", "status": "inactive"}, "admin"),
    ("PUT", "/api/sim-cards/{sim}", {"label": "x"}, "admin"),
    ("DELETE", "/api/sim-cards/999999", None, "admin"),
    ("POST", "/api/sms", {"recipient": "+4915112345678", "message": "hi", "sim_card_id": "{sim}"}, "user"),
    ("POST", "/api/sms/batch", {"recipients": ["+4915112345678"], "message": "hi", "sim_card_id": "{sim}"}, "user"),
    ("POST", "/api/sms/preview", {"message": "hi"}, "viewer"),
    ("GET", "/api/sms/inbox", None, "viewer"),
    ("GET", "/api/sms/outbox", None, "viewer"),
    ("GET", "/api/sms-status", None, "viewer"),
    ("GET", "/api/sms/999999", None, "viewer"),
    ("POST", "/api/sms/999999/cancel", None, "user"),
    ("GET", "/api/logs", None, "viewer"),
    ("GET", "/api/users", None, "admin"),
    ("POST", "/api/users", {"username": "x"}, "admin"),
    ("PUT", "/api/users/999999", {"role": "user"}, "admin"),
    ("DELETE", "/api/users/999999", None, "admin"),
    ("GET", "/api/api-keys", None, "viewer"),
    ("POST", "/api/api-keys", {"name": "roles test"}, "viewer"),
    ("DELETE", "/api/api-keys/999999", None, "viewer"),
    ("GET", "/api/modems", None, "viewer"),
    ("POST", "/api/modems/nope/ussd", {"code": "*100#"}, "admin"),
    ("GET", "/api/sites", None, "viewer"),
    ("PUT", "/api/sites/prefixes", {"prefixes": []}, "admin"),
    ("GET", "/api/nodes", None, "admin"),
    ("POST", "/api/nodes", {"name": "roles-test"}, "admin"),
    ("POST", "/api/nodes/999999/token", None, "admin"),
    ("DELETE", "/api/nodes/999999", None, "admin"),
]


def _fill(value, sim_id):
    if isinstance(value, str):
        return int(value.format(sim=sim_id)) if value == "{sim}" else value.format(sim=sim_id)
    if isinstance(value, dict):
        return {k: _fill(v, sim_id) for k, v in value.items()}
    return value


@pytest.mark.parametrize("method,path,body,role", ENDPOINTS, ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
def test_it_enforces_the_role_of_each_endpoint(client, alice, bob, charlie, sim, method, path, body, role):
    personas = {"viewer": charlie, "user": bob, "admin": alice}
    for persona_role, persona in personas.items():
        r = client.open(path.format(sim=sim.id), method=method, json=_fill(body, sim.id), headers=persona.headers)
        if ROLE_ORDER.index(persona_role) < ROLE_ORDER.index(role):
            assert r.status_code == 403, (persona_role, r.status_code, r.get_json())
            assert "role" in r.get_json()["error"]
        else:
            assert r.status_code not in (401, 403), (persona_role, r.status_code, r.get_json())


@pytest.mark.parametrize("method,path,body,role", ENDPOINTS, ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
def test_it_needs_credentials_on_each_endpoint(client, sim, method, path, body, role):
    r = client.open(path.format(sim=sim.id), method=method, json=_fill(body, sim.id))
    assert r.status_code == 401
