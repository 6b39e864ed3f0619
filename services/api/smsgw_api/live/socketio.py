"""Live events: Socket.IO for browsers.

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
- An engine.io connection that has not completed an authenticated Socket.IO
  connect within SOCKETIO_HANDSHAKE_SECONDS is closed, and one whose connect
  is refused is closed at once (`HandshakeGuard`): idle unauthenticated
  sockets cannot pile up and starve the process.
- Events reach the browsers from the pipeline's leader (pipeline/events.py),
  which emits through the same Redis queue (core/runtime.py `Runtime.emit`),
  numbered and held while Redis is down (core/livefeed.py); each process
  re-subscribes within a second of Redis returning (`Listener`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass

import jwt
import socketio as socketio_lib
from flask import Flask, current_app, request
from flask_socketio import SocketIO, join_room
from sqlalchemy import text

from smsgw_api.core.errors import ApiError
from smsgw_api.core.extensions import runtime
from smsgw_api.core.runtime import MODEM_STATUS_KEY, MQTT_STATUS_KEY, ROLE_ORDER
from smsgw_api.core.security import AUTH_GENERATION_KEY, principal_from_key, principal_from_token
from smsgw_common.db import session_scope

log = logging.getLogger(__name__)

WATCH_KEY = "smsgw_socket_watch"
GUARD_KEY = "smsgw_socket_handshake_guard"

socketio = SocketIO()


# --- Socket.IO -------------------------------------------------------------


class Listener(socketio_lib.RedisManager):
    """python-socketio's Redis manager, re-subscribing every RETRY_SECONDS
    once Redis is lost instead of backing off up to a minute.

    Redis pub/sub keeps nothing: what is published after Redis came back but
    before this process re-subscribed reaches none of its sockets. With the
    library's backoff (1, 2, 4 ... 60 s) that was up to a minute of events
    after an outage; the events leader waits for the listeners it had
    before publishing what it held (core/livefeed.py), so they must be quick."""

    RETRY_SECONDS = 0.5

    def __init__(self, url: str, channel: str):
        super().__init__(url, channel=channel, redis_options={"socket_connect_timeout": 2})

    def tell_sockets_interrupted(self) -> None:
        """Straight to this process's sockets, not through Redis: they learn
        at once instead of after the heartbeat's silence (docs/realtime.md).
        The payload says nothing but that; only connected (authenticated)
        sockets are in the namespace."""
        try:
            self.emit("live_interrupted", {"reason": "redis unreachable"}, namespace="/", ignore_queue=True)
        except Exception:
            log.exception("could not tell the sockets that the live feed is interrupted")

    def _redis_listen_with_retries(self):
        lost_at: float | None = None
        while True:
            try:
                self._redis_connect()
                self.pubsub.subscribe(self.channel)
                if lost_at is not None:
                    log.warning(
                        "re-subscribed to Redis after %.1f s: live events flow again", time.monotonic() - lost_at
                    )
                    lost_at = None
                yield from self.pubsub.listen()
            except Exception as exc:
                if lost_at is None:
                    lost_at = time.monotonic()
                    log.warning(
                        "lost Redis (%s): live events cannot reach this process's sockets; retrying every %s s",
                        exc,
                        self.RETRY_SECONDS,
                    )
                    self.tell_sockets_interrupted()
                time.sleep(self.RETRY_SECONDS)


def _principal_from_credentials(token: str | None, api_key: str | None):
    """The API's own checks (one truth for what a valid credential is)."""
    try:
        if api_key:
            return principal_from_key(api_key.strip())
        if token:
            return principal_from_token(token.strip())
        return None
    except ApiError:
        return None


def _room_role(role: str) -> str:
    return role if role in ROLE_ORDER else "viewer"


def _token_claims(token: str) -> tuple[float | None, int]:
    """The `exp` and token version of a token `principal_from_token` has just verified."""
    try:
        claims = jwt.decode(token.strip(), options={"verify_signature": False})
        exp = claims.get("exp")
        return (float(exp) if exp is not None else None), int(claims.get("tv", 0))
    except (jwt.InvalidTokenError, TypeError, ValueError):
        return None, 0


@dataclass
class SocketGrant:
    """What let a socket in; re-checked for as long as it stays open."""

    sid: str
    user_id: int
    role: str  # the room it is in: role:<role>
    key_id: int | None  # None: a JWT
    expires_at: float | None  # epoch seconds: the JWT's exp, or the key's expires_at
    token_version: int | None = None  # a JWT's: the socket ends when the user's moves on


