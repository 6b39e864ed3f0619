"""An edge node cut off from the centre loses nothing (issue 16,
docs/deployment.md "Several sites").

The node is a modem worker (production timers) in a network namespace of
its own; the centre is a Postgres and a Mosquitto of the test's own on a
test WAN (support/wan.py), which take the node only over TLS, verified
against the centre's own CA. The link is black-holed, the way a site's uplink
fails: packets vanish, connections neither fail nor finish. The emulator's
`/sent` list is the ledger of what the modem really transmitted.
"""

from __future__ import annotations

import collections
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker
from support.mqtt import Listener
from support.pipeline import add_outbound
from support.private_mosquitto import PrivateMosquitto
from support.private_postgres import PrivatePostgres
from support.tls import make_server_tls
from support.waits import wait_until
from support.wan import Wan
from support.workers import EmulatedWorker, launch_worker, wait_worker_ready

from smsgw_common.models import Message, MessagePart, utcnow

# How long the link stays cut; the bench runs the 10 minutes
# (bench/fleet.py). Long enough for every timer of the worker to run into
# it; with a 5 s MQTT keepalive the broker and the worker notice the cut
# within 8 s, and the worker's reconnects back off during the rest.
PARTITION_SECONDS = float(os.environ.get("SMSGW_PARTITION_SECONDS", "60"))
RESUME_TARGET = 5.0  # seconds from the link's return to the next send at the modem
# The worker's heartbeat cadence when idle (services/modem-worker/Dockerfile).
HEARTBEAT_TARGET = 30.0


@pytest.fixture(scope="module")
def centre(tmp_path_factory):
    wan = Wan(nodes=1)
    pg = mq = None
    try:
        tls = make_server_tls(tmp_path_factory.mktemp("tls"), wan.centre)
        pg = PrivatePostgres(listen=wan.centre, trust=str(wan.net), tls=tls)
        mq = PrivateMosquitto(listen=wan.centre, tls=tls)
        name = f"smsgw_fleet_{secrets.token_hex(3)}"
        pg.create_database(name)
        from smsgw_api.migrate import upgrade

        upgrade(pg.url(name))
        yield wan, pg, mq, name, tls
    finally:
        if mq:
            mq.close()
        if pg:
            pg.close()
        wan.close()


def queue(Session, worker: EmulatedWorker, text: str) -> int:
    """A message for the worker's SIM, as the centre's API commits it."""
    return add_outbound(Session, worker.sim_id, None, text, sender=worker.number, queued_at=utcnow())


def status(Session, message_id: int) -> str:
    with Session() as s:
        return s.get(Message, message_id).status


def submitting(Session, message_id: int) -> bool:
    """Its part is committed as written to the modem (before AT+CMGS)."""
    with Session() as s:
        return (
            s.scalar(
                select(MessagePart.id).where(MessagePart.message_id == message_id, MessagePart.status == "submitting")
            )
            is not None
        )


def transmitted(worker: EmulatedWorker) -> collections.Counter[str]:
    return collections.Counter(record["text"] for record in worker.sent())


def control(worker: EmulatedWorker, path: str, body: dict) -> None:
    resp = requests.post(worker.control + path, json=body, timeout=5)
    assert resp.status_code == 200, resp.text


