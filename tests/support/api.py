"""The API from a test's side: its environment, personas (Alice the admin,
Bob a user, Charlie/Carol/Vera viewers) with their keys, rows a test needs
(SIMs, counts), an HTTP client for an API started as a process, and a
Socket.IO client that records what it receives."""

from __future__ import annotations

import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import requests
import socketio
from sqlalchemy import text
from sqlalchemy.orm import Session

from smsgw_common.models import ApiKey, Modem, SimCard, User

from .services import MQTT_HOST, MQTT_PORT
from .waits import wait_until

PASSWORD = "correct horse battery staple"


def api_env(database_url, redis_url, mqtt_prefix, **extra) -> dict[str, str]:
    """Settings for an in-process app (create_app({"ENV": ...}))."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "MQTT_HOST": MQTT_HOST,
        "MQTT_PORT": str(MQTT_PORT),
        "MQTT_PREFIX": mqtt_prefix,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "ROUTING_CACHE_SECONDS": "0",
        "API_DB_POOL_SIZE": "5",
        "LOGIN_MAX_ATTEMPTS": "5",
        "USSD_TIMEOUT_SECONDS": "3",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class Persona:
    id: int
    username: str
    role: str
    api_key: str
    password: str = PASSWORD

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}


def make_persona(engine, username: str, role: str, password: str = PASSWORD) -> Persona:
    from werkzeug.security import generate_password_hash

    from smsgw_api.core.security import new_api_key

    key, prefix, digest = new_api_key()
    with Session(engine) as s:
        user = User(username=username, password_hash=generate_password_hash(password), role=role)
        s.add(user)
        s.flush()
        s.add(ApiKey(user_id=user.id, name="test", prefix=prefix, key_hash=digest))
        s.commit()
        return Persona(user.id, username, role, key, password)


def unique_number() -> str:
    return "+49151" + str(secrets.randbelow(10**7)).zfill(7)


def make_sim(engine, *, online: bool = True, modem_id: str | None = None, status: str = "active", **limits) -> SimCard:
    """An active SIM in a modem that a worker reported (online or not)."""
    modem_id = modem_id or f"m{secrets.token_hex(4)}"
    with Session(engine, expire_on_commit=False) as s:
        if s.get(Modem, modem_id) is None:
            s.add(Modem(id=modem_id, online=online, signal_quality=20, registration="home", operator="TestNet"))
            s.flush()
        sim = SimCard(
            number=unique_number(), status=status, modem_id=modem_id, iccid="8949" + secrets.token_hex(7), **limits
        )
        s.add(sim)
        s.commit()
        return sim


def count_rows(engine, table: str, where: str = "true", **params) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table} WHERE {where}"), params).scalar()


class HttpApi:
    """requests against an API process, each call as one persona (anything
    with `.headers`)."""

    def __init__(self, base: str, proc=None, log_path=None):
        self.base, self.proc, self.log_path = base, proc, log_path
        self.http = requests.Session()

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path, who, **kw):
        return self.http.get(self.url(path), headers=who.headers, timeout=10, **kw)

    def post(self, path, who, json_body=None, **kw):
        return self.http.post(
            self.url(path), headers={**who.headers, **kw.pop("headers", {})}, json=json_body, timeout=10, **kw
        )

    def delete(self, path, who, **kw):
        return self.http.delete(self.url(path), headers=who.headers, timeout=10, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


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
        # The server sends mqtt_status after it put the socket in its rooms:
        # from then on, no event meant for this socket is missed.
        self.wait_for("mqtt_status", timeout=5)

    def _record(self, event, data=None):
        with self.lock:
            self.events.append((event, data))

    def seen(self, event: str, predicate=lambda d: True) -> list[dict]:
        with self.lock:
            return [d for e, d in self.events if e == event and predicate(d)]

    def wait_for(self, event: str, predicate=lambda d: True, timeout: float = 10.0) -> dict:
        return wait_until(
            lambda: (self.seen(event, predicate) or [None])[0],
            timeout,
            0.02,
            lambda: f"socket event {event} (events so far: {[e for e, _ in self.events][-10:]})",
        )

    def close(self) -> None:
        self.sio.disconnect()


@contextmanager
def socket_opener(base: str):
    """connect(who or auth, ...) -> Socket to the API at `base`; all closed at the end."""
    opened = []

    def connect(who=None, auth: dict | None = None, query: str = "", origin: str | None = None) -> Socket:
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


class SessionApi:
    """A requests session that logs in with a password (as the dashboard
    does) and then calls any method: `api.get(path)`, `api.post(path, json=...)`."""

    def __init__(self, base: str):
        self.base = base
        self.s = requests.Session()

    def login(self, username: str, password: str) -> dict:
        r = self.s.post(self.base + "/api/auth", json={"username": username, "password": password}, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        self.s.headers["Authorization"] = f"Bearer {body['token']}"
        return body

    def __getattr__(self, method):
        def call(path, **kw):
            kw.setdefault("timeout", 15)
            return self.s.request(method.upper(), self.base + path, **kw)

        return call
