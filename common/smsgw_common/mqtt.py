"""A long-lived paho-mqtt 2.x client (one per process, never one per message).

It reconnects by itself; `publish` never blocks the caller when the broker is
down (QoS 1 messages are queued by paho and sent on reconnect, and Postgres
stays the source of truth anyway).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from .settings import MqttSettings

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]


class Bus:
    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        will: tuple[str, bytes, int, bool] | None = None,
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
    ):
        self.settings = settings
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            reconnect_on_failure=True,
        )
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            import ssl

            self.client.tls_set(ca_certs=settings.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        if will:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos=qos, retain=retain)
        # A broker back after a restart or a site's cut uplink hears from
        # every client within seconds: after a 10-minute partition, a 30 s
        # cap kept edge modems offline at the centre for 31 s (bench/fleet.py).
        # An attempt costs a SYN.
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.max_queued_messages_set(10000)
        self._subs: dict[str, tuple[int, Handler]] = {}
        self._connected = threading.Event()
        self._on_connect_cb = on_connect
        self._on_disconnect_cb = on_disconnect
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background; never raises when the broker is down."""
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
        self.client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def subscribe(self, pattern: str, handler: Handler, qos: int = 1) -> None:
        self._subs[pattern] = (qos, handler)
        if self.connected:
            self.client.subscribe(pattern, qos=qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue a message; returns False only if paho refused it outright."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.warning("mqtt publish to %s refused: %s", topic, paho.error_string(info.rc))
            return False
        return True

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("mqtt connection refused: %s", reason_code)
            return
        log.info("mqtt connected to %s:%s", self.settings.host, self.settings.port)
        for pattern, (qos, _) in self._subs.items():
            client.subscribe(pattern, qos=qos)
        self._connected.set()
        if self._on_connect_cb:
            try:
                self._on_connect_cb()
            except Exception:
                log.exception("on_connect callback failed")

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        log.warning("mqtt disconnected: %s", reason_code)
        if self._on_disconnect_cb:
            try:
                self._on_disconnect_cb()
            except Exception:
                log.exception("on_disconnect callback failed")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        for pattern, (_, handler) in list(self._subs.items()):
            if paho.topic_matches_sub(pattern, msg.topic):
                try:
                    handler(msg.topic, bytes(msg.payload))
                except Exception:
                    # A bad message must never kill the network loop.
                    log.exception("handler for %s failed", msg.topic)
