"""Helpers for worker tests: a worker in a thread against a real emulator,
the real Postgres and the real Mosquitto, with short timers."""
from __future__ import annotations

import itertools
import json
import os
import queue
import threading
import time
import uuid

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from smsgw_common.db import make_engine, make_sessionmaker
from smsgw_common.models import Message, MessagePart, SimCard, utcnow
from smsgw_common.settings import CommonSettings
from smsgw_common.topics import Topics
from smsgw_worker.emulator import Emulator
from smsgw_worker.settings import WorkerSettings
from smsgw_worker.worker import Worker

_counter = itertools.count(1)
FAST = dict(
    command_timeout=1.0, send_timeout=3.0, sim_busy_timeout=5.0, claim_interval=0.3, refresh_interval=0.5,
    sweep_interval=0.5, lease_seconds=30.0, retry_base=0.2, retry_max=1.0, reconnect_min=0.2,
    reconnect_max=0.5, max_attempts=3,
)


def unique_iccid() -> str:
    return "8999" + str(uuid.uuid4().int)[:15]


def settings_for(database_url: str, mqtt_prefix: str, modem_id: str, **overrides) -> WorkerSettings:
    env = {"DATABASE_URL": database_url, "MQTT_HOST": "127.0.0.1", "MQTT_PORT": "1883",
           "MQTT_PREFIX": mqtt_prefix, "MODEM_ID": modem_id, "MODEM_DEVICE": "/dev/null"}
    base = WorkerSettings.from_env(env)
    values = {**base.__dict__, **FAST, **overrides}
    values["common"] = CommonSettings.from_env("modem-worker", env)
    return WorkerSettings(**values)


class Rig:
    """One emulator + one worker thread + DB and MQTT access."""

    def __init__(self, database_url: str, mqtt_prefix: str, *, profile: str = "generic", link: str | None = None,
                 emulator_kw: dict | None = None, **overrides):
        self.modem_id = f"m{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:4]}"
        self.iccid = unique_iccid()
        self.number = "+1555" + str(uuid.uuid4().int)[:7]
        kw = dict(iccid=self.iccid, own_number=self.number, report_delay=0.1)
        kw.update(emulator_kw or {})
        self.emulator = Emulator(profile, link=link, **kw).start()
        self.settings = settings_for(database_url, mqtt_prefix, self.modem_id, **overrides)
        self.topics = Topics(mqtt_prefix)
        self.engine = make_engine(database_url, pool_size=2)
        self.Session = make_sessionmaker(self.engine)
        self.mqtt = Listener([self.topics.message_events(), self.topics.state(self.modem_id),
                              self.topics.command_reply(self.modem_id)])
        self.worker: Worker | None = None
        self.thread: threading.Thread | None = None

    def start_worker(self) -> Worker:
        self.worker = Worker(self.settings, device=self.emulator.device)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()
        assert self.worker.started.wait(15), "worker never came up"
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.thread.join(timeout=15)
            assert not self.thread.is_alive(), "worker did not stop"
            self.worker = None

    def close(self) -> None:
        try:
            self.stop_worker()
        finally:
            self.emulator.stop()
            self.mqtt.close()
            self.engine.dispose()

    @property
    def sim_card_id(self) -> int:
        """The SIM's row; created up front (as a previous run would have) if no worker saw it yet."""
        with self.Session.begin() as s:
            sim_id = s.scalar(select(SimCard.id).where(SimCard.iccid == self.iccid))
            if sim_id is None:
                row = SimCard(iccid=self.iccid, number=self.number)
                s.add(row)
                s.flush()
                sim_id = row.id
            return sim_id

    def queue_sms(self, text: str, recipient: str = "+15550001111", **fields) -> int:
        with self.Session.begin() as s:
            msg = Message(direction="outbound", sender=self.number, recipient=recipient, message=text,
                          status="queued", queued_at=utcnow(), sim_card_id=self.sim_card_id,
                          sender_sim=self.number, **fields)
            s.add(msg)
            s.flush()
            return msg.id

    def message(self, message_id: int) -> Message:
        with self.Session() as s:
            msg = s.get(Message, message_id)
            s.expunge(msg)
            return msg

    def parts(self, message_id: int) -> list[MessagePart]:
        with self.Session() as s:
            return list(s.scalars(select(MessagePart).where(MessagePart.message_id == message_id)
                                  .order_by(MessagePart.seq)))

    def inbound(self) -> list[Message]:
        with self.Session() as s:
            return list(s.scalars(select(Message).where(Message.direction == "inbound",
                                                        Message.sim_card_id == self.sim_card_id)
                                  .order_by(Message.id)))

    def wait_state(self, message_id: int, state: str, timeout: float = 10.0) -> Message:
        msg = wait_for(lambda: (m := self.message(message_id)).status == state and m, timeout,
                       lambda: f"message {message_id} is {self.message(message_id).status}, wanted {state}")
        return msg


def wait_for(predicate, timeout: float = 10.0, describe=None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(describe() if describe else "condition not met in time")
        time.sleep(0.05)


class Listener:
    """Collects MQTT messages on some topics (one real client on 127.0.0.1)."""

    def __init__(self, topics: list[str]):
        self.messages: queue.Queue = queue.Queue()
        self.seen: list[tuple[str, dict, bool]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:10]}")
        ready = threading.Event()

        def on_connect(client, userdata, flags, rc, props):
            for t in topics:
                client.subscribe(t, qos=1)
            ready.set()

        def on_message(client, userdata, msg):
            try:
                payload = json.loads(msg.payload)
            except ValueError:
                payload = {"raw": msg.payload.decode("latin-1")}
            self.seen.append((msg.topic, payload, msg.retain))

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        assert ready.wait(5), "mosquitto not reachable"
        time.sleep(0.1)

    def payloads(self, topic: str) -> list[dict]:
        return [p for t, p, _ in list(self.seen) if t == topic]

    def wait(self, topic: str, predicate, timeout: float = 10.0) -> dict:
        return wait_for(lambda: next((p for p in self.payloads(topic) if predicate(p)), None), timeout,
                        lambda: f"no matching payload on {topic}; saw {self.payloads(topic)[-5:]}")

    def publish(self, topic: str, payload: dict) -> None:
        self.client.publish(topic, json.dumps(payload), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
