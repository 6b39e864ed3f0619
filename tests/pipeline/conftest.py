"""Pipeline tier: the API under gunicorn (two gevent workers, so the leader
election and the Redis fan-out are exercised), real Postgres, Mosquitto and
Redis; modem workers are either real (on emulated modems) or played by the
test publishing the documented MQTT payloads.

Personas: Alice is an admin, Bob and Dave are users, Carol is a viewer.
"""
from __future__ import annotations

from shared_fixtures import database_url, mqtt_prefix, package_id, redis_url, service_env  # noqa: F401  (one set per tier)
import http.server
import json
import secrets
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jwt
import paho.mqtt.client as paho
import pytest
import redis as redis_lib
import requests
import socketio
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from smsgw_common.models import ApiKey, Message, Modem, SimCard, User
from smsgw_common.schemas import MessageEventPayload, ModemState
from smsgw_common.topics import Topics

JWT_SECRET = "pipeline-tests-" + secrets.token_hex(24)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="package")
def pipeline_env(service_env, mqtt_prefix) -> dict[str, str]:
    """The tier's own database, topic prefix and Redis database (shared_fixtures):
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
        now = datetime.now(timezone.utc)
        return jwt.encode({"sub": str(self.user_id), "username": self.name, "iat": now,
                           "exp": now + timedelta(seconds=ttl)}, JWT_SECRET, algorithm="HS256")


@pytest.fixture(scope="package")
def people(db_session) -> dict[str, Persona]:
    from smsgw_api.auth import hash_password
    from smsgw_api.security import new_api_key

    out = {}
    with db_session() as s:
        for name, role in (("alice", "admin"), ("bob", "user"), ("carol", "viewer"), ("dave", "user")):
            user = User(username=f"{name}-{secrets.token_hex(2)}", password_hash=hash_password(secrets.token_hex(8)),
                        role=role)
            s.add(user)
            s.flush()
            key, prefix, digest = new_api_key()
            s.add(ApiKey(user_id=user.id, name="tests", prefix=prefix, key_hash=digest))
            out[name] = Persona(user.username, role, user.id, key)
        s.commit()
    return out


class Api:
    def __init__(self, base: str, proc: subprocess.Popen, log_path: Path):
        self.base, self.proc, self.log_path = base, proc, log_path
        self.http = requests.Session()

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path, who: Persona, **kw):
        return self.http.get(self.url(path), headers=who.headers, timeout=10, **kw)

    def post(self, path, who: Persona, json_body=None, **kw):
        return self.http.post(self.url(path), headers={**who.headers, **kw.pop("headers", {})},
                              json=json_body, timeout=10, **kw)

    def delete(self, path, who: Persona, **kw):
        return self.http.delete(self.url(path), headers=who.headers, timeout=10, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_api(env: dict, python: str, log_path: Path, workers: int = 2) -> Api:
    port = free_port()
    fh = open(log_path, "w")
    # The production command line and settings (smsgw_api/gunicorn_conf.py).
    proc = subprocess.Popen(
        [python, "-m", "gunicorn", "-c", "python:smsgw_api.gunicorn_conf", "smsgw_api.wsgi:app"],
        env=dict(env, API_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS=str(workers), GUNICORN_GRACEFUL_TIMEOUT="3"),
        stdout=fh, stderr=subprocess.STDOUT,
    )
    api = Api(f"http://127.0.0.1:{port}", proc, log_path)

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited ({proc.returncode}):\n{api.log()[-4000:]}")
        try:
            return requests.get(api.url("/healthz"), timeout=1).status_code < 500
        except requests.RequestException:
            return False

    wait_until(ready, 30, 0.2, "the API to answer /healthz")
    return api


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="package")
def api(pipeline_env, python, tmp_path_factory, people) -> Api:
    log_path = tmp_path_factory.mktemp("api") / "gunicorn.log"
    server = start_api(pipeline_env, python, log_path)
    try:
        wait_for_leader(pipeline_env)
        yield server
    finally:
        stop_process(server.proc)


def wait_for_leader(env: dict, timeout: float = 15) -> None:
    """The events leader is elected within seconds; its MQTT session must be
    up before a test publishes events."""
    r = redis_lib.Redis.from_url(env["REDIS_URL"])
    key = env["MQTT_PREFIX"] + "mqtt_status"

    def up():
        raw = r.get(key)
        return raw is not None and json.loads(raw)["connected"]

    wait_until(up, timeout, 0.1, "the events leader to connect to MQTT")


class Mqtt:
    def __init__(self, prefix: str):
        self.topics = Topics(prefix)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"tests-{secrets.token_hex(4)}")
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def message_event(self, **fields) -> None:
        fields.setdefault("at", datetime.now(timezone.utc))
        self.publish(self.topics.message_events(), MessageEventPayload(**fields).to_json())

    def modem_state(self, modem_id: str, online: bool, **fields) -> None:
        st = ModemState(modem_id=modem_id, online=online, ts=datetime.now(timezone.utc), **fields)
        self.publish(self.topics.state(modem_id), st.to_json(), retain=True)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="package")
def mqtt(pipeline_env):
    client = Mqtt(pipeline_env["MQTT_PREFIX"])
    yield client
    client.close()


class Socket:
    """A python-socketio client that records every event it receives."""

    def __init__(self, base: str, auth: dict | None = None, query: str = "", origin: str | None = None):
        self.events: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        # websocket-client sends an Origin of its own unless told which one.
        extra = {"origin": origin} if origin else {}
        self.sio = socketio.Client(reconnection=False, websocket_extra_options=extra)
        self.sio.on("*", self._record)
        self.sio.connect(base + query, auth=auth, transports=["websocket"], wait_timeout=5)

    def _record(self, event, data=None):
        with self.lock:
            self.events.append((event, data))

    def seen(self, event: str, predicate=lambda d: True) -> list[dict]:
        with self.lock:
            return [d for e, d in self.events if e == event and predicate(d)]

    def wait_for(self, event: str, predicate=lambda d: True, timeout: float = 10.0) -> dict:
        return wait_until(lambda: (self.seen(event, predicate) or [None])[0], timeout, 0.02, f"socket event {event}")

    def close(self) -> None:
        self.sio.disconnect()


@contextmanager
def socket_opener(base: str):
    """connect(who or auth, ...) -> Socket to the API at `base`; all closed at the end."""
    opened = []

    def connect(who: Persona | None = None, auth: dict | None = None, query: str = "",
                origin: str | None = None) -> Socket:
        if auth is None and who is not None:
            auth = {"api_key": who.api_key}
        sock = Socket(base, auth, query, origin)
        opened.append(sock)
        return sock

    try:
        yield connect
    finally:
        for sock in opened:
            try:
                sock.close()
            except Exception:
                pass


@pytest.fixture
def sockets(api):
    with socket_opener(api.base) as connect:
        yield connect


@dataclass
class Hit:
    headers: dict
    body: bytes
    at: float

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that answers with a scripted status."""

    hits: list = field(default_factory=list)
    status: int = 200
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def of_type(self, event_type: str) -> list[Hit]:
        return [h for h in list(self.hits) if h.json.get("type") == event_type]

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "a webhook") -> Hit:
        return wait_until(lambda: next((h for h in list(self.hits) if predicate(h)), None), timeout, 0.02, what)


