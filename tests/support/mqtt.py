"""MQTT clients for tests, on the real Mosquitto: a Listener that records
what arrives on some topics, and a Publisher that speaks the documented
payloads (as a worker would)."""

from __future__ import annotations

import json
import queue
import secrets
import threading
from datetime import UTC, datetime

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from smsgw_common.schemas import MessageEventPayload, ModemState
from smsgw_common.topics import Topics

from .services import MQTT_HOST, MQTT_PORT
from .waits import wait_until


class Listener:
    """Collects MQTT messages on some topics. Ready once the broker has
    acknowledged every subscription: nothing published after that is missed."""

    def __init__(self, topics: list[str], timeout: float = 5.0, port: int = MQTT_PORT):
        self.messages: queue.Queue = queue.Queue()
        self.seen: list[tuple[str, dict, bool]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{secrets.token_hex(5)}")
        subscribed = threading.Event()
        pending: set[int] = set()
        lock = threading.Lock()

        def on_connect(client, userdata, flags, rc, props):
            with lock:
                if not topics:
                    subscribed.set()
                for t in topics:
                    pending.add(client.subscribe(t, qos=1)[1])

        def on_subscribe(client, userdata, mid, reason_codes, props):
            with lock:
                pending.discard(mid)
                if not pending:
                    subscribed.set()

        def on_message(client, userdata, msg):
            try:
                payload = json.loads(msg.payload)
            except ValueError:
                payload = {"raw": msg.payload.decode("latin-1")}
            self.seen.append((msg.topic, payload, msg.retain))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(MQTT_HOST, port)
        self.client.loop_start()
        assert subscribed.wait(timeout), f"mosquitto did not acknowledge subscriptions to {topics} within {timeout} s"

    def payloads(self, topic: str) -> list[dict]:
        return [p for t, p, _ in list(self.seen) if t == topic]

    def wait(self, topic: str, predicate, timeout: float = 10.0) -> dict:
        return wait_until(
            lambda: next((p for p in self.payloads(topic) if predicate(p)), None),
            timeout,
            0.05,
            lambda: f"a matching payload on {topic}; saw {self.payloads(topic)[-5:]}",
        )

    def publish(self, topic: str, payload: dict) -> None:
        self.client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Publisher:
    """Publishes what a worker would (QoS 1, waiting for the broker's ack)."""

    def __init__(self, prefix: str):
        self.topics = Topics(prefix)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"tests-{secrets.token_hex(4)}")
        self.client.connect(MQTT_HOST, MQTT_PORT)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def message_event(self, **fields) -> None:
        fields.setdefault("at", datetime.now(UTC))
        self.publish(self.topics.message_events(), MessageEventPayload(**fields).to_json())

    def modem_state(self, modem_id: str, online: bool, **fields) -> None:
        st = ModemState(modem_id=modem_id, online=online, ts=datetime.now(UTC), **fields)
        self.publish(self.topics.state(modem_id), st.to_json(), retain=True)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_subscribed(subscriber, publisher, prefix: str, timeout: float = 5.0) -> None:
    """Wait until the subscriptions `subscriber` (a smsgw_common.mqtt.Bus) made
    so far are active at the broker, which handles one client's SUBSCRIBEs in
    order: a probe topic subscribed after them starts receiving. Needed before
    QoS 0 publishes, which the broker drops for a subscription not yet made."""
    probe = f"{prefix}test-probe/{secrets.token_hex(4)}"
    arrived = threading.Event()
    subscriber.subscribe(probe, lambda topic, payload: arrived.set(), qos=0)
    wait_until(
        lambda: publisher.publish(probe, b"probe", qos=0) and arrived.wait(0.05),
        timeout,
        0.05,
        f"the broker to activate the subscriptions (probe {probe})",
    )
