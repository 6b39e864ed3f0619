"""Live events: Socket.IO for browsers, and the one event consumer per deployment.

How it fits together (see docs/realtime.md):

- Every API process runs Flask-SocketIO in gevent mode with Redis as the
  Socket.IO message queue, so an emit from any process reaches the clients of
  every process and every replica.
- Transport is WebSocket only: no long-polling, hence no sticky sessions are
  needed however many gunicorn workers or replicas run. Clients connect with
  `transports: ["websocket"]`. The gunicorn worker class is plain `gevent`
  (simple-websocket does the upgrade; gevent-websocket is not used).
- Sockets authenticate with the connect `auth` payload only, and every process
  re-checks its open sockets' users, keys and roles (`SocketAuthWatch`): a
  socket loses its access when its credentials do.
- Exactly one process per deployment is the *leader*: every API process runs a
  small election (a Redis key set with NX and a TTL, renewed while alive). The
  leader consumes MQTT (message events, modem states), relays them to Socket.IO,
  queues modem webhook deliveries, and runs the webhook dispatcher (which
  derives message deliveries from Postgres; MQTT only wakes it), the opt-out
  keyword applier (STOP/START from inbound rows in Postgres; MQTT only wakes
  it, optouts.py) and the sweeper. When it dies its key expires and another process takes over.
  Its MQTT session is persistent (fixed client id, clean session off), so QoS 1
  events published while no leader was connected are kept by the broker and
  handed to the next leader.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import socket
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from flask import Flask, request
from flask_socketio import SocketIO, join_room
from sqlalchemy import text

from smsgw_common.db import session_scope
from smsgw_common.models import RECEIVED, Message, Modem, utcnow
from smsgw_common.mqtt import Bus
from smsgw_common.schemas import MessageEventPayload, ModemState, parse

from .extensions import db, redis_client
from .settings import PipelineSettings

log = logging.getLogger(__name__)

ROLE_ORDER = ("viewer", "user", "admin")
EXT_KEY = "smsgw_pipeline"

socketio = SocketIO()


def pipeline_settings(app: Flask) -> PipelineSettings:
    return _api_settings(app).pipeline


def _api_settings(app: Flask):
    return app.config["SMSGW_SETTINGS"]


def _key(app: Flask, name: str) -> str:
    """Redis keys and channels carry the MQTT prefix: Redis pub/sub ignores the
    database number, so two deployments (or test runs) on one Redis stay apart."""
    return f"{_api_settings(app).common.mqtt.prefix}{name}"


# --- Socket.IO -------------------------------------------------------------


def rooms_for(min_role: str) -> list[str]:
    return [f"role:{r}" for r in ROLE_ORDER[ROLE_ORDER.index(min_role):]]


def emit(event: str, data: dict, min_role: str = "viewer") -> None:
    """Send to every connected client whose role is at least `min_role`."""
    try:
        socketio.emit(event, data, to=rooms_for(min_role), namespace="/")
    except Exception:
        # A Redis hiccup must not stop the consumer; Postgres keeps the truth.
        log.exception("socket.io emit of %s failed", event)


def _principal_from_credentials(token: str | None, api_key: str | None):
    """The API's own checks (one truth for what a valid credential is)."""
    from smsgw_api.errors import ApiError
    from smsgw_api.security import _principal_from_key, _principal_from_token

    try:
        if api_key:
            return _principal_from_key(api_key.strip())
        return _principal_from_token(token.strip())
    except ApiError:
        return None


def _room_role(role: str) -> str:
    return role if role in ROLE_ORDER else "viewer"


def _token_expiry(token: str) -> float | None:
    """The `exp` of a token `_principal_from_token` has just verified."""
    import jwt

    try:
        exp = jwt.decode(token.strip(), options={"verify_signature": False}).get("exp")
        return float(exp) if exp is not None else None
    except (jwt.InvalidTokenError, TypeError, ValueError):
        return None


