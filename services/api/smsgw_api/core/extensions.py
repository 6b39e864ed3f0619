"""The process's resources (core/runtime.py) bound to a Flask app.

- `db`: the SQLAlchemy engine and a session per request (`db.session`),
  closed at the end of the request; nothing commits implicitly.
- `bus`: ONE long-lived MQTT client per process (never one per message).
- `redis_client`: a Redis client (rate limits, Socket.IO queue, caches).

Other modules use them as `from smsgw_api.core.extensions import db, bus, redis_client`
inside a request or app context. The state lives in `app.extensions`, so two
apps in one process (tests) never share an engine or a broker connection.
"""

from __future__ import annotations

import redis as redis_lib
from flask import Flask, current_app, g

from smsgw_api.core.runtime import Runtime
from smsgw_common.mqtt import Bus
from smsgw_common.topics import Topics

RUNTIME_KEY = "smsgw_runtime"


def bind_runtime(app: Flask, runtime: Runtime) -> None:
    app.extensions[RUNTIME_KEY] = runtime

    @app.teardown_appcontext
    def _close_session(exc):
        session = g.pop("_smsgw_session", None)
        if session is not None:
            if exc is not None:
                session.rollback()
            session.close()


def runtime(app: Flask | None = None) -> Runtime:
    return (app or current_app).extensions[RUNTIME_KEY]


class Database:
    def state(self, app: Flask | None = None) -> Runtime:
        """Has `.engine` and `.sessionmaker`."""
        return runtime(app)

    @property
    def engine(self):
        return runtime().engine

    @property
    def session(self):
        """The request's session (created on first use, closed at teardown)."""
        session = g.get("_smsgw_session")
        if session is None:
            session = runtime().sessionmaker()
            g._smsgw_session = session
        return session

    def new_session(self, app: Flask | None = None):
        """A session outside a request (threads, CLI); the caller closes it."""
        return runtime(app).sessionmaker()

    def dispose(self, app: Flask | None = None) -> None:
        runtime(app).engine.dispose()


class MqttBus:
    def state(self, app: Flask | None = None) -> Runtime:
        """Has `.topics`, `.mqtt` (the broker settings) and `.bus`."""
        return runtime(app)

    @property
    def topics(self) -> Topics:
        return runtime().topics

    def get(self, app: Flask | None = None) -> Bus:
        """The process's Bus (started on first use); e.g. to subscribe."""
        return runtime(app).bus

    @property
    def connected(self) -> bool:
        return runtime().bus_connected

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Never raises and never blocks on a down broker: Postgres holds the truth."""
        return runtime().publish(topic, payload, qos=qos, retain=retain)

    def subscribe(self, pattern: str, handler, qos: int = 1, app: Flask | None = None) -> None:
        self.get(app).subscribe(pattern, handler, qos=qos)

    def stop(self, app: Flask | None = None) -> None:
        runtime(app).stop_bus()


class RedisClient:
    def get(self, app: Flask | None = None) -> redis_lib.Redis:
        return runtime(app).redis

    def __getattr__(self, name):
        return getattr(self.get(), name)


def emit(event: str, data: dict, min_role: str = "viewer") -> None:
    """Socket.IO to every browser whose role is at least `min_role`."""
    runtime().emit(event, data, min_role)


db = Database()
bus = MqttBus()
redis_client = RedisClient()