@pytest.fixture
def receiver():
    rec = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            rec.hits.append(Hit(dict(self.headers), body, time.monotonic()))
            self.send_response(rec.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    rec.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=rec.server.serve_forever, daemon=True)
    thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def add_modem_and_sim(db_session, online: bool = True, **sim_fields) -> tuple[str, int]:
    """What a worker registers on start: its modem row and its SIM."""
    modem_id = f"m{secrets.token_hex(3)}"
    with db_session() as s:
        s.add(Modem(id=modem_id, online=online, imei=secrets.token_hex(7)))
        s.flush()
        sim = SimCard(number=f"+4915{secrets.randbelow(10**8):08d}", status="active", modem_id=modem_id,
                      iccid=f"89{secrets.randbelow(10**17):017d}", **sim_fields)
        s.add(sim)
        s.commit()
        return modem_id, sim.id


def add_outbound(db_session, sim_id: int, user_id: int | None, text: str = "hello", status: str = "queued",
                 **fields) -> int:
    with db_session() as s:
        msg = Message(direction="outbound", recipient=f"+4917{secrets.randbelow(10**8):08d}", message=text,
                      status=status, sim_card_id=sim_id, user_id=user_id, segments=1, **fields)
        s.add(msg)
        s.commit()
        return msg.id


