"""`python -m smsgw_api pipeline`: the leader-elected loops in a process of
their own, with no HTTP app anywhere, do the whole job: the sweeper expires
a message past its validity, and the webhook dispatcher tells a receiver.

The process gets a database and prefix of its own: the tier's gunicorn API
runs its own pipeline, and two on one database would share the work."""

from __future__ import annotations

import secrets
import signal
import subprocess
from datetime import timedelta

import pytest
from shared_fixtures import create_database, drop_database
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from smsgw_api.migrate import upgrade
from smsgw_common.models import Message, User, Webhook, utcnow

from .conftest import add_modem_and_sim, add_outbound, current_leader, wait_until


@pytest.fixture
def own_database(package_id):
    name = f"smsgw_test_{package_id}_standalone"
    url = create_database(name)
    try:
        upgrade(url)
        yield url
    finally:
        drop_database(name)


@pytest.fixture
def standalone(own_database, pipeline_env, python, tmp_path):
    env = dict(
        pipeline_env,
        DATABASE_URL=own_database,
        MQTT_PREFIX=pipeline_env["MQTT_PREFIX"] + "standalone/",
        SWEEP_INTERVAL_SECONDS="0.3",
        LEADER_TTL_SECONDS="1.5",
    )
    log_path = tmp_path / "pipeline.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([python, "-m", "smsgw_api", "pipeline"], env=env, stdout=log, stderr=subprocess.STDOUT)
    engine = create_engine(own_database, pool_size=2)
    try:
        yield proc, env, sessionmaker(engine, expire_on_commit=False), log_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        engine.dispose()


def test_the_pipeline_process_expires_a_message_and_delivers_its_webhook(standalone, receiver):
    proc, env, db, log_path = standalone

    def leads() -> bool:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        leader = current_leader(env["DATABASE_URL"], env["MQTT_PREFIX"])
        return leader is not None and leader.split(":")[1] == str(proc.pid)

    wait_until(leads, 20, 0.1, "the pipeline process to take the leadership")

    with db() as s:
        owner = User(username=f"owner-{secrets.token_hex(3)}", password_hash="x", role="user")
        s.add(owner)
        s.flush()
        s.add(Webhook(user_id=owner.id, url=receiver.url, events=["message.expired"], secret="s" * 32))
        s.commit()
        owner_id = owner.id
    _, sim_id = add_modem_and_sim(db)
    msg_id = add_outbound(db, sim_id, owner_id, expires_at=utcnow() - timedelta(seconds=1))

    def status():
        with db() as s:
            return s.get(Message, msg_id).status

    wait_until(lambda: status() == "expired", 15, 0.1, "the sweeper to expire the message")
    hit = receiver.wait_for(lambda h: h.json["data"]["message_id"] == msg_id, 15, "the message.expired webhook")
    assert hit.json["type"] == "message.expired"
    assert hit.headers["X-SMSGW-Event"] == "message.expired"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, log_path.read_text()[-3000:]
    # A clean exit hands the leadership over at once.
    assert current_leader(env["DATABASE_URL"], env["MQTT_PREFIX"]) is None
