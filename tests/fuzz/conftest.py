"""The fuzz tier: schemathesis over the served /api/openapi.json of a real
gunicorn on 127.0.0.1, with a database, MQTT prefix and Redis database of
its own (shared_fixtures), as a viewer, a user and an admin.

Its tests are marked `fuzz` and left out of the default run (they take
minutes): `.ci/run` runs them on their own with `pytest -m fuzz tests/fuzz`.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from shared_fixtures import database_url, mqtt_prefix, package_id, redis_url, service_env  # noqa: F401  (one set per tier)
from sqlalchemy import create_engine
from sqlalchemy.orm import Session


def pytest_collection_modifyitems(config, items):
    # Deselected (not skipped) unless the run asks for the marker, as tests/stack does.
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    here = Path(__file__).parent
    mine = [i for i in items if Path(str(i.fspath)).is_relative_to(here) and i.get_closest_marker("fuzz")]
    if mine:
        config.hook.pytest_deselected(items=mine)
        items[:] = [i for i in items if i not in mine]


@dataclass
class Persona:
    username: str
    role: str
    api_key: str
    password: str
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        # A JWT from a real login, not the API key: the fuzzer may revoke the
        # caller's own key (DELETE /api/api-keys/1), and every later example
        # would only test the 401.
        return {"Authorization": f"Bearer {self.token}"} if self.token else {"X-API-Key": self.api_key}


@pytest.fixture(scope="package")
def personas(database_url) -> dict[str, Persona]:
    from smsgw_api.core.security import new_api_key
    from smsgw_api.domain.accounts import hash_password
    from smsgw_common.models import ApiKey, Modem, SimCard, User

    engine = create_engine(database_url)
    out = {}
    try:
        with Session(engine) as s:
            # A SIM, so that sends are routed and written (the fuzzer should
            # reach the database, not stop at "no SIM available").
            s.add(Modem(id="fuzz-modem", online=True, signal_quality=20, registration="home", operator="FuzzNet"))
            s.flush()
            s.add(SimCard(number="+15550100000", status="active", modem_id="fuzz-modem", iccid="8949000000000000001"))
            for role in ("viewer", "user", "admin"):
                password = secrets.token_hex(16)
                user = User(username=f"fuzz-{role}", password_hash=hash_password(password), role=role)
                s.add(user)
                s.flush()
                key, prefix, digest = new_api_key()
                s.add(ApiKey(user_id=user.id, name="fuzz", prefix=prefix, key_hash=digest))
                out[role] = Persona(user.username, role, key, password)
            s.commit()
    finally:
        engine.dispose()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="package")
def api_base(service_env, python, tmp_path_factory, personas):
    """The production command line (smsgw_api/gunicorn_conf.py) on 127.0.0.1."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("fuzz") / "gunicorn.log"
    env = dict(
        service_env,
        JWT_SECRET="fuzz-tier-" + secrets.token_hex(24),
        API_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="2",
        GUNICORN_GRACEFUL_TIMEOUT="3",
        # No background loops: a fuzzed webhook must never be delivered anywhere.
        PIPELINE_BACKGROUND="off",
        USSD_TIMEOUT_SECONDS="1",
        # The fuzzer logs in thousands of times; the limiter is tested elsewhere.
        LOGIN_MAX_ATTEMPTS="1000000",
        ACCESS_LOG="false",
    )
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [python, "-m", "gunicorn", "-c", "python:smsgw_api.gunicorn_conf", "smsgw_api.wsgi:app"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"gunicorn exited ({proc.returncode}):\n{log_path.read_text()[-4000:]}")
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the API did not answer /healthz within 30 s")
            time.sleep(0.2)
        for persona in personas.values():
            r = requests.post(
                base + "/api/auth", json={"username": persona.username, "password": persona.password}, timeout=10
            )
            assert r.status_code == 200, r.text
            persona.token = r.json()["token"]
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        errors = [line for line in log_path.read_text(errors="replace").splitlines() if "Traceback" in line]
        if errors:
            print(f"gunicorn log {log_path}: {len(errors)} tracebacks")