@dataclass
class SocketGrant:
    """What let a socket in; re-checked for as long as it stays open."""

    sid: str
    user_id: int
    role: str  # the room it is in: role:<role>
    key_id: int | None  # None: a JWT
    expires_at: float | None  # epoch seconds: the JWT's exp, or the key's expires_at


# Every user and key behind this process's sockets, in one statement. A user
# missing from the answer is gone or inactive; a key missing from it is
# revoked, expired or no longer that user's.
_REVALIDATE_SQL = text(
    "SELECT u.id AS user_id, u.role, k.id AS key_id, k.expires_at AS key_expires_at "
    "FROM users u LEFT JOIN api_keys k ON k.user_id = u.id AND k.id = ANY(:key_ids) "
    "AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()) "
    "WHERE u.id = ANY(:user_ids) AND u.is_active"
)


class SocketAuthWatch:
    """Keeps open sockets as authorised as a fresh request would be.

    A socket is authenticated once, when it connects; this watch remembers
    what let each of this process's sockets in and, in one background task per
    process, re-checks them all with one query every `interval` seconds
    (SOCKETIO_REAUTH_SECONDS): a deactivated or deleted user or a revoked or
    expired key is disconnected, a changed role moves the socket to the room of
    its new role. A JWT's socket is also disconnected the moment the token
    expires, without waiting for the next pass.
    """

    def __init__(self, app: Flask, interval: float):
        self.app = app
        self.interval = max(interval, 0.2)
        self.grants: dict[str, SocketGrant] = {}
        self._wake = threading.Event()
        self._next_wake = 0.0
        self._pid: int | None = None

    # Socket.IO handlers (this process)
    def add(self, grant: SocketGrant) -> None:
        self.grants[grant.sid] = grant
        if self._pid != os.getpid():  # first socket of this (forked) process
            self._pid = os.getpid()
            socketio.start_background_task(self.run)
        elif grant.expires_at is not None and grant.expires_at < self._next_wake:
            self._wake.set()

    def remove(self, sid: str) -> None:
        self.grants.pop(sid, None)

    # the background task
    def run(self) -> None:
        last_pass = time.monotonic()
        while True:
            try:
                if time.monotonic() - last_pass >= self.interval:
                    last_pass = time.monotonic()
                    self.revalidate()
                self.expire()
            except Exception:
                log.exception("re-checking socket credentials failed")
            self._wake.clear()
            until_pass = self.interval - (time.monotonic() - last_pass)
            expiries = [g.expires_at for g in list(self.grants.values()) if g.expires_at is not None]
            until_expiry = min(expiries) - time.time() if expiries else until_pass
            wait = max(min(until_pass, until_expiry), 0.05)
            self._next_wake = time.time() + wait
            self._wake.wait(wait)

    def expire(self) -> None:
        now = time.time()
        for grant in list(self.grants.values()):
            if grant.expires_at is not None and grant.expires_at <= now:
                self.drop(grant.sid, "credentials expired")

    def revalidate(self) -> None:
        grants = list(self.grants.values())
        if not grants:
            return
        user_ids = sorted({g.user_id for g in grants})
        key_ids = sorted({g.key_id for g in grants if g.key_id is not None}) or [-1]
        with session_scope(db.state(self.app).sessionmaker) as session:
            rows = session.execute(_REVALIDATE_SQL, {"user_ids": user_ids, "key_ids": key_ids}).mappings().all()
        roles = {row["user_id"]: row["role"] for row in rows}
        keys = {row["key_id"]: (row["user_id"], row["key_expires_at"]) for row in rows if row["key_id"] is not None}
        for grant in grants:
            if grant.sid not in self.grants:
                continue  # closed meanwhile
            if grant.user_id not in roles:
                self.drop(grant.sid, "user deactivated or deleted")
                continue
            if grant.key_id is not None:
                if grant.key_id not in keys:
                    self.drop(grant.sid, "api key revoked or expired")
                    continue
                key_expires = keys[grant.key_id][1]
                grant.expires_at = key_expires.timestamp() if key_expires is not None else None
            role = _room_role(roles[grant.user_id])
            if role != grant.role:
                self.move(grant, role)

    def move(self, grant: SocketGrant, role: str) -> None:
        server = socketio.server
        server.leave_room(grant.sid, f"role:{grant.role}", namespace="/")
        server.enter_room(grant.sid, f"role:{role}", namespace="/")
        log.info("socket moved to a new role room", extra={"user_id": grant.user_id, "role": role})
        grant.role = role

    def drop(self, sid: str, reason: str) -> None:
        """Disconnect one of this process's sockets and close its WebSocket, so
        that a client which ignores the Socket.IO disconnect reconnects (with
        fresh credentials, or is refused)."""
        grant = self.grants.pop(sid, None)
        server = socketio.server
        try:
            eio_sid = server.manager.eio_sid_from_sid(sid, "/")
            server.disconnect(sid, namespace="/", ignore_queue=True)
            if eio_sid is not None:
                server.eio.disconnect(eio_sid)
        except Exception:
            log.exception("could not disconnect a socket")
        log.info("socket disconnected: %s", reason,
                 extra={"user_id": grant.user_id if grant else None, "reason": reason})


