"""Helpers for worker tests: a worker in a thread against a real emulator,
the real Postgres and the real Mosquitto, with short timers."""

from __future__ import annotations

import itertools
import os
import tempfile
import uuid

from sqlalchemy import select
from support.mqtt import Listener
from support.waits import wait_until
from support.workers import WorkerThread

from smsgw_common.db import make_engine, make_sessionmaker
from smsgw_common.models import Message, MessagePart, SimCard, utcnow
from smsgw_common.settings import CommonSettings
from smsgw_common.topics import Topics
from smsgw_worker.emulator import Emulator
from smsgw_worker.settings import WorkerSettings
from smsgw_worker.worker import Worker

__all__ = ["FAST", "Listener", "Rig", "settings_for", "unique_iccid", "wait_for"]

_counter = itertools.count(1)
FAST = {
    "command_timeout": 1.0,
    "send_timeout": 3.0,
    "sim_busy_timeout": 5.0,
    "claim_interval": 0.3,
    "refresh_interval": 0.5,
    "sweep_interval": 0.5,
    "lease_seconds": 30.0,
    "retry_base": 0.2,
    "retry_max": 1.0,
    "reconnect_min": 0.2,
    "reconnect_max": 0.5,
    "max_attempts": 3,
}


def unique_iccid() -> str:
    return "8999" + str(uuid.uuid4().int)[:15]


def settings_for(database_url: str, mqtt_prefix: str, modem_id: str, **overrides) -> WorkerSettings:
    env = {
        "DATABASE_URL": database_url,
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": "1883",
        "MQTT_PREFIX": mqtt_prefix,
        "MODEM_ID": modem_id,
        "MODEM_DEVICE": "/dev/null",
        # Each worker its own journal (a container's own volume).
        "JOURNAL_DIR": tempfile.mkdtemp(prefix=f"smsgw-journal-{modem_id}-"),
    }
    base = WorkerSettings.from_env(env)
    values = {**base.__dict__, **FAST, **overrides}
    values["common"] = CommonSettings.from_env("modem-worker", env)
    return WorkerSettings(**values)


class Rig:
    """One emulator + one worker thread + DB and MQTT access."""

    def __init__(
        self,
        database_url: str,
        mqtt_prefix: str,
        *,
        profile: str = "generic",
        link: str | None = None,
        emulator_kw: dict | None = None,
        **overrides,
    ):
        self.modem_id = f"m{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:4]}"
        self.iccid = unique_iccid()
        self.number = "+1555" + str(uuid.uuid4().int)[:7]
        kw = {"iccid": self.iccid, "own_number": self.number, "report_delay": 0.1}
        kw.update(emulator_kw or {})
        self.emulator = Emulator(profile, link=link, **kw).start()
        self.settings = settings_for(database_url, mqtt_prefix, self.modem_id, **overrides)
        self.topics = Topics(mqtt_prefix)
        self.engine = make_engine(database_url, pool_size=2)
        self.Session = make_sessionmaker(self.engine)
        self.mqtt = Listener(
            [self.topics.message_events(), self.topics.state(self.modem_id), self.topics.command_reply(self.modem_id)]
        )
        self.worker: Worker | None = None
        self._running: WorkerThread | None = None

    @property
    def thread(self):
        return self._running.thread if self._running else None

    def start_worker(self, device: str | None = None) -> Worker:
        """`device`: what the worker is configured with (a glob, say), if not the emulator's path."""
        self._running = WorkerThread(self.settings, device or self.emulator.device, f"worker-{self.modem_id}")
        self.worker = self._running.start(15)
        return self.worker

    def stop_worker(self) -> None:
        if self._running is not None:
            try:
                self._running.stop(15)
            finally:
                self._running = None
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
            msg = Message(
                direction="outbound",
                sender=self.number,
                recipient=recipient,
                message=text,
                status="queued",
                queued_at=utcnow(),
                sim_card_id=self.sim_card_id,
                sender_sim=self.number,
                **fields,
            )
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
            return list(
                s.scalars(select(MessagePart).where(MessagePart.message_id == message_id).order_by(MessagePart.seq))
            )

    def inbound(self) -> list[Message]:
        with self.Session() as s:
            return list(
                s.scalars(
                    select(Message)
                    .where(Message.direction == "inbound", Message.sim_card_id == self.sim_card_id)
                    .order_by(Message.id)
                )
            )

    def wait_state(self, message_id: int, state: str, timeout: float = 10.0) -> Message:
        msg = wait_for(
            lambda: (m := self.message(message_id)).status == state and m,
            timeout,
            lambda: f"message {message_id} is {self.message(message_id).status}, wanted {state}",
        )
        return msg


def wait_for(predicate, timeout: float = 10.0, describe=None):
    """support.waits.wait_until; `describe` (a callable) says what was awaited."""
    return wait_until(predicate, timeout, 0.05, describe or "a condition")
