"""Opt-outs: STOP and START from recipients, the admin's list, and sending
to an opted-out number refused with a clear 4xx."""
from __future__ import annotations

import secrets
import time

from .conftest import add_inbound, add_modem_and_sim, wait_until


def number() -> str:
    return f"+4916{secrets.randbelow(10**8):08d}"


def listed(api, people, who: str) -> bool:
    rows = api.get("/api/opt-outs", people["alice"], params={"q": who}).json()["opt_outs"]
    return any(r["number"] == who for r in rows)


def test_stop_opts_out_and_start_opts_back_in(api, people, mqtt, db_session):
    _, sim_id = add_modem_and_sim(db_session)
    who = number()
    add_inbound(db_session, mqtt, sim_id, who, "  stop! ")
    wait_until(lambda: listed(api, people, who), 10, 0.1, "the opt-out")
    add_inbound(db_session, mqtt, sim_id, who, "STOP")  # again: still one row
    time.sleep(0.5)
    rows = api.get("/api/opt-outs", people["alice"], params={"q": who}).json()["opt_outs"]
    assert len(rows) == 1 and rows[0]["source"] == "keyword"
    add_inbound(db_session, mqtt, sim_id, who, "Start")
    wait_until(lambda: not listed(api, people, who), 10, 0.1, "the opt-in")


def test_a_sentence_containing_stop_is_not_an_opt_out(api, people, mqtt, db_session):
    _, sim_id = add_modem_and_sim(db_session)
    who = number()
    add_inbound(db_session, mqtt, sim_id, who, "please don't stop the music")
    marker = number()
    add_inbound(db_session, mqtt, sim_id, marker, "QUIT")  # handled after the first one
    wait_until(lambda: listed(api, people, marker), 10, 0.1, "the later opt-out")
    assert not listed(api, people, who)


def test_sending_to_an_opted_out_number_is_refused(api, people, db_session):
    add_modem_and_sim(db_session)
    who = number()
    resp = api.post("/api/opt-outs", people["alice"], {"number": who, "note": "asked by phone"})
    assert resp.status_code == 201 and resp.json()["opt_out"]["source"] == "admin"
    refused = api.post("/api/sms", people["bob"], {"recipient": who, "message": "hello"})
    assert refused.status_code == 422 and refused.json()["code"] == "recipient_opted_out"
    assert api.delete(f"/api/opt-outs/{who}", people["alice"]).status_code == 200
    assert api.post("/api/sms", people["bob"], {"recipient": who, "message": "hello"}).status_code == 200


def test_only_admins_manage_the_list(api, people):
    assert api.get("/api/opt-outs", people["bob"]).status_code == 403
    assert api.post("/api/opt-outs", people["carol"], {"number": number()}).status_code == 403
    assert api.delete(f"/api/opt-outs/{number()}", people["bob"]).status_code == 403


def test_bad_numbers_and_unknown_entries_get_clear_errors(api, people):
    resp = api.post("/api/opt-outs", people["alice"], {"number": "call me maybe"})
    assert resp.status_code == 400 and "E.164" in resp.json()["fields"]["number"]
    missing = api.delete(f"/api/opt-outs/{number()}", people["alice"])
    assert missing.status_code == 404 and missing.json()["code"] == "opt_out_not_found"
    who = number()
    api.post("/api/opt-outs", people["alice"], {"number": who})
    again = api.post("/api/opt-outs", people["alice"], {"number": who})
    assert again.status_code == 200 and "already" in again.json()["message"]
