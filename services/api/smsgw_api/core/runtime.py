"""What an API process and the pipeline share, with no Flask in it.

A `Runtime` holds the settings, the database engine, the Redis client, the
process's one MQTT client and the Socket.IO announcer. `create_app()` builds
one and binds it to the Flask app (core/extensions.py); `python -m smsgw_api
pipeline` builds one alone, so the background loops run without any HTTP app.
"""

from __future__ import annotations

import json
import logging
import os
import socket

import redis as redis_lib

from smsgw_api.core.livefeed import ROLE_ORDER, LiveFeed, Publisher, rooms_for
from smsgw_api.core.settings import ApiSettings, PipelineSettings
from smsgw_common.db import make_engine, make_sessionmaker
from smsgw_common.mqtt import Bus
from smsgw_common.topics import Topics

log = logging.getLogger(__name__)

__all__ = ["MODEM_STATUS_KEY", "MQTT_STATUS_KEY", "ROLE_ORDER", "Runtime", "rooms_for"]

# Redis keys (under `Runtime.key`) the events leader writes for new sockets:
# the leader's broker connection, and each modem's last state.
MQTT_STATUS_KEY = "mqtt_status"
MODEM_STATUS_KEY = "modem_status"


class Runtime:
    def __init__(self, settings: ApiSettings):
        self.settings = settings
        # No pre-ping: it would add a round trip to every request. After a
        # Postgres restart the first query on a dead connection fails (503),
        # SQLAlchemy then invalidates the whole pool and the next one works.
        self.engine = make_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pre_ping=False,
            pool_timeout=10,
        )
        self.sessionmaker = make_sessionmaker(self.engine)
        self.redis = redis_lib.Redis.from_url(
            settings.common.redis.url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
        )
        self.mqtt = settings.common.mqtt
        self.topics = Topics(self.mqtt.prefix)
        self._bus: Bus | None = None
        self._bus_pid: int | None = None
        self.live = LiveFeed(
            lambda: Publisher(settings.common.redis.url, self.socketio_channel),
            capacity=settings.pipeline.live_buffer_events,
            heartbeat_every=settings.pipeline.live_heartbeat,
        )

    @property
    def pipeline(self) -> PipelineSettings:
        return self.settings.pipeline

    def key(self, name: str) -> str:
        """Redis keys and channels carry the MQTT prefix: Redis pub/sub ignores the
        database number, so two deployments (or test runs) on one Redis stay apart."""
        return f"{self.mqtt.prefix}{name}"

    @property
    def broker(self) -> str:
        return f"{self.mqtt.host}:{self.mqtt.port}"

    # --- MQTT: ONE long-lived client per process (never one per message)

    @property
    def bus(self) -> Bus:
        """Started lazily after gunicorn forked the worker: a paho network
        thread started before the fork would not exist in the child."""
        if self._bus is None or self._bus_pid != os.getpid():
            client_id = f"api-{socket.gethostname()[:20]}-{os.getpid()}-{os.urandom(3).hex()}"
            self._bus = Bus(self.mqtt, client_id=client_id)
            self._bus_pid = os.getpid()
            self._bus.start()
        return self._bus

    @property
    def bus_connected(self) -> bool:
        return self._bus is not None and self._bus.connected

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Never raises and never blocks on a down broker: Postgres holds the truth."""
        try:
            return self.bus.publish(topic, payload, qos=qos, retain=retain)
        except Exception:
            log.exception("mqtt publish to %s failed", topic)
            return False

    def stop_bus(self) -> None:
        if self._bus is not None and self._bus_pid == os.getpid():
            self._bus.stop()
        self._bus = None

    def keep_modem_status(self, modem_id: str, data: dict) -> None:
        """A modem's last status, for sockets that connect later (live/socketio.py)
        and for the events consumer's previous-state check; never raises."""
        try:
            self.redis.hset(self.key(MODEM_STATUS_KEY), modem_id, json.dumps(data))
        except redis_lib.RedisError as exc:
            log.warning("modem %s: state not kept in Redis for new sockets (%s)", modem_id, exc)

    # --- Socket.IO: every emit goes through the Redis queue

    def emit(self, event: str, data: dict, min_role: str = "viewer") -> None:
        """Send to every browser whose role is at least `min_role`, through the
        Socket.IO message queue in Redis, so the sockets of every API process
        (and replica) get it, whichever process emits. Numbered, and held
        while Redis is down (core/livefeed.py); never raises."""
        try:
            self.live.emit(event, data, min_role)
        except Exception:
            log.exception("socket.io emit of %s failed", event)

    @property
    def socketio_channel(self) -> str:
        return self.key("socketio")

    def close(self) -> None:
        self.stop_bus()
        self.engine.dispose()
