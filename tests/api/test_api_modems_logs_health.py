"""Modems (list, USSD over MQTT), the audit log, health and readiness."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from .api_support import make_sim


def _fake_worker(prefix: str, modem_id: str, answer: dict):
    """Plays the worker's side of the command topic: answers each command."""
    ready = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2)

    def on_message(cl, userdata, msg):
        command = json.loads(msg.payload)
        reply = {"request_id": command["request_id"], **answer}
        if answer.get("ok"):
            reply["result"] = {"code": command["args"]["code"], "text": "Balance: 12.34 EUR"}
        cl.publish(f"{prefix}modems/{modem_id}/command/reply", json.dumps(reply), qos=1)

    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(f"{prefix}modems/{modem_id}/command", qos=1)
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = on_message
    c.connect("127.0.0.1", 1883)
    c.loop_start()
    assert ready.wait(5)
    return c


def test_it_lists_modems_with_their_sims(client, charlie, engine):
    sim = make_sim(engine)
    modems = client.get("/api/modems", headers=charlie.headers).get_json()["modems"]
    mine = [m for m in modems if m["id"] == sim.modem_id][0]
    assert mine["online"] is True and mine["sim_card_id"] == sim.id and mine["number"] == sim.number
    assert mine["queue_depth"] == 0


def test_it_runs_a_ussd_code_through_the_worker(client, alice, engine, mqtt_prefix):
    sim = make_sim(engine)
    worker = _fake_worker(mqtt_prefix, sim.modem_id, {"ok": True})
    try:
        r = client.post(f"/api/modems/{sim.modem_id}/ussd", json={"code": "*100#"}, headers=alice.headers)
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["result"]["text"] == "Balance: 12.34 EUR"
    finally:
        worker.loop_stop()
        worker.disconnect()


def test_a_ussd_error_or_silence_is_reported(client, alice, engine, mqtt_prefix):
    sim = make_sim(engine)
    worker = _fake_worker(mqtt_prefix, sim.modem_id, {"ok": False, "error": "+CME ERROR: 100"})
    try:
        r = client.post(f"/api/modems/{sim.modem_id}/ussd", json={"code": "*100#"}, headers=alice.headers)
        assert r.status_code == 502 and "+CME ERROR: 100" in r.get_json()["error"]
    finally:
        worker.loop_stop()
        worker.disconnect()
    silent = make_sim(engine)
    r = client.post(f"/api/modems/{silent.modem_id}/ussd", json={"code": "*100#"}, headers=alice.headers)
    assert r.status_code == 504 and r.get_json()["code"] == "modem_timeout"


def test_it_refuses_bad_ussd_requests(client, alice, engine):
    sim = make_sim(engine)
    r = client.post(f"/api/modems/{sim.modem_id}/ussd", json={"code": "; reboot"}, headers=alice.headers)
    assert r.status_code == 400 and "code" in r.get_json()["fields"]
    assert client.post("/api/modems/unknown/ussd", json={"code": "*100#"}, headers=alice.headers).status_code == 404
    offline = make_sim(engine, online=False)
    r = client.post(f"/api/modems/{offline.modem_id}/ussd", json={"code": "*100#"}, headers=alice.headers)
    assert r.status_code == 409


def test_the_audit_log_records_who_did_what(client, alice, charlie):
    # A viewer reads SIM actions but not who acted from where (core/auditview.py).
    r = client.post(
        "/api/sim-cards",
        json={"number": "+4915155555555", "status": "inactive"},
        headers={**alice.headers, "X-Request-ID": "audit-test-1"},
    )
    assert r.status_code == 200
    logs = client.get("/api/logs?action=add_sim_card", headers=charlie.headers).get_json()["logs"]
    entry = [entry for entry in logs if entry["request_id"] == "audit-test-1"][0]
    assert entry["actor"].startswith("alice") and entry["status"] == "success" and entry["ip"] is None
    assert entry["sender_sim"] == "+4915155555555"
    logs = client.get("/api/logs?action=add_sim_card", headers=alice.headers).get_json()["logs"]
    assert [entry for entry in logs if entry["request_id"] == "audit-test-1"][0]["ip"] == "127.0.0.1"


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert {k: v["ok"] for k, v in ready.get_json()["checks"].items()} == {
        "database": True,
        "broker": True,
        "redis": True,
    }
