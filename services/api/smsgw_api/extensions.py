"""Process-wide resources, created once per app and bound with init_app.

- `db`: the SQLAlchemy engine and a session per request (`db.session`),
  closed at the end of the request; nothing commits implicitly.
- `bus`: ONE long-lived MQTT client per process (never one per message).
- `redis_client`: a Redis client (rate limits, Socket.IO queue, caches).

Other modules use them as `from smsgw_api.extensions import db, bus, redis_client`
inside a request or app context. The state lives in `app.extensions`, so two
apps in one process (tests) never share an engine or a broker connection.
"""
from __future__ import annotations

import logging
import os
import socket

import redis as redis_lib
from flask import Flask, current_app, g


from smsgw_common.db import make_engine, make_sessionmaker
from smsgw_common.mqtt import Bus
from smsgw_common.topics import Topics

log = logging.getLogger(__name__)


class _DbState:
    def __init__(self, settings):
        # No pre-ping: it would add a round trip to every request. After a
        # Postgres restart the first query on a dead connection fails (503),
        # SQLAlchemy then invalidates the whole pool and the next one works.
        self.engine = make_engine(settings.database_url, pool_size=settings.db_pool_size,
                                  max_overflow=settings.db_max_overflow, pre_ping=False, pool_timeout=10)
        self.sessionmaker = make_sessionmaker(self.engine)


class Database:
    key = "smsgw_db"

    def init_app(self, app: Flask) -> None:
        app.extensions[self.key] = _DbState(app.config["SMSGW_SETTINGS"])

        @app.teardown_appcontext
        def _close_session(exc):
            session = g.pop("_smsgw_session", None)
            if session is not None:
                if exc is not None:
                    session.rollback()
                session.close()

    def state(self, app: Flask | None = None) -> _DbState:
        return (app or current_app).extensions[self.key]

    @property
    def engine(self):
        return self.state().engine

    @property
    def session(self):
        """The request's session (created on first use, closed at teardown)."""
        session = g.get("_smsgw_session")
        if session is None:
            session = self.state().sessionmaker()
            g._smsgw_session = session
        return session

    def new_session(self, app: Flask | None = None):
        """A session outside a request (threads, CLI); the caller closes it."""
        return self.state(app).sessionmaker()

    def dispose(self, app: Flask | None = None) -> None:
        self.state(app).engine.dispose()


class _BusState:
    """Starts the Bus lazily after gunicorn forked the worker: a paho network
    thread started before the fork would not exist in the child."""

    def __init__(self, settings):
        self.settings = settings
        self.topics = Topics(settings.prefix)
        self._bus: Bus | None = None
        self._pid: int | None = None

    @property
    def bus(self) -> Bus:
        if self._bus is None or self._pid != os.getpid():
            client_id = f"api-{socket.gethostname()[:20]}-{os.getpid()}-{os.urandom(3).hex()}"
            self._bus = Bus(self.settings, client_id=client_id)
            self._pid = os.getpid()
            self._bus.start()
        return self._bus


class MqttBus:
    key = "smsgw_bus"

    def init_app(self, app: Flask) -> None:
        app.extensions[self.key] = _BusState(app.config["SMSGW_SETTINGS"].common.mqtt)

    def state(self, app: Flask | None = None) -> _BusState:
        return (app or current_app).extensions[self.key]

    @property
    def topics(self) -> Topics:
        return self.state().topics

    def get(self, app: Flask | None = None) -> Bus:
        """The process's Bus (started on first use); e.g. to subscribe."""
        return self.state(app).bus

    @property
    def connected(self) -> bool:
        state = self.state()
        return state._bus is not None and state._bus.connected

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Never raises and never blocks on a down broker: Postgres holds the truth."""
        try:
            return self.get().publish(topic, payload, qos=qos, retain=retain)
        except Exception:
            log.exception("mqtt publish to %s failed", topic)
            return False

    def subscribe(self, pattern: str, handler, qos: int = 1, app: Flask | None = None) -> None:
        self.get(app).subscribe(pattern, handler, qos=qos)

    def stop(self, app: Flask | None = None) -> None:
        state = self.state(app)
        if state._bus is not None and state._pid == os.getpid():
            state._bus.stop()
        state._bus = None


class RedisClient:
    key = "smsgw_redis"

    def init_app(self, app: Flask) -> None:
        url = app.config["SMSGW_SETTINGS"].common.redis.url
        app.extensions[self.key] = redis_lib.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
        )

    def get(self, app: Flask | None = None) -> redis_lib.Redis:
        return (app or current_app).extensions[self.key]

    def __getattr__(self, name):
        return getattr(self.get(), name)


db = Database()
bus = MqttBus()
redis_client = RedisClient()
