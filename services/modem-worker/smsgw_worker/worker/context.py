"""What every part of the worker shares: settings, the modem, the database,
the bus, the SIM this modem holds and the loop's queues.

One `WorkerContext` per worker; the parts (lifecycle, outbox, inbox,
reports, commands, sweep) each hold it and keep no other shared state.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha1
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, sessionmaker

from smsgw_common import queue as message_queue
from smsgw_common.db import make_engine, make_sessionmaker
from smsgw_common.models import Message, utcnow
from smsgw_common.mqtt import Bus
from smsgw_common.schemas import ModemState
from smsgw_common.settings import MqttSettings
from smsgw_common.topics import Topics
from smsgw_worker.atmodem import ATModem, Identity
from smsgw_worker.settings import WorkerSettings, touch_heartbeat

from .events import DirectDelivery, LoopEvent, MqttConnected
from .journal import Journal

log = logging.getLogger(__name__)


def modem_bus(mqtt: MqttSettings, topics: Topics, modem_id: str, on_connect: Callable[[], None]) -> Bus:
    """The broker session of one modem's worker (USB or board): a fixed client
    id, so the broker keeps its session across restarts, and a retained
    last will that marks the modem offline when the worker dies."""
    # Two deployments (or test runs) with other prefixes must not share ids.
    suffix = "" if mqtt.prefix == "smsgw/" else "-" + sha1(mqtt.prefix.encode()).hexdigest()[:8]
    will = ModemState(modem_id=modem_id, online=False, ts=utcnow(), reason="lwt").to_json()
    return Bus(
        mqtt,
        client_id=f"smsgw-worker-{modem_id}{suffix}"[:64],
        will=(topics.state(modem_id), will, 1, True),
        on_connect=on_connect,
    )


@dataclass
class Health:
    """The modem's radio as the last refresh read it."""

    signal_quality: int | None = None
    signal_dbm: int | None = None
    registration: str | None = None
    operator: str | None = None


class WorkerContext:
    def __init__(self, settings: WorkerSettings, device: str) -> None:
        self.settings = settings
        # MODEM_DEVICE as configured (a path, or a glob such as
        # /dev/ttyUSB*); `device` is the path the modem was last found on.
        self.device_pattern = device
        self.device = device
        self.modem_id = settings.modem_id
        self.worker_id = settings.worker_id
        # Opened first: what an earlier run learned and could not record is in it.
        self.journal = Journal(settings.journal_dir, settings.journal_max_bytes)
        # Claims of this worker id made before now are a previous run's (replay.py).
        self.booted_at: datetime = utcnow()
        self.topics = Topics(settings.common.mqtt.prefix)
        # No ping on every checkout: the loop checks a connection out several
        # times per segment, and a dead connection is invalidated by SQLAlchemy
        # and surfaces in Lifecycle.guard, which retries.
        self.engine: Engine = make_engine(settings.common.database.url, pool_size=2, max_overflow=2, pre_ping=False)
        self.Session: sessionmaker[Session] = make_sessionmaker(self.engine)
        self.events: queue.Queue[LoopEvent] = queue.Queue()
        self.direct: queue.Queue[DirectDelivery] = queue.Queue()
        self.stopping = threading.Event()
        self.started = threading.Event()  # set once the modem is up (tests, bench)

        self.modem: ATModem | None = None
        # Bumped on every (re)connect and loss: items of an older link are stale.
        self.generation = 0
        self.identity: Identity | None = None
        self.sim_card_id: int | None = None
        self.sim_number: str | None = None
        self.health = Health()
        self.last_error: str | None = None
        self.offline_reason: str | None = "starting"
        # Something may wait on the SIM that no +CMTI announced: read it all on
        # the next refresh.
        self.rescan = False
        self.want_claim = True
        self.segments_sent = 0
        # Messages of the running batch a report came for while they were
        # still `sending`: settled (delivered/failed) once they are `sent`.
        self.reported_while_sending: set[int] = set()

        self.bus = modem_bus(settings.common.mqtt, self.topics, self.modem_id, lambda: self.events.put(MqttConnected()))

    def require_modem(self) -> ATModem:
        """The open modem; only called on paths the loop runs while one is open."""
        if self.modem is None:
            raise RuntimeError("no modem open")
        return self.modem

    def heartbeat(self) -> None:
        touch_heartbeat(self.settings.heartbeat_file)

    def publish_event(self, msg: Message, state: str, **extra: Any) -> None:
        payload = message_queue.event_of(msg, state, self.modem_id, **extra)
        self.bus.publish(self.topics.message_events(), payload.to_json(), qos=1)

    def finish(
        self,
        session: Session,
        msg: Message,
        state: str,
        *,
        error_code: int | None = None,
        error_text: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Record an outcome, commit, then publish it (the database first, always)."""
        message_queue.record(
            session, msg, state, source=self.worker_id, error_code=error_code, error_text=error_text, detail=detail
        )
        session.commit()
        self.publish_event(msg, state)
        log.info("message %s %s", msg.id, state, extra={"error_code": error_code})


def run_sql(session: Session, statement: str, params: tuple[Any, ...]) -> CursorResult[*tuple[Any, ...]]:
    """Plain SQL on the session's connection, for statements on the hot path."""
    return session.connection().exec_driver_sql(statement, params)
