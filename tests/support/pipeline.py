"""The pipeline from a test's side: who leads, a webhook receiver on
127.0.0.1, and the rows a worker would have written."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis as redis_lib
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from smsgw_api.pipeline.leader import APP_NAME_PREFIX, lock_keys
from smsgw_common.models import Message, Modem, SimCard

from .waits import wait_until


def current_leader(database_url: str, prefix: str) -> str | None:
    """Who holds the leader's advisory lock, asked of Postgres itself."""
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            a, b = lock_keys(prefix)
            name = conn.execute(
                text(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :a AND l.objid = :b "
                    "AND l.objsubid = 2"
                ),
                {"a": a, "b": b},
            ).scalar()
    finally:
        engine.dispose()
    return name.removeprefix(APP_NAME_PREFIX) if name else None


def wait_for_leader(env: dict, timeout: float = 15) -> None:
    """The events leader is elected within seconds; its MQTT session must be
    up before a test publishes events."""
    r = redis_lib.Redis.from_url(env["REDIS_URL"])
    key = env["MQTT_PREFIX"] + "mqtt_status"

    def up():
        raw = r.get(key)
        return raw is not None and json.loads(raw)["connected"]

    try:
        wait_until(up, timeout, 0.1, f"the events leader to connect to MQTT ({key} in Redis)")
    finally:
        r.close()


def wait_for_listeners(env: dict, processes: int, timeout: float = 15) -> None:
    """Every API process subscribes to the live feed as it boots, before any
    socket connects (live/socketio.py `start_listening`): a process the
    events leader never counted would miss what it held through an outage."""
    r = redis_lib.Redis.from_url(env["REDIS_URL"])
    channel = env["MQTT_PREFIX"] + "socketio"

    def listening():
        return r.pubsub_numsub(channel)[0][1]

    try:
        wait_until(
            lambda: listening() == processes,
            timeout,
            0.1,
            lambda: f"all {processes} API processes to listen on {channel}; {listening()} do",
        )
    finally:
        r.close()


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
        return wait_until(
            lambda: next((h for h in list(self.hits) if predicate(h)), None),
            timeout,
            0.02,
            lambda: f"{what} ({len(self.hits)} hits so far)",
        )

    def wait_count(self, predicate, count: int, timeout: float = 10.0, what: str = "webhooks") -> list[Hit]:
        """At least `count` hits matching `predicate`."""
        return wait_until(
            lambda: (hits := [h for h in list(self.hits) if predicate(h)]) and len(hits) >= count and hits,
            timeout,
            0.02,
            lambda: f"{count} × {what} ({len(self.hits)} hits so far)",
        )


@contextmanager
def webhook_receiver():
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
    try:
        yield rec
    finally:
        rec.server.shutdown()
        rec.server.server_close()


def verify_signature(secret: str, hit: Hit) -> bool:
    ts = hit.headers["X-SMSGW-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, hit.headers["X-SMSGW-Signature"])


def add_modem_and_sim(db_session, online: bool = True, **sim_fields) -> tuple[str, int]:
    """What a worker registers on start: its modem row and its SIM."""
    modem_id = f"m{secrets.token_hex(3)}"
    with db_session() as s:
        s.add(Modem(id=modem_id, online=online, imei=secrets.token_hex(7)))
        s.flush()
        sim = SimCard(
            number=f"+4915{secrets.randbelow(10**8):08d}",
            status="active",
            modem_id=modem_id,
            iccid=f"89{secrets.randbelow(10**17):017d}",
            **sim_fields,
        )
        s.add(sim)
        s.commit()
        return modem_id, sim.id


def add_outbound(
    db_session, sim_id: int, user_id: int | None, text: str = "hello", status: str = "queued", **fields
) -> int:
    with db_session() as s:
        msg = Message(
            direction="outbound",
            recipient=f"+4917{secrets.randbelow(10**8):08d}",
            message=text,
            status=status,
            sim_card_id=sim_id,
            user_id=user_id,
            segments=1,
            **fields,
        )
        s.add(msg)
        s.commit()
        return msg.id


def add_inbound(db_session, mqtt, sim_id: int, sender: str, text: str) -> int:
    """An inbound SMS as a worker records it: its row, then its `received` event."""
    with db_session() as s:
        msg = Message(
            direction="inbound",
            sender=sender,
            recipient="+4915100000001",
            message=text,
            status="received",
            sim_card_id=sim_id,
        )
        s.add(msg)
        s.commit()
    mqtt.message_event(
        message_id=msg.id, state="received", direction="inbound", sim_card_id=sim_id, sender=sender, message=text
    )
    return msg.id


def wait_modem_state_stored(env: dict, modem_id: str, timeout: float = 10) -> dict:
    """The leader stores a modem's state in Redis (what a new socket is
    replayed) only after it emitted the change and committed its hooks: a
    client connecting in between gets neither. Wait for the stored copy."""
    from smsgw_api.core.runtime import MODEM_STATUS_KEY

    r = redis_lib.Redis.from_url(env["REDIS_URL"])
    key = env["MQTT_PREFIX"] + MODEM_STATUS_KEY
    try:
        raw = wait_until(lambda: r.hget(key, modem_id), timeout, 0.02, f"{modem_id}'s state in {key}")
    finally:
        r.close()
    return json.loads(raw)