def _watch() -> SocketAuthWatch | None:
    from flask import current_app

    return current_app.extensions.get(EXT_KEY, {}).get("socket_watch")


def _on_disconnect(*_args):
    watch = _watch()
    if watch is not None:
        watch.remove(request.sid)


def _on_connect(auth):
    auth = auth if isinstance(auth, dict) else {}
    # Only the connect payload: a query string (?token=) lands in access logs.
    token = auth.get("token") if isinstance(auth.get("token"), str) else None
    api_key = auth.get("api_key") if isinstance(auth.get("api_key"), str) else None
    if not token and not api_key:
        raise ConnectionRefusedError("authentication required: pass {token} or {api_key} in the auth payload")
    principal = _principal_from_credentials(token, api_key)
    if principal is None:
        raise ConnectionRefusedError("invalid or expired credentials")
    role = _room_role(principal.role)
    join_room(f"role:{role}")
    watch = _watch()
    if watch is not None:
        watch.add(SocketGrant(
            sid=request.sid, user_id=principal.user_id, role=role,
            key_id=principal.api_key_id if principal.via == "api_key" else None,
            expires_at=_token_expiry(token) if principal.via == "jwt" else None,
        ))
    # A newly connected dashboard gets the current picture without waiting
    # for the next change.
    from flask import current_app

    app = current_app._get_current_object()
    try:
        r = _redis(app)
        raw = r.get(_key(app, "mqtt_status"))
        status = json.loads(raw) if raw else {"connected": False, "broker": _broker(app)}
        socketio.emit("mqtt_status", status, to=request.sid)
        for blob in r.hvals(_key(app, "modem_status")):
            socketio.emit("modem_status", json.loads(blob), to=request.sid)
    except Exception:
        log.exception("could not send the initial state to a new socket")
    return True


def _broker(app: Flask) -> str:
    mqtt = _api_settings(app).common.mqtt
    return f"{mqtt.host}:{mqtt.port}"


def _redis(app: Flask):
    return redis_client.get(app)


def init_app(app: Flask) -> None:
    settings = pipeline_settings(app)
    api = _api_settings(app)
    socketio.init_app(
        app,
        async_mode="gevent",
        message_queue=api.common.redis.url,
        channel=_key(app, "socketio"),
        cors_allowed_origins=origin_checker(api.cors_allowed_origins),
        transports=list(settings.transports),
        logger=False,
        engineio_logger=False,
    )
    app.extensions.setdefault(EXT_KEY, {})["socket_watch"] = SocketAuthWatch(
        app, settings.socket_reauth_interval)
    socketio.on_event("connect", _on_connect)
    socketio.on_event("disconnect", _on_disconnect)
    if _should_run_background(app, settings):
        start_background(app)


