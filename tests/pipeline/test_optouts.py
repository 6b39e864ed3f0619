"""Opt-outs: STOP and START from recipients, the admin's list, and sending
to an opted-out number refused with a clear 4xx. Keywords are applied from
the inbound messages in Postgres (MQTT only wakes the applier up)."""

from __future__ import annotations

import secrets
import time

from sqlalchemy import func, select, text
from support.waits import holds_for

from smsgw_common.models import Message, OptOut

from .conftest import add_inbound, add_modem_and_sim, wait_until

CURSOR = "optouts.inbound_messages"


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
    holds_for(lambda: rows_for(db_session, who) == 1, 0.5, message="one opt-out row for a repeated STOP")
    rows = api.get("/api/opt-outs", people["alice"], params={"q": who}).json()["opt_outs"]
    assert len(rows) == 1 and rows[0]["source"] == "keyword"
    add_inbound(db_session, mqtt, sim_id, who, "Start")
    wait_until(lambda: not listed(api, people, who), 10, 0.1, "the opt-in")


def store_inbound(db_session, sim_id: int, sender: str, text_: str) -> int:
    """An inbound SMS committed as a worker records it, and nothing
    published: its MQTT copy was lost (broker down, leader died with it)."""
    with db_session() as s:
        msg = Message(
            direction="inbound",
            sender=sender,
            recipient="+4915100000001",
            message=text_,
            status="received",
            sim_card_id=sim_id,
        )
        s.add(msg)
        s.commit()
        return msg.id


def rows_for(db_session, who: str) -> int:
    with db_session() as s:
        return s.scalar(select(func.count()).select_from(OptOut).where(OptOut.number == who))


def updates_for(sock, who: str) -> list[dict]:
    return sock.seen("opt_out_update", lambda d: d["number"] == who)


def cursor(db_session) -> int:
    with db_session() as s:
        return s.scalar(text("SELECT last_id FROM event_cursors WHERE name = :n"), {"n": CURSOR})


def test_a_stop_with_no_mqtt_copy_still_opts_out_exactly_once(api, people, db_session, sockets):
    _, sim_id = add_modem_and_sim(db_session)
    admin = sockets(people["alice"])
    viewer = sockets(people["carol"])
    who = number()
    store_inbound(db_session, sim_id, who, "STOP")
    wait_until(lambda: listed(api, people, who), 10, 0.05, "the opt-out from the database alone")
    change = admin.wait_for("opt_out_update", lambda d: d["number"] == who)
    # Besides its place in the live feed (docs/realtime.md), exactly this:
    assert {k: v for k, v in change.items() if k != "feed"} == {"number": who, "opted_out": True, "keyword": "STOP"}
    # Several applier rounds: none may apply it again.
    holds_for(lambda: rows_for(db_session, who) == 1, 1.0, message="one opt-out row")
    assert rows_for(db_session, who) == 1
    assert len(updates_for(admin, who)) == 1
    assert not viewer.seen("opt_out_update")
    refused = api.post("/api/sms", people["bob"], {"recipient": who, "message": "hello"})
    assert refused.status_code == 422 and refused.json()["code"] == "recipient_opted_out"


def test_replaying_the_inbound_history_changes_and_announces_nothing(api, people, mqtt, db_session, sockets):
    _, sim_id = add_modem_and_sim(db_session)
    admin = sockets(people["alice"])
    who = number()
    stop_id = add_inbound(db_session, mqtt, sim_id, who, "STOP")
    admin.wait_for("opt_out_update", lambda d: d["number"] == who)
    # An operator (or a restore) moves the cursor back over the STOP. (The
    # cursor itself may still wait before an id gap, e.g. the id a refused
    # send drew: rows past a gap are applied at once all the same.)
    with db_session() as s:
        rewound = min(cursor(db_session), stop_id) - 1
        s.execute(text("UPDATE event_cursors SET last_id = :c WHERE name = :n"), {"c": rewound, "n": CURSOR})
        s.commit()
    # The applier re-reads from the rewound cursor in the round that applies this.
    marker = number()
    add_inbound(db_session, mqtt, sim_id, marker, "STOP")
    admin.wait_for("opt_out_update", lambda d: d["number"] == marker)
    holds_for(lambda: rows_for(db_session, who) == 1, 0.5, message="the rewound cursor applies nothing twice")
    assert rows_for(db_session, who) == 1 and rows_for(db_session, marker) == 1
    assert len(updates_for(admin, who)) == 1 and len(updates_for(admin, marker)) == 1


def test_an_inbound_stop_committed_after_a_later_one_is_not_skipped(api, people, mqtt, db_session):
    """Message ids come from a sequence; a writer that took id N can commit
    after another committed N+1. The cursor must not jump over N."""
    _, sim_id = add_modem_and_sim(db_session)
    slow_who, fast_who = number(), number()
    slow = db_session()
    try:
        slow.add(
            Message(
                direction="inbound",
                sender=slow_who,
                recipient="+4915100000001",
                message="STOP",
                status="received",
                sim_card_id=sim_id,
            )
        )
        slow.flush()  # id N taken, not committed
        add_inbound(db_session, mqtt, sim_id, fast_who, "STOP")  # id N+1, committed and published
        wait_until(lambda: listed(api, people, fast_who), 10, 0.05, "the later opt-out")
        # The late commit is the case under test: the applier moves on meanwhile.
        time.sleep(0.6)
        slow.commit()  # and no MQTT copy of it
    finally:
        slow.close()
    wait_until(lambda: listed(api, people, slow_who), 10, 0.05, "the late opt-out")
    assert rows_for(db_session, slow_who) == 1 and rows_for(db_session, fast_who) == 1


def test_a_stop_takes_effect_within_a_second(api, people, mqtt, db_session):
    _, sim_id = add_modem_and_sim(db_session)
    latencies = []
    for _ in range(3):
        who = number()
        start = time.monotonic()
        add_inbound(db_session, mqtt, sim_id, who, "STOP")
        wait_until(lambda w=who: rows_for(db_session, w), 10, 0.02, "the opt-out")
        latencies.append(time.monotonic() - start)
    assert sorted(latencies)[1] < 1.0, latencies


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
