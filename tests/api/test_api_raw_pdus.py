"""Received PDUs the worker kept raw (undecodable, or parts of an incomplete
message): listed for admins only; and ending a USSD menu session."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.orm import Session

from smsgw_common.models import RAW_INCOMPLETE_PART, RAW_UNDECODABLE, RawInboundPdu

from .api_support import make_sim


def _keep(engine, sim, kind: str, pdu: str) -> int:
    with Session(engine) as s:
        row = RawInboundPdu(
            kind=kind, pdu=pdu, reason="compressed user data", sim_card_id=sim.id, modem_id=sim.modem_id, origin="SM:3"
        )
        s.add(row)
        s.commit()
        return row.id


def test_an_admin_lists_the_pdus_no_decoder_could_read_newest_first(client, alice, engine):
    sim = make_sim(engine)
    first = _keep(engine, sim, RAW_UNDECODABLE, "0004AA")
    second = _keep(engine, sim, RAW_INCOMPLETE_PART, "0004BB")
    r = client.get(f"/api/modems/raw-pdus?modem_id={sim.modem_id}", headers=alice.headers)
    assert r.status_code == 200
    assert [(x["id"], x["kind"], x["pdu"], x["origin"]) for x in r.get_json()["raw_pdus"]] == [
        (second, RAW_INCOMPLETE_PART, "0004BB", "SM:3"),
        (first, RAW_UNDECODABLE, "0004AA", "SM:3"),
    ]
    only = client.get(f"/api/modems/raw-pdus?modem_id={sim.modem_id}&kind=undecodable", headers=alice.headers)
    assert [x["id"] for x in only.get_json()["raw_pdus"]] == [first]
    older = client.get(f"/api/modems/raw-pdus?modem_id={sim.modem_id}&before_id={second}", headers=alice.headers)
    assert [x["id"] for x in older.get_json()["raw_pdus"]] == [first]


def test_raw_pdus_are_for_admins_and_bad_filters_are_refused(client, alice, bob, charlie):
    assert client.get("/api/modems/raw-pdus", headers=bob.headers).status_code == 403
    assert client.get("/api/modems/raw-pdus", headers=charlie.headers).status_code == 403
    r = client.get("/api/modems/raw-pdus?kind=everything", headers=alice.headers)
    assert r.status_code == 400 and "kind" in r.get_json()["fields"]
    assert client.get("/api/modems/raw-pdus?limit=0", headers=alice.headers).status_code == 400


def test_an_open_ussd_session_is_ended_with_cancel(client, alice, engine, mqtt_prefix):
    sim = make_sim(engine)
    seen: list[dict] = []
    ready = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2)

    def on_message(cl, userdata, msg):
        command = json.loads(msg.payload)
        seen.append(command["args"])
        reply = {"request_id": command["request_id"], "ok": True, "result": {"session_open": False, "text": ""}}
        cl.publish(f"{mqtt_prefix}modems/{sim.modem_id}/command/reply", json.dumps(reply), qos=1)

    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(f"{mqtt_prefix}modems/{sim.modem_id}/command", qos=1)
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = on_message
    c.connect("127.0.0.1", 1883)
    c.loop_start()
    try:
        assert ready.wait(5)
        r = client.post(f"/api/modems/{sim.modem_id}/ussd", json={"cancel": True}, headers=alice.headers)
        assert r.status_code == 200 and r.get_json()["result"]["session_open"] is False
        assert seen == [{"cancel": True}]
    finally:
        c.loop_stop()
        c.disconnect()
