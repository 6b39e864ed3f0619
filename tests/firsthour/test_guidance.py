"""Every problem comes with its fix: the 503 when no SIM can send says why,
and the modems listing names each modem's problem and what to do."""

from __future__ import annotations

import pytest
from api.api_support import make_sim
from sqlalchemy import text
from sqlalchemy.orm import Session

from smsgw_common.models import Modem

RECIPIENT = "+15550001111"


def send(client, persona):
    return client.post("/api/sms", json={"recipient": RECIPIENT, "message": "hello"}, headers=persona.headers)


def test_with_no_modem_at_all_the_api_says_how_to_add_one(client, bob, charlie):
    listing = client.get("/api/modems", headers=charlie.headers).get_json()
    assert listing["count"] == 0
    assert listing["guidance"]["code"] == "no_modem"
    assert "make probe" in listing["guidance"]["fix"] and "make add-modem" in listing["guidance"]["fix"]

    sims = client.get("/api/sim-cards", headers=charlie.headers).get_json()
    assert sims["guidance"]["code"] == "no_modem" and "make add-modem" in sims["guidance"]["fix"]

    r = send(client, bob)
    body = r.get_json()
    assert r.status_code == 503 and body["code"] == "no_sim_available"
    # The seed's text stays for the clients that show it.
    assert body["message"] == "No available SIM cards! Add or activate a SIM card first."
    assert body["reason"] == "no_modem" and "make add-modem" in body["hint"]


def test_with_every_modem_offline_the_503_says_so_and_names_them(client, bob, charlie, engine):
    with Session(engine) as s:
        s.add_all([Modem(id="gone-a", online=False), Modem(id="gone-b", online=False)])
        s.commit()
    body = send(client, bob).get_json()
    assert body["reason"] == "no_modem_online"
    assert "gone-a, gone-b" in body["hint"] and "GET /api/modems" in body["hint"]
    listing = client.get("/api/modems", headers=charlie.headers).get_json()
    assert listing["guidance"] is None
    assert {m["id"]: m["problems"][0]["code"] for m in listing["modems"]} == {"gone-a": "offline", "gone-b": "offline"}


def test_with_every_sim_inactive_the_503_says_to_activate_one(client, bob, engine):
    make_sim(engine, status="inactive")
    body = send(client, bob).get_json()
    assert body["reason"] == "no_active_sim" and "Activate" in body["hint"]
    sims = client.get("/api/sim-cards", headers=bob.headers).get_json()
    assert sims["guidance"] == {"code": "no_active_sim", "problem": body["message"], "fix": body["hint"]}


def test_when_every_sim_is_at_its_limit_the_429_says_what_to_do(client, bob, engine):
    sim = make_sim(engine, limit_per_minute=1)
    try:
        assert send(client, bob).status_code == 200
        r = send(client, bob)
        assert r.status_code == 429 and r.get_json()["reason"] == "limits_reached"
        assert "raise the limits" in r.get_json()["hint"]
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE sim_cards SET status = 'inactive' WHERE id = :id"), {"id": sim.id})


@pytest.mark.parametrize(
    ("online", "last_error", "registration", "signal", "sims", "expected"),
    [
        (False, "cannot open /dev/modem: [Errno 13] Permission denied", None, None, 0, "cannot_open_port"),
        (False, "unplugged: /dev/modem vanished: device reports readiness", None, None, 0, "cannot_open_port"),
        (False, "sim_missing: +CME ERROR: 10", None, None, 0, "no_sim"),
        (False, "pin_required: SIM PIN", None, None, 0, "pin_required"),
        (False, "pin_rejected: the SIM refused MODEM_PIN", None, None, 0, "pin_rejected"),
        (False, "puk_required: SIM PUK", None, None, 0, "pin_rejected"),
        (True, "AT+CSCA? gave no SMSC address", "home", 20, 1, "no_smsc"),
        (True, None, "searching", 20, 1, "not_registered"),
        (True, None, "home", 99, 1, "no_signal"),
        (True, None, "home", 3, 1, "no_signal"),
        (True, None, "home", 20, 0, "no_sim"),
        (False, None, None, None, 0, "offline"),
    ],
)
def test_each_modem_problem_is_named_with_its_fix(
    client, charlie, engine, online, last_error, registration, signal, sims, expected
):
    modem_id = f"p-{expected}-{online}-{signal}-{sims}"
    with Session(engine) as s:
        s.merge(
            Modem(
                id=modem_id,
                online=online,
                last_error=last_error,
                registration=registration,
                signal_quality=signal,
            )
        )
        s.commit()
    if sims:
        make_sim(engine, modem_id=modem_id, online=online)
    listing = client.get("/api/modems", headers=charlie.headers).get_json()
    mine = next(m for m in listing["modems"] if m["id"] == modem_id)
    assert [p["code"] for p in mine["problems"]][:1] == [expected]
    assert all(p["problem"] and p["fix"] for p in mine["problems"])


def test_a_healthy_modem_has_no_problem(client, charlie, engine):
    sim = make_sim(engine)
    listing = client.get("/api/modems", headers=charlie.headers).get_json()
    assert next(m for m in listing["modems"] if m["id"] == sim.modem_id)["problems"] == []
    assert client.get("/api/sim-cards", headers=charlie.headers).get_json()["guidance"] is None
