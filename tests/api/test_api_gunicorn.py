"""The API as deployed: `python -m smsgw_api serve` (migrations, first admin
from ADMIN_PASSWORD_FILE, gunicorn with 2 gevent workers), driven over HTTP
with the seed SDK's exact request shapes."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import paho.mqtt.client as paho
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion
from shared_fixtures import create_database, drop_database
from sqlalchemy import create_engine, text
from support.waits import wait_until

ADMIN_PASSWORD = "first-start admin password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def deployed(service_env, python, tmp_path_factory, run_id):
    """A database of its own (so the first-admin bootstrap sees no user)."""
    name = f"smsgw_test_{run_id}_gunicorn"
    url = create_database(name)
    secret_dir = tmp_path_factory.mktemp("secrets")
    (secret_dir / "admin").write_text(ADMIN_PASSWORD + "\n")
    port = _free_port()
    env = {
        **service_env,
        "DATABASE_URL": url,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "ADMIN_USERNAME": "root",
        "ADMIN_PASSWORD_FILE": str(secret_dir / "admin"),
        "API_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [python, "-m", "smsgw_api", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            return requests.get(f"{base}/readyz", timeout=1).status_code == 200

        wait_until(ready, 60, 0.3, f"{base}/readyz to answer 200", ignore=(requests.RequestException,))
        engine = create_engine(url)
        yield base, engine, env
        engine.dispose()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        drop_database(name)


@pytest.fixture(scope="module")
def admin_key(deployed):
    base, engine, _ = deployed
    login = requests.post(f"{base}/api/auth", json={"username": "root", "password": ADMIN_PASSWORD}, timeout=10)
    assert login.status_code == 200, login.text
    r = requests.post(
        f"{base}/api/api-keys",
        json={"name": "sdk"},
        headers={"Authorization": f"Bearer {login.json()['token']}"},
        timeout=10,
    )
    key = r.json()["api_key"]
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO modems (id, online) VALUES ('gm1', true)"))
    r = requests.post(
        f"{base}/api/sim-cards", json={"number": "+4915100001111"}, headers={"X-API-Key": key}, timeout=10
    )
    assert r.status_code == 200
    with engine.begin() as conn:
        conn.execute(text("UPDATE sim_cards SET modem_id = 'gm1' WHERE id = :id"), {"id": r.json()["id"]})
    return key


class SeedSdkCalls:
    """The requests the seed's SmsGatewayClient makes, verbatim in shape."""

    def __init__(self, base: str, api_key: str):
        self.base = base
        self.headers = {"X-API-Key": api_key, "Content-Type": "application/json"}

    def send_sms(self, recipient, message, sim_card_id=None):
        payload = {"recipient": recipient, "message": message}
        if sim_card_id:
            payload["sim_card_id"] = sim_card_id
        response = requests.post(f"{self.base}/api/sms", json=payload, headers=self.headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def get_sms_statuses(self):
        response = requests.get(f"{self.base}/api/sms-status", headers=self.headers, timeout=10)
        response.raise_for_status()
        return response.json().get("statuses", [])


def test_the_seed_sdk_calls_work_against_gunicorn(deployed, admin_key):
    sdk = SeedSdkCalls(deployed[0], admin_key)
    sent = sdk.send_sms("+254712345678", "Hello from the seed SDK")
    assert sent["message_id"] and sent["sender_sim"] == "+4915100001111"
    statuses = sdk.get_sms_statuses()
    mine = [s for s in statuses if s["id"] == sent["message_id"]][0]
    assert mine["receiver_number"] == "+254712345678" and mine["status"] == "queued"
    assert mine["message"] == "Hello from the seed SDK"


def test_gunicorn_publishes_the_wake_up(deployed, admin_key):
    prefix = deployed[2]["MQTT_PREFIX"]
    got, ready = [], threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(f"{prefix}modems/gm1/outbox", qos=1)
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = lambda cl, u, m: got.append(json.loads(m.payload))
    c.connect("127.0.0.1", 1883)
    c.loop_start()
    try:
        assert ready.wait(5)
        message_id = SeedSdkCalls(deployed[0], admin_key).send_sms("+254712345679", "wake")["message_id"]
        wait_until(lambda: {"message_id": message_id} in got, 5, 0.05, lambda: f"the wake-up; got {got}")
        assert {"message_id": message_id} in got
    finally:
        c.loop_stop()
        c.disconnect()


def test_concurrent_sends_all_succeed(deployed, admin_key):
    """The seed answered 500 "database is locked" from two concurrent sends on."""
    sdk = SeedSdkCalls(deployed[0], admin_key)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: sdk.send_sms(f"+2547000{i:05d}", f"concurrent {i}"), range(64)))
    assert len({r["message_id"] for r in results}) == 64


def test_serve_refuses_to_start_with_a_placeholder_secret(service_env, python):
    for secret in ("changeme", ""):
        env = {**service_env, "JWT_SECRET": secret}
        r = subprocess.run([python, "-m", "smsgw_api", "serve"], env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 2
        assert "JWT_SECRET" in r.stderr


def test_create_admin_takes_the_password_from_a_file(deployed, python, tmp_path):
    base, _, env = deployed
    pw = tmp_path / "pw"
    pw.write_text("another admin's password\n")
    r = subprocess.run(
        [python, "-m", "smsgw_api", "create-admin", "--username", "second", "--password-file", str(pw)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    login = requests.post(
        f"{base}/api/auth", json={"username": "second", "password": "another admin's password"}, timeout=10
    )
    assert login.status_code == 200 and login.json()["role"] == "admin"
    pw.write_text("short")
    r = subprocess.run(
        [python, "-m", "smsgw_api", "create-admin", "--username", "third", "--password-file", str(pw)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "at least" in r.stderr