def origin_checker(allowed: tuple[str, ...]):
    """Same origin (the dashboard behind the same nginx) or the CORS allow-list;
    a client without an Origin header is no browser, and CSRF needs one."""
    allowed_set = set(allowed)

    def check(origin, environ=None):
        if not origin or origin in allowed_set:
            return True
        host = (environ or {}).get("HTTP_X_FORWARDED_HOST") or (environ or {}).get("HTTP_HOST")
        if not host:
            return False
        host = host.split(",")[0].strip()
        return origin in (f"http://{host}", f"https://{host}")

    return check


def _should_run_background(app: Flask, settings: PipelineSettings) -> bool:
    if settings.background == "off" or app.testing:
        return False
    if settings.background == "on":
        return True
    try:
        from gevent import monkey

        # Under gunicorn's gevent worker (or our own entry point) the process is
        # patched and background work runs as greenlets; a plain import of the
        # app (CLI, unit tests) stays passive.
        return monkey.is_module_patched("socket")
    except ImportError:
        return False


# --- Background services (leader only) --------------------------------------


class WakeableLoop(ABC):
    """A daemon thread running `run()`; `wake()` cuts its current wait short."""

    thread_name = "background"

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        threading.Thread(target=self.run, name=self.thread_name, daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()

    @abstractmethod
    def run(self) -> None: ...


# --- Leader election -------------------------------------------------------

# Take the lock if free, keep it if ours (also after a Redis hiccup made us
# step down while the key still names us).
_CLAIM = """
local holder = redis.call('get', KEYS[1])
if holder == false then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Leader:
    """Holds the Redis lock while alive; runs the consumer, dispatcher and
    sweeper only while it holds it."""

    def __init__(self, app: Flask):
        self.app = app
        self.settings = pipeline_settings(app)
        self.key = _key(app, "leader")
        self.me = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.is_leader = False
        self.stopping = threading.Event()
        self.services: list = []

    def run(self) -> None:
        r = _redis(self.app)
        ttl_ms = int(self.settings.leader_ttl * 1000)
        interval = max(self.settings.leader_ttl / 3, 0.2)
        renewed = 0.0
        while not self.stopping.is_set():
            try:
                holds = bool(r.eval(_CLAIM, 1, self.key, self.me, ttl_ms))
                if holds:
                    renewed = time.monotonic()
                if holds and not self.is_leader:
                    log.info("became the events leader", extra={"leader": self.me})
                    self._step_up()
                elif not holds and self.is_leader:
                    log.warning("lost the events leadership")
                    self._step_down()
            except Exception:
                log.exception("leader election round failed")
                if self.is_leader and time.monotonic() - renewed > self.settings.leader_ttl * 0.8:
                    # Our key may have expired by now and someone else taken
                    # over: two leaders would relay every event twice.
                    self._step_down()
            self.stopping.wait(interval)
        self.release()

    def _step_up(self) -> None:
        from smsgw_api import optouts, sweeper, webhooks

        self.is_leader = True
        consumer = EventConsumer(self.app)
        dispatcher = webhooks.Dispatcher(self.app)
        keywords = optouts.KeywordApplier(self.app)
        sweep = sweeper.Sweeper(self.app)
        consumer.on_modem_offline = sweep.wake
        consumer.on_deliveries = dispatcher.wake
        consumer.on_inbound = keywords.wake
        self.services = [consumer, dispatcher, keywords, sweep]
        for svc in self.services:
            svc.start()

    def _step_down(self) -> None:
        self.is_leader = False
        for svc in self.services:
            try:
                svc.stop()
            except Exception:
                log.exception("stopping %s failed", type(svc).__name__)
        self.services = []

    def stop(self) -> None:
        self.stopping.set()

    def release(self) -> None:
        self.stopping.set()
        if not self.is_leader:
            return
        self._step_down()
        try:
            _redis(self.app).eval(_RELEASE, 1, self.key, self.me)
        except Exception:
            pass


def start_background(app: Flask) -> Leader:
    state = app.extensions.setdefault(EXT_KEY, {})
    if state.get("leader_pid") == os.getpid():
        return state["leader"]
    try:
        from psycogreen.gevent import patch_psycopg

        # The leader talks to Postgres constantly; under gevent each query
        # must yield instead of freezing the whole worker.
        patch_psycopg()
    except ImportError:
        pass
    leader = Leader(app)
    state["leader"], state["leader_pid"] = leader, os.getpid()
    # A worker that exits cleanly (restart, scale down) hands over at once
    # instead of after LEADER_TTL_SECONDS.
    atexit.register(leader.release)
    t = threading.Thread(target=leader.run, name="events-leader", daemon=True)
    t.start()
    return leader


# --- The event consumer (leader only) --------------------------------------


def status_update_payload(ev: MessageEventPayload, msg: Message | None) -> dict:
    """`sms_status_update` with the seed's fields and more (docs/api-contract.md)."""
    direction = msg.direction if msg is not None else ev.direction
    sender = (msg.sender if msg is not None else None) or ev.sender
    recipient = (msg.recipient if msg is not None else None) or ev.recipient
    if direction == "outbound":
        sender = (msg.sender_sim if msg is not None else None) or sender
    return {
        "message_id": ev.message_id,
        "id": ev.message_id,
        "status": ev.state,
        "state": ev.state,
        "direction": direction,
        "sender_number": sender,
        "receiver_number": recipient,
        "message": (msg.message if msg is not None else None) or ev.message,
        "sim_card_id": ev.sim_card_id if ev.sim_card_id is not None else (msg.sim_card_id if msg else None),
        "modem_id": ev.modem_id,
        "segments": ev.segments if ev.segments is not None else (msg.segments if msg else None),
        "timestamp": ev.at.isoformat(),
        "error_code": ev.error_code,
        "error_text": ev.error_text,
    }


def modem_status_payload(modem_id: str, st: ModemState) -> dict:
    return {
        "modem_id": modem_id,
        "online": st.online,
        "signal_quality": st.signal_quality,
        "signal_dbm": st.signal_dbm,
        "registration": st.registration,
        "operator": st.operator,
        "sim_card_id": st.sim_card_id,
        "number": st.number,
        "last_error": st.last_error,
        "queue_depth": st.queue_depth,
        "reason": st.reason,
        "timestamp": st.ts.isoformat(),
    }


class EventConsumer:
    """Subscribes to message events and modem states; one per deployment.

    paho's network thread only parses and enqueues; a worker thread does the
    database work so that a slow query never delays MQTT acknowledgements.
    """

    def __init__(self, app: Flask):
        self.app = app
        api = _api_settings(app)
        from smsgw_common.topics import Topics

        self.topics = Topics(api.common.mqtt.prefix)
        # A fixed client id makes the session persistent across leaders.
        client_id = "events-" + api.common.mqtt.prefix.strip("/").replace("/", "-")[-40:]
        self.bus = Bus(api.common.mqtt, client_id=client_id, on_connect=self._connected,
                       on_disconnect=self._disconnected)
        self.queue: queue.Queue = queue.Queue(maxsize=100000)
        self.stopping = threading.Event()
        self.on_modem_offline = lambda: None
        self.on_deliveries = lambda: None
        self.on_inbound = lambda: None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.bus.subscribe(self.topics.message_events(), self._enqueue_message_event)
        self.bus.subscribe(self.topics.all_states(), self._enqueue_state)
        self._thread = threading.Thread(target=self._work, name="events-consumer", daemon=True)
        self._thread.start()
        self.bus.start()

    def stop(self) -> None:
        # No new messages first, then let the worker finish what is queued
        # (browsers); webhook deliveries and opt-outs do not depend on this
        # queue at all, they are derived from Postgres (webhooks.py, optouts.py).
        self.stopping.set()
        self.bus.stop()
        self.queue.put(None)
        self._publish_mqtt_status(False)

    # paho thread
    def _connected(self) -> None:
        self._publish_mqtt_status(True)

    def _disconnected(self) -> None:
        if not self.stopping.is_set():
            self._publish_mqtt_status(False)

    def _publish_mqtt_status(self, connected: bool) -> None:
        status = {"connected": connected, "broker": _broker(self.app)}
        try:
            _redis(self.app).set(_key(self.app, "mqtt_status"), json.dumps(status))
        except Exception:
            log.exception("could not store the mqtt status")
        emit("mqtt_status", status)

    def _enqueue_message_event(self, topic: str, payload: bytes) -> None:
        ev = parse(MessageEventPayload, payload)
        if ev is not None:
            # The worker committed the event before publishing it: the
            # dispatcher can derive its webhook deliveries right away, and
            # the keyword applier find an inbound STOP in `messages`.
            self.on_deliveries()
            if ev.state == RECEIVED or ev.direction == "inbound":
                self.on_inbound()
            self.queue.put(("message", ev))

    def _enqueue_state(self, topic: str, payload: bytes) -> None:
        modem_id = self.topics.modem_id_of(topic)
        if not payload:
            return  # a cleared retained state
        st = parse(ModemState, payload)
        if st is not None and modem_id:
            self.queue.put(("state", (modem_id, st)))

    # worker thread
    def _work(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            kind, data = item
            try:
                if kind == "message":
                    self.handle_message_event(data)
                else:
                    self.handle_modem_state(*data)
            except Exception:
                # One bad event must not stop the relay of the next ones.
                log.exception("handling a %s event failed", kind)

    def handle_message_event(self, ev: MessageEventPayload) -> None:
        # An inbound event carries everything a browser shows: relay it before
        # touching the database. Outbound events need the row (text, numbers).
        early = ev.state == RECEIVED and ev.message is not None and ev.sender is not None
        with session_scope(db.state(self.app).sessionmaker) as session:
            msg = None if early else session.get(Message, ev.message_id)
            data = status_update_payload(ev, msg)
            # Browsers first: they are the latency-sensitive consumers.
            emit("sms_status_update", data)
            if ev.state == RECEIVED:
                emit("sms_received", {
                    "id": ev.message_id,
                    "message_id": ev.message_id,
                    "sender": data["sender_number"],
                    "recipient": data["receiver_number"],
                    "message": data["message"],
                    "sim_card_id": data["sim_card_id"],
                    "timestamp": data["timestamp"],
                })
        # STOP/START is not applied from this copy of the event: the keyword
        # applier (woken in _enqueue_message_event) reads it from `messages`.

    def handle_modem_state(self, modem_id: str, st: ModemState) -> None:
        from smsgw_api import webhooks

        data = modem_status_payload(modem_id, st)
        r = _redis(self.app)
        # The previous state lives in Redis, not in this process: a new leader
        # still sees an online -> offline change that happened during handover.
        prev_raw = r.hget(_key(self.app, "modem_status"), modem_id)
        emit("modem_status", data)
        prev_online = json.loads(prev_raw).get("online") if prev_raw else None
        with session_scope(db.state(self.app).sessionmaker) as session:
            modem = session.get(Modem, modem_id)
            if modem is not None and (modem.online != st.online or not st.online):
                # A dead worker cannot write its own offline state; its will can.
                modem.online = st.online
                if st.online:
                    modem.last_seen_at = utcnow()
            queued = 0
            if prev_online != st.online:
                queued = webhooks.enqueue_modem_event(session, modem_id, st, data)
        # Only after the delivery is committed: a leader that dies before this
        # line leaves the old state in Redis, and the next leader, handed the
        # retained state on subscribing, sees the change again.
        r.hset(_key(self.app, "modem_status"), modem_id, json.dumps(data))
        if queued:
            self.on_deliveries()
        if not st.online:
            self.on_modem_offline()


# --- Standalone -------------------------------------------------------------


def main() -> int:
    """`python -m smsgw_api.realtime`: a leader candidate without HTTP, for
    deployments that prefer the background work in its own process."""
    from gevent import monkey

    monkey.patch_all()
    from smsgw_api import create_app

    os.environ["PIPELINE_BACKGROUND"] = "on"
    app = create_app()
    leader = app.extensions[EXT_KEY]["leader"]
    import signal

    signal.signal(signal.SIGTERM, lambda *_: leader.stop())
    while not leader.stopping.is_set():
        time.sleep(1)
    time.sleep(0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