def test_a_node_cut_off_from_the_centre_keeps_every_fact_sends_nothing_twice_and_resumes_within_5_s(
    centre, python, tmp_path: Path
):
    wan, pg, mq, name, tls = centre
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "POSTGRES_", "REDIS_", "WORKER_"))}
    heartbeat = tmp_path / "alive"
    env.update(
        DATABASE_URL=pg.url(name, host=wan.centre) + f"?sslmode=verify-full&sslrootcert={tls.ca}",
        MQTT_HOST=wan.centre,
        MQTT_PORT=str(mq.port),
        MQTT_CA_FILE=str(tls.ca),
        MQTT_PREFIX=f"smsgw-fleet-{secrets.token_hex(3)}/",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        WORKER_HEARTBEAT_FILE=str(heartbeat),
        MQTT_KEEPALIVE="5",
    )
    engine = create_engine(pg.url(name))
    Session = sessionmaker(engine, expire_on_commit=False)
    worker = launch_worker(
        env, python, tmp_path, fast=False, host=wan.addresses[0], wrap=lambda argv: wan.inside(0, argv)
    )
    centre_view = None
    try:
        wait_worker_ready(worker, Session, timeout=40)
        sim_id = worker.sim_id
        # The modem's health as the centre's broker has it: what routing acts on.
        state_topic = f"{env['MQTT_PREFIX']}modems/{worker.modem_id}/state"
        centre_view = Listener([state_topic], port=mq.port)
        before = queue(Session, worker, "before the cut")
        wait_until(lambda: status(Session, before) == "delivered", 20, 0.2, "the first message to be delivered")

        # A send the modem is still busy with when the link goes: its +CMGS
        # and its status report come while the centre is out of reach.
        control(worker, "/latency", {"seconds": 3.0})
        in_modem = queue(Session, worker, "in the modem when the link goes")
        wait_until(lambda: submitting(Session, in_modem), 20, 0.05, "the send to be in the modem")
        wan.cut(0, [pg.port, mq.port])
        cut_at = time.monotonic()

        worker.inject("+4915112345678", "received during the cut")
        during = queue(Session, worker, "queued during the cut")
        wait_until(
            lambda: transmitted(worker)["in the modem when the link goes"] == 1, 15, 0.2, "the send in the modem"
        )
        control(worker, "/latency", {"seconds": 0.0})

        # The loop goes on turning while the centre is away (unhealthy means hung).
        oldest = 0.0
        while time.monotonic() - cut_at < PARTITION_SECONDS:
            oldest = max(oldest, time.time() - heartbeat.stat().st_mtime)
            time.sleep(1)
        assert transmitted(worker)["queued during the cut"] == 0, "the node cannot have claimed it"

        went_offline = any(not p.get("online") for p in centre_view.payloads(state_topic))
        wan.restore(0)
        restored_at = time.monotonic()
        wait_until(lambda: transmitted(worker)["queued during the cut"] >= 1, 60, 0.05, "the send after the cut")
        resumed = time.monotonic() - restored_at
        wait_until(lambda: centre_view.payloads(state_topic)[-1].get("online"), 60, 0.05, "the modem online again")
        online_again = time.monotonic() - restored_at

        def settled():
            with Session() as s:
                inbound = s.scalars(
                    select(Message.message).where(Message.direction == "inbound", Message.sim_card_id == sim_id)
                ).all()
            states = {m: status(Session, m) for m in (before, in_modem, during)}
            return (inbound, states) if inbound and all(v == "delivered" for v in states.values()) else None

        inbound, states = wait_until(settled, 30, 0.2, lambda: f"every message settled: {settled()}")
        assert inbound == ["received during the cut"]
        assert states == {before: "delivered", in_modem: "delivered", during: "delivered"}
        sent = transmitted(worker)
        assert sent == collections.Counter(
            {"before the cut": 1, "in the modem when the link goes": 1, "queued during the cut": 1}
        )
        figures = (
            f"loop stood still for up to {oldest:.1f} s during the cut; the centre saw the modem offline: "
            f"{went_offline}; after the link returned, sends resumed in {resumed:.1f} s and the centre saw "
            f"the modem online in {online_again:.1f} s"
        )
        print(figures)
        assert oldest <= HEARTBEAT_TARGET and max(resumed, online_again) <= RESUME_TARGET, figures
    finally:
        if centre_view is not None:
            centre_view.close()
        worker.stop()
        engine.dispose()


PG_PROBE = """
import sys, psycopg2
try:
    psycopg2.connect(sys.argv[1], connect_timeout=5).close()
except psycopg2.OperationalError as exc:
    print("refused:", str(exc).strip().splitlines()[0])
else:
    print("connected")
"""
MQTT_PROBE = """
import ssl, sys
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
client = paho.Client(CallbackAPIVersion.VERSION2)
if sys.argv[3]:
    client.tls_set(ca_certs=sys.argv[3], cert_reqs=ssl.CERT_REQUIRED)
try:
    client.connect(sys.argv[1], int(sys.argv[2]), keepalive=5)
    rc = 0
    for _ in range(50):  # until the CONNACK, the broker's close or 5 s
        rc = client.loop(timeout=0.1)
        if client.is_connected() or rc != 0:
            break
    print("connected" if client.is_connected() else f"refused: rc {rc}")
except (OSError, ssl.SSLError) as exc:
    print("refused:", exc)
"""


def test_the_centre_takes_a_node_only_over_tls_verified_against_the_centres_ca(centre, python, tmp_path: Path):
    wan, pg, mq, name, tls = centre
    base = f"postgresql://postgres@{wan.centre}:{pg.port}/{name}"
    other_ca = make_server_tls(tmp_path / "other", wan.centre).ca

    def probe(*argv: str) -> str:
        out = subprocess.run(wan.inside(0, [python, "-c", *argv]), capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or out.stderr.strip()

    assert probe(PG_PROBE, f"{base}?sslmode=verify-full&sslrootcert={tls.ca}") == "connected"
    assert "no encryption" in probe(PG_PROBE, f"{base}?sslmode=disable")
    assert "certificate verify failed" in probe(PG_PROBE, f"{base}?sslmode=verify-full&sslrootcert={other_ca}")

    assert probe(MQTT_PROBE, wan.centre, str(mq.port), str(tls.ca)) == "connected"
    assert probe(MQTT_PROBE, wan.centre, str(mq.port), "").startswith("refused")
    assert "certificate verify failed" in probe(MQTT_PROBE, wan.centre, str(mq.port), str(other_ca))