# Every user and key behind this process's sockets, in one statement. A user
# missing from the answer is gone or inactive; a key missing from it is
# revoked, expired or no longer that user's.
_REVALIDATE_SQL = text(
    "SELECT u.id AS user_id, u.role, u.token_version, k.id AS key_id, k.expires_at AS key_expires_at "
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
    expires, without waiting for the next pass, and the pass comes at once
    (within a second) when any process announces a credentials change
    (`forget_credentials`): a password change ends its sockets too.
    """

    GENERATION_POLL_SECONDS = 1.0

    def __init__(self, app: Flask, interval: float):
        self.app = app
        self.interval = max(interval, 0.2)
        self.grants: dict[str, SocketGrant] = {}
        self._wake = threading.Event()
        self._next_wake = 0.0
        self._pid: int | None = None
        self._generation: object = None

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
    def credentials_changed(self) -> bool:
        rt = runtime(self.app)
        try:
            generation = rt.redis.get(rt.key(AUTH_GENERATION_KEY))
        except Exception:
            return False  # the periodic pass still comes
        changed = generation != self._generation
        self._generation = generation
        return changed

    def run(self) -> None:
        last_pass = time.monotonic()
        self.credentials_changed()
        while True:
            try:
                if self.credentials_changed() or time.monotonic() - last_pass >= self.interval:
                    last_pass = time.monotonic()
                    self.revalidate()
                self.expire()
            except Exception:
                log.exception("re-checking socket credentials failed")
            self._wake.clear()
            until_pass = self.interval - (time.monotonic() - last_pass)
            expiries = [g.expires_at for g in list(self.grants.values()) if g.expires_at is not None]
            until_expiry = min(expiries) - time.time() if expiries else until_pass
            wait = max(min(until_pass, until_expiry, self.GENERATION_POLL_SECONDS), 0.05)
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
        with session_scope(runtime(self.app).sessionmaker) as session:
            rows = session.execute(_REVALIDATE_SQL, {"user_ids": user_ids, "key_ids": key_ids}).mappings().all()
        roles = {row["user_id"]: row["role"] for row in rows}
        versions = {row["user_id"]: row["token_version"] for row in rows}
        keys = {row["key_id"]: (row["user_id"], row["key_expires_at"]) for row in rows if row["key_id"] is not None}
        for grant in grants:
            if grant.sid not in self.grants:
                continue  # closed meanwhile
            if grant.user_id not in roles:
                self.drop(grant.sid, "user deactivated or deleted")
                continue
            if grant.token_version is not None and versions[grant.user_id] != grant.token_version:
                self.drop(grant.sid, "sessions ended (password, role or state changed)")
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
        log.info(
            "socket disconnected: %s", reason, extra={"user_id": grant.user_id if grant else None, "reason": reason}
        )


class HandshakeGuard:
    """Closes every engine.io connection of this process that is not, or no
    longer, an authenticated Socket.IO connection.

    An engine.io connection costs a socket, a greenlet and its pings before
    it has proven anything; 1,050 that never authenticated but answered
    pings made a plain GET /api/me time out. So each one has
    SOCKETIO_HANDSHAKE_SECONDS to complete an accepted Socket.IO connect; a
    refused connect, or a Socket.IO disconnect that leaves the connection
    open, closes it at once (after the CONNECT_ERROR already queued for the
    client). One background task per process does the closing.
    """

    def __init__(self, server, timeout: float):
        self.server = server
        self.timeout = max(timeout, 0.1)
        self.pending: dict[str, float] = {}  # engine.io sid -> monotonic deadline
        self._wake = threading.Event()
        self._pid: int | None = None
        eio = server.eio
        on_connect, on_disconnect = eio.handlers["connect"], eio.handlers["disconnect"]

        def connect(eio_sid, environ):
            accepted = on_connect(eio_sid, environ)
            self.close_by(eio_sid, time.monotonic() + self.timeout)
            return accepted

        def disconnect(eio_sid, reason=None):
            try:
                return on_disconnect(eio_sid, reason)
            finally:
                self.pending.pop(eio_sid, None)

        eio.on("connect", connect)
        eio.on("disconnect", disconnect)

    def close_by(self, eio_sid: str, deadline: float) -> None:
        self.pending[eio_sid] = deadline
        if self._pid != os.getpid():  # first connection of this (forked) process
            self._pid = os.getpid()
            self.server.start_background_task(self.run)
        elif deadline <= time.monotonic():
            self._wake.set()

    def authenticated(self, eio_sid: str) -> None:
        self.pending.pop(eio_sid, None)

    def close_now(self, eio_sid: str) -> None:
        self.close_by(eio_sid, 0.0)

    def run(self) -> None:
        while True:
            now = time.monotonic()
            for eio_sid, deadline in list(self.pending.items()):
                if deadline <= now:
                    self.pending.pop(eio_sid, None)
                    # Each in its own task: closing waits for the client's queue to drain.
                    self.server.start_background_task(self._close, eio_sid)
            self._wake.clear()
            upcoming = min(self.pending.values(), default=now + 1.0)
            self._wake.wait(min(max(upcoming - time.monotonic(), 0.02), 1.0))

    def _close(self, eio_sid: str) -> None:
        try:
            self.server.eio.disconnect(eio_sid)
        except Exception:
            log.exception("could not close an unauthenticated connection")


def _watch() -> SocketAuthWatch | None:
    return current_app.extensions.get(WATCH_KEY)


def _guard() -> HandshakeGuard | None:
    return current_app.extensions.get(GUARD_KEY)


def _eio_sid() -> str | None:
    try:
        return socketio.server.manager.eio_sid_from_sid(getattr(request, "sid", None), "/")
    except Exception:
        return None


def _on_disconnect(*_args):
    watch = _watch()
    if watch is not None:
        watch.remove(request.sid)
    # A client that leaves the namespace but keeps the engine.io connection
    # would hold it unauthenticated; it is closed (a closing one is left be).
    guard, eio_sid = _guard(), _eio_sid()
    if guard is not None and eio_sid is not None:
        guard.close_now(eio_sid)


def _refuse(message: str):
    guard, eio_sid = _guard(), _eio_sid()
    if guard is not None and eio_sid is not None:
        guard.close_now(eio_sid)
    return ConnectionRefusedError(message)


def _on_connect(auth):
    auth = auth if isinstance(auth, dict) else {}
    # Only the connect payload: a query string (?token=) lands in access logs.
    token = auth.get("token") if isinstance(auth.get("token"), str) else None
    api_key = auth.get("api_key") if isinstance(auth.get("api_key"), str) else None
    if not token and not api_key:
        raise _refuse("authentication required: pass {token} or {api_key} in the auth payload")
    principal = _principal_from_credentials(token, api_key)
    if principal is None:
        raise _refuse("invalid or expired credentials")
    guard, eio_sid = _guard(), _eio_sid()
    if guard is not None and eio_sid is not None:
        guard.authenticated(eio_sid)
    role = _room_role(principal.role)
    join_room(f"role:{role}")
    watch = _watch()
    if watch is not None:
        expires_at, version = _token_claims(token) if principal.via == "jwt" else (None, None)
        watch.add(
            SocketGrant(
                sid=request.sid,
                user_id=principal.user_id,
                role=role,
                key_id=principal.api_key_id if principal.via == "api_key" else None,
                expires_at=expires_at,
                token_version=version,
            )
        )
    # A newly connected dashboard gets the current picture without waiting
    # for the next change (the leader keeps it in Redis: pipeline/events.py).
    rt = runtime()
    try:
        raw = rt.redis.get(rt.key(MQTT_STATUS_KEY))
        status = json.loads(raw) if raw else {"connected": False, "broker": rt.broker}
        socketio.emit("mqtt_status", status, to=request.sid)
        for blob in rt.redis.hvals(rt.key(MODEM_STATUS_KEY)):
            socketio.emit("modem_status", json.loads(blob), to=request.sid)
    except Exception:
        log.exception("could not send the initial state to a new socket")
    return True


def init_app(app: Flask) -> None:
    rt = runtime(app)
    socketio.init_app(
        app,
        async_mode="gevent",
        client_manager=Listener(rt.settings.common.redis.url, rt.socketio_channel),
        cors_allowed_origins=origin_checker(rt.settings.cors_allowed_origins),
        transports=list(rt.pipeline.transports),
        logger=False,
        engineio_logger=False,
    )
    app.extensions[WATCH_KEY] = SocketAuthWatch(app, rt.pipeline.socket_reauth_interval)
    app.extensions[GUARD_KEY] = HandshakeGuard(socketio.server, rt.pipeline.socket_handshake_timeout)
    socketio.on_event("connect", _on_connect)
    socketio.on_event("disconnect", _on_disconnect)


def start_listening() -> None:
    """Subscribe this process to the live feed now, not at its first socket.

    python-socketio starts the subscription lazily, with the first
    connection; a process whose sockets connected just before Redis went
    away then was never counted among the listeners, and the events leader,
    waiting after the outage only for the listeners it had counted
    (core/livefeed.py), published what it held before that process was
    back. Called once per gunicorn worker, after the fork (gunicorn_conf.py)."""
    server = socketio.server
    if server is not None and not server.manager_initialized:
        server.manager_initialized = True
        server.manager.initialize()


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
