"""`make native` (scripts/run-native.sh) from a fresh checkout's point of view:
an env file made from .env.example (its empty settings included), every
service up on ports of its own, and all of it gone after one SIGTERM."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import requests
import urllib3
from paho.mqtt.enums import CallbackAPIVersion
from shared_fixtures import MQTT_HOST, MQTT_PORT, PG_ADMIN_URL, ROOT, drop_database
from sqlalchemy.engine import make_url
from support import waits

START_TIMEOUT = 120  # migrations on a new database, then two emulated modems coming up
STOP_TIMEOUT = 45  # gunicorn's graceful timeout is 20 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """A port p with p + 1 free too (the script gives its two emulators p and p + 1)."""
    for _ in range(200):
        port = random.randint(20000, 60000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
                return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen, log: Path):
    """support.waits.wait_until, failing at once (with the log) if run-native.sh exits."""

    def alive_and_checked():
        if proc.poll() is not None:
            pytest.fail(f"run-native.sh exited ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        return check()

    return waits.wait_until(alive_and_checked, timeout, 0.5, lambda: f"{what}\n{log.read_text()[-4000:]}")


def answers(url: str, **kw) -> requests.Response | None:
    try:
        return requests.get(url, timeout=3, allow_redirects=False, **kw)
    except requests.RequestException:
        return None


class StateWatcher:
    """The retained state each modem worker publishes (online, with a last will)."""

    def __init__(self, prefix: str):
        self.states: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"native-test-{os.getpid()}")
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}modems/+/state", qos=1)
        self.client.on_message = self._on_message
        self.client.connect(MQTT_HOST, MQTT_PORT)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        modem_id = msg.topic.split("/")[-2]
        with self.lock:
            self.states[modem_id] = json.loads(msg.payload) if msg.payload else {}

    def online(self) -> set[str]:
        with self.lock:
            return {m for m, s in self.states.items() if s.get("online") is True}

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def native(tmp_path, package_id, mqtt_prefix, redis_url):
    db = f"smsgw_native_{package_id}"
    ports = {
        "NATIVE_API_PORT": free_port(),
        "NATIVE_HTTPS_PORT": free_port(),
        "NATIVE_HTTP_PORT": free_port(),
        "NATIVE_EMULATOR_PORT": free_port_pair(),
        "NATIVE_STATS_PORT": free_port(),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "POSTGRES_", "REDIS_", "DATABASE_"))}
    env.update({k: str(v) for k, v in ports.items()})
    env.update(
        NATIVE_ENV_FILE=str(tmp_path / "env"),  # made from .env.example: LOG_LEVEL= and the rest empty
        NATIVE_DB=db,
        NATIVE_PG_ADMIN_URL=make_url(PG_ADMIN_URL).set(database="postgres").render_as_string(hide_password=False),
        NATIVE_REDIS_URL=redis_url,
        MQTT_PREFIX=mqtt_prefix,
    )
    log = tmp_path / "run-native.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(ROOT / "scripts/run-native.sh")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    watcher = StateWatcher(mqtt_prefix)
    try:
        yield proc, ports, watcher, log
    finally:
        watcher.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever the script left behind, in the session it was started in
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        drop_database(db)


def test_make_native_runs_every_service_and_stops_them_all(native):
    proc, ports, watcher, log = native
    api = f"http://127.0.0.1:{ports['NATIVE_API_PORT']}"

    wait_until(
        lambda: (r := answers(f"{api}/healthz")) is not None and r.status_code == 200,
        START_TIMEOUT,
        "the API answers /healthz",
        proc,
        log,
    )
    wait_until(
        lambda: (r := answers(f"{api}/readyz")) is not None and r.status_code == 200,
        START_TIMEOUT,
        "the API is ready (database, broker, Redis)",
        proc,
        log,
    )
    wait_until(
        lambda: {"native-1", "native-2"} <= watcher.online(),
        START_TIMEOUT,
        "both emulated modem workers report online",
        proc,
        log,
    )

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the script's self-signed certificate
    https = f"https://127.0.0.1:{ports['NATIVE_HTTPS_PORT']}"
    page = wait_until(
        lambda: (r := answers(f"{https}/", verify=False)) is not None and r.status_code == 200 and r,
        30,
        "the dashboard (nginx) serves its page",
        proc,
        log,
    )
    assert "<html" in page.text.lower()
    proxied = answers(f"{https}/readyz", verify=False)
    assert proxied is not None and proxied.status_code == 200, "nginx proxies to the API"
    redirect = answers(f"http://127.0.0.1:{ports['NATIVE_HTTP_PORT']}/")
    assert redirect is not None and redirect.status_code == 301
    assert redirect.headers["Location"].startswith(f"https://127.0.0.1:{ports['NATIVE_HTTPS_PORT']}/")
    assert answers(f"http://127.0.0.1:{ports['NATIVE_STATS_PORT']}/metrics").status_code == 200

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(STOP_TIMEOUT) == 0, log.read_text()[-4000:]
    # Nothing it started is left: not in its session, not on its ports.
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    for port in ports.values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after the stop"
    assert "Traceback" not in log.read_text(), log.read_text()[-4000:]
