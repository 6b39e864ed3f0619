"""Pipeline tier: the API under gunicorn (two gevent workers, so the leader
election and the Redis fan-out are exercised), real Postgres, Mosquitto and
Redis; modem workers are either real (on emulated modems) or played by the
test publishing the documented MQTT payloads.

Personas: Alice is an admin, Bob and Dave are users, Carol is a viewer.
The helpers live in tests/support/; the names the tests import from here
are re-exported below.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from shared_fixtures import database_url, mqtt_prefix, package_id, redis_url, service_env  # noqa: F401  (one set per tier)
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker
from support.api import HttpApi, Socket, socket_opener
from support.mqtt import Publisher
from support.pipeline import (
    Hit,
    Receiver,
    add_inbound,
    add_modem_and_sim,
    add_outbound,
    current_leader,
    verify_signature,
    wait_for_leader,
    wait_for_listeners,
    webhook_receiver,
)
from support.processes import free_port, start_http_service, stop_process
from support.waits import wait_until
from support.workers import WORKER_FAST, WORKER_SCRIPT, EmulatedWorker, launch_worker, wait_worker_ready

from smsgw_common.models import ApiKey, User

__all__ = [
    "WORKER_FAST",
    "WORKER_SCRIPT",
    "EmulatedWorker",
    "Hit",
    "Mqtt",
    "Persona",
    "Receiver",
    "Socket",
    "add_inbound",
    "add_modem_and_sim",
    "add_outbound",
    "current_leader",
    "free_port",
    "launch_worker",
    "socket_opener",
    "start_api",
    "stop_process",
    "verify_signature",
    "wait_for_leader",
    "wait_until",
    "wait_worker_ready",
]

JWT_SECRET = "pipeline-tests-" + secrets.token_hex(24)
Mqtt = Publisher


@pytest.fixture(scope="package")
def pipeline_env(service_env, mqtt_prefix) -> dict[str, str]:
    """The tier's own database, topic prefix and Redis database (support/services.py):
    its admins, SIMs and background sweeper never leak into other tiers."""
    return dict(
        service_env,
        MQTT_PREFIX=mqtt_prefix + "pipeline/",
        JWT_SECRET=JWT_SECRET,
        LOG_JSON="1",
        # Short timers keep the suite fast; production defaults are in docs.
        SWEEP_INTERVAL_SECONDS="0.5",
        LEADER_TTL_SECONDS="3",
        WEBHOOK_BACKOFF_SECONDS="0.3",
        WEBHOOK_MAX_ATTEMPTS="3",
        WEBHOOK_POLL_SECONDS="0.2",
        WEBHOOK_TIMEOUT_SECONDS="3",
        # The test receivers listen on 127.0.0.1; production refuses loopback.
        WEBHOOK_ALLOW_LOOPBACK="1",
        REPORT_TIMEOUT="3600",
        CORS_ALLOWED_ORIGINS="http://127.0.0.1:8080",
    )


@pytest.fixture(scope="package")
def db_session(database_url):
    engine = create_engine(database_url, pool_size=2)
    factory = sessionmaker(engine, expire_on_commit=False)
    yield factory
    engine.dispose()


@dataclass
class Persona:
    name: str
    role: str
    user_id: int
    api_key: str

    @property
    def headers(self) -> dict:
        return {"X-API-Key": self.api_key}

    def token(self, ttl: float = 3600) -> str:
        now = datetime.now(UTC)
        return jwt.encode(
            {"sub": str(self.user_id), "username": self.name, "iat": now, "exp": now + timedelta(seconds=ttl)},
            JWT_SECRET,
            algorithm="HS256",
        )


@pytest.fixture(scope="package")
def people(db_session) -> dict[str, Persona]:
    from smsgw_api.core.security import new_api_key
    from smsgw_api.domain.accounts import hash_password

    out = {}
    with db_session() as s:
        for name, role in (("alice", "admin"), ("bob", "user"), ("carol", "viewer"), ("dave", "user")):
            user = User(
                username=f"{name}-{secrets.token_hex(2)}", password_hash=hash_password(secrets.token_hex(8)), role=role
            )
            s.add(user)
            s.flush()
            key, prefix, digest = new_api_key()
            s.add(ApiKey(user_id=user.id, name="tests", prefix=prefix, key_hash=digest))
            out[name] = Persona(user.username, role, user.id, key)
        s.commit()
    return out


def start_api(env: dict, python: str, log_path: Path, workers: int = 2) -> HttpApi:
    """The production command line and settings (smsgw_api/gunicorn_conf.py)."""
    service, base, _ = start_http_service(
        [python, "-m", "gunicorn", "-c", "python:smsgw_api.gunicorn_conf", "smsgw_api.wsgi:app"],
        dict(env, GUNICORN_WORKERS=str(workers), GUNICORN_GRACEFUL_TIMEOUT="3"),
        log_path,
        timeout=30,
    )
    return HttpApi(base, service.proc, log_path)


@contextmanager
def running_api(env: dict, python: str, log_dir: Path) -> Iterator[HttpApi]:
    """The API (start_api) once its events leader is elected and all its
    processes listen to the live feed; stopped after."""
    server = start_api(env, python, log_dir / "gunicorn.log", workers=2)
    try:
        wait_for_leader(env)
        wait_for_listeners(env, 2)
        yield server
    finally:
        stop_process(server.proc)


@pytest.fixture(scope="package")
def api(pipeline_env, python, tmp_path_factory, people) -> Iterator[HttpApi]:
    with running_api(pipeline_env, python, tmp_path_factory.mktemp("api")) as server:
        yield server


@pytest.fixture(scope="package")
def mqtt(pipeline_env):
    client = Publisher(pipeline_env["MQTT_PREFIX"])
    yield client
    client.close()


@pytest.fixture
def sockets(api):
    with socket_opener(api.base) as connect:
        yield connect


@pytest.fixture
def receiver():
    with webhook_receiver() as rec:
        yield rec


@pytest.fixture
def workers(pipeline_env, python, tmp_path, db_session, api):
    """Start emulated workers; before the first, retire what earlier tests left
    (fake online modems, queued rows) so routing sees only these workers."""
    from sqlalchemy import text as sql

    with db_session() as s:
        s.execute(sql("UPDATE messages SET status = 'cancelled' WHERE status IN ('queued', 'sending')"))
        s.execute(sql("UPDATE sim_cards SET status = 'inactive'"))
        s.execute(sql("UPDATE modems SET online = false"))
        s.commit()
    started: list[EmulatedWorker] = []

    def start(count: int = 1, **kw) -> list[EmulatedWorker]:
        batch = [launch_worker(pipeline_env, python, tmp_path, **kw) for _ in range(count)]
        started.extend(batch)
        for w in batch:
            wait_worker_ready(w, db_session)
        return batch

    yield start
    for w in started:
        w.stop()