def add_inbound(db_session, mqtt, sim_id: int, sender: str, text: str) -> int:
    """An inbound SMS as a worker records it: its row, then its `received` event."""
    with db_session() as s:
        msg = Message(direction="inbound", sender=sender, recipient="+4915100000001", message=text,
                      status="received", sim_card_id=sim_id)
        s.add(msg)
        s.commit()
    mqtt.message_event(message_id=msg.id, state="received", direction="inbound", sim_card_id=sim_id,
                       sender=sender, message=text)
    return msg.id


def verify_signature(secret: str, hit: Hit) -> bool:
    import hashlib
    import hmac

    ts = hit.headers["X-SMSGW-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, hit.headers["X-SMSGW-Signature"])


WORKER_SCRIPT = Path(__file__).with_name("emulated_worker.py")
WORKER_FAST = dict(
    WORKER_CLAIM_INTERVAL="0.3", WORKER_REFRESH_INTERVAL="1", WORKER_SWEEP_INTERVAL="1",
    WORKER_RETRY_BASE="0.2", WORKER_RETRY_MAX="1", WORKER_RECONNECT_MIN="0.2", WORKER_RECONNECT_MAX="1",
    MODEM_COMMAND_TIMEOUT="2", MODEM_SEND_TIMEOUT="10", MQTT_KEEPALIVE="5",
)


@dataclass
class EmulatedWorker:
    modem_id: str
    iccid: str
    number: str
    control: str
    proc: subprocess.Popen
    log_path: Path
    sim_id: int | None = None

    def sent(self) -> list[dict]:
        return requests.get(self.control + "/sent", timeout=5).json()

    def inject(self, sender: str, text: str) -> None:
        resp = requests.post(self.control + "/inject", json={"sender": sender, "text": text}, timeout=5)
        assert resp.status_code == 200, resp.text

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def launch_worker(env: dict, python: str, log_dir: Path, send_latency: float = 0.0, **extra) -> EmulatedWorker:
    modem_id = f"emu{secrets.token_hex(3)}"
    iccid = "8999" + "".join(str(secrets.randbelow(10)) for _ in range(15))
    number = "+1555" + "".join(str(secrets.randbelow(10)) for _ in range(7))
    port = free_port()
    log_path = log_dir / f"{modem_id}.log"
    worker_env = dict(env, **WORKER_FAST, MODEM_ID=modem_id, EMU_ICCID=iccid, EMU_NUMBER=number,
                      EMU_CONTROL_PORT=str(port), EMU_SEND_LATENCY=str(send_latency),
                      EMU_REPORT_DELAY="0.1", **{k: str(v) for k, v in extra.items()})
    proc = subprocess.Popen([python, str(WORKER_SCRIPT)], env=worker_env,
                            stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    return EmulatedWorker(modem_id, iccid, number, f"http://127.0.0.1:{port}", proc, log_path)


def wait_worker_ready(worker: EmulatedWorker, db_session, timeout: float = 20) -> None:
    def ready():
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited:\n{worker.log_path.read_text()[-3000:]}")
        with db_session() as s:
            row = s.query(SimCard, Modem.online).join(Modem, Modem.id == SimCard.modem_id).filter(
                SimCard.iccid == worker.iccid).first()
            return row is not None and row[1] and row[0].id

    worker.sim_id = wait_until(ready, timeout, 0.1, f"worker {worker.modem_id} to register")


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
        stop_process(w.proc)
