"""Nothing waits forever by default: queued messages expire after the default
validity, SIMs of a modem gone for long become inactive and come back when
their SIM is seen again. Driven through one sweep at a chosen `now`."""

from __future__ import annotations

import secrets
import subprocess
from datetime import timedelta
from pathlib import Path

from api.api_support import make_sim
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from smsgw_api.core.extensions import runtime
from smsgw_api.pipeline.sweeper import sweep_once
from smsgw_api.routes.deps import router
from smsgw_common.models import Message, MessageEvent, Modem, SimCard, utcnow

SQL = Path(__file__).resolve().parents[2] / "scripts" / "retire-demo-sims.sql"


def queued(engine, sim_id: int, **fields) -> int:
    with Session(engine) as s:
        msg = Message(
            direction="outbound",
            recipient=f"+4917{secrets.randbelow(10**8):08d}",
            message="waiting",
            status="queued",
            sim_card_id=sim_id,
            segments=1,
            **fields,
        )
        s.add(msg)
        s.commit()
        return msg.id


def sweep(app, now):
    with app.app_context():
        return sweep_once(runtime(app), router(app), now=now)


def test_a_queued_message_expires_after_the_default_validity(app, engine):
    sim = make_sim(engine, online=False)
    now = utcnow()
    fresh = queued(engine, sim.id, timestamp=now)
    old = queued(engine, sim.id, timestamp=now - timedelta(hours=25))
    scheduled = queued(engine, sim.id, timestamp=now - timedelta(hours=30), send_at=now - timedelta(hours=1))
    own_validity = queued(engine, sim.id, timestamp=now - timedelta(hours=30), expires_at=now + timedelta(hours=1))

    counts = sweep(app, now)

    with Session(engine) as s:
        state = {i: s.get(Message, i).status for i in (fresh, old, scheduled, own_validity)}
        expired = s.get(Message, old)
        detail = s.query(MessageEvent.detail).filter_by(message_id=old).order_by(MessageEvent.id.desc()).first()[0]
    assert state == {fresh: "queued", old: "expired", scheduled: "queued", own_validity: "queued"}
    assert expired.error_text == "not sent within its validity"
    assert "DEFAULT_VALIDITY_HOURS" in detail and counts["expired"] >= 1


def test_a_sim_whose_modem_is_gone_long_becomes_inactive_and_returns_with_its_modem(app, engine, client, bob):
    sim = make_sim(engine, online=False)
    with Session(engine) as s:
        s.get(Modem, sim.modem_id).last_seen_at = utcnow() - timedelta(hours=2)
        s.commit()
    sweep(app, utcnow())
    with Session(engine) as s:
        assert s.get(SimCard, sim.id).status == "active"  # gone for 2 h: not yet

    later = utcnow() + timedelta(hours=23)
    sweep(app, later)
    with Session(engine) as s:
        assert s.get(SimCard, sim.id).status == "inactive"

    # The worker starts again and registers the SIM by its ICCID.
    with Session(engine) as s:
        s.get(Modem, sim.modem_id).online = True
        s.get(SimCard, sim.id).last_seen_at = later + timedelta(minutes=1)
        s.commit()
    sweep(app, later + timedelta(minutes=2))
    with Session(engine) as s:
        assert s.get(SimCard, sim.id).status == "active"


def test_a_sim_an_admin_deactivated_stays_inactive_when_its_modem_is_online(app, engine, client, alice):
    sim = make_sim(engine, online=False)
    with Session(engine) as s:
        s.get(Modem, sim.modem_id).last_seen_at = utcnow() - timedelta(hours=30)
        s.commit()
    sweep(app, utcnow())
    r = client.put(f"/api/sim-cards/{sim.id}", json={"status": "inactive"}, headers=alice.headers)
    assert r.status_code == 200, r.get_json()
    with Session(engine) as s:
        s.get(Modem, sim.modem_id).online = True
        s.get(SimCard, sim.id).last_seen_at = utcnow() + timedelta(minutes=1)
        s.commit()
    sweep(app, utcnow() + timedelta(minutes=2))
    with Session(engine) as s:
        assert s.get(SimCard, sim.id).status == "inactive"


def test_demo_sims_leave_with_the_demo_profile_and_return_with_it(app, engine, database_url):
    """What scripts/up.sh runs without the demo profile (retire-demo-sims.sql),
    then `make demo`: the workers see their SIMs again."""
    demo = make_sim(engine, modem_id="demo-1", online=False)
    mine = make_sim(engine, modem_id="usb-real", online=True)
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "ids=demo-1,demo-2", "-d", dsn, "-f", str(SQL)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    with Session(engine) as s:
        assert s.get(SimCard, demo.id).status == "inactive"
        assert s.get(SimCard, mine.id).status == "active"
    sweep(app, utcnow())
    with Session(engine) as s:
        assert s.get(SimCard, demo.id).status == "inactive"  # its modem is still gone

    # make demo: the worker starts and registers its SIM.
    with Session(engine) as s:
        s.get(Modem, "demo-1").online = True
        s.get(SimCard, demo.id).last_seen_at = utcnow() + timedelta(seconds=1)
        s.commit()
    sweep(app, utcnow() + timedelta(seconds=2))
    with Session(engine) as s:
        assert s.get(SimCard, demo.id).status == "active"
