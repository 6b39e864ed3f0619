"""Board tier: seed boards (emulated, speaking the seed's MQTT protocol) and
their workers against the real Postgres and Mosquitto on 127.0.0.1.

The seed's topics have no prefix; here they live under a root of this
package's own (`<prefix>seed/`), so concurrent runs never hear each other's
boards. Numbers are drawn at random for the same reason.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from shared_fixtures import database_url, mqtt_prefix, package_id, redis_url, service_env  # noqa: F401  (one set per tier)
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker
from support import waits

from smsgw_common.models import Message, MessageEvent
from smsgw_common.queue import record
from smsgw_worker.board.emulator import EmulatedBoard
from smsgw_worker.board.settings import BoardSettings
from smsgw_worker.board.worker import BoardWorker

FAST = {
    "WORKER_CLAIM_INTERVAL": "0.2",
    "WORKER_SWEEP_INTERVAL": "5",
    "WORKER_REFRESH_INTERVAL": "5",
    "MQTT_KEEPALIVE": "5",
    "LOG_JSON": "0",
}


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    return waits.wait_until(predicate, timeout, interval, message=what)


def random_number() -> str:
    return "+4915" + "".join(str(secrets.randbelow(10)) for _ in range(9))


@pytest.fixture(scope="package")
def board_env(service_env, mqtt_prefix) -> dict[str, str]:
    return dict(service_env, **FAST, MQTT_PREFIX=mqtt_prefix + "gw/", BOARD_TOPIC_ROOT=mqtt_prefix + "seed/")


@pytest.fixture(scope="package")
def db_session(database_url):
    engine = create_engine(database_url, pool_size=2)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@dataclass
class Board:
    """One emulated board and the worker that drives it."""

    number: str
    emulator: EmulatedBoard
    worker: BoardWorker
    thread: threading.Thread

    @property
    def sim_id(self) -> int:
        assert self.worker.sim_card_id is not None
        return self.worker.sim_card_id


@pytest.fixture
def boards(board_env) -> Iterator[Callable[..., Board]]:
    """start(number=None, emulator options..., env=...) -> Board, all stopped afterwards."""
    started: list[Board] = []

    def start(number: str | None = None, env: dict[str, str] | None = None, **emulator: Any) -> Board:
        number = number or random_number()
        emu = EmulatedBoard(number, root=board_env["BOARD_TOPIC_ROOT"], **emulator).start()
        settings = BoardSettings.from_env(dict(board_env, BOARD_NUMBER=number, **(env or {})))
        worker = BoardWorker(settings)
        thread = threading.Thread(target=worker.run, name=f"board-{number}", daemon=True)
        board = Board(number, emu, worker, thread)
        started.append(board)
        thread.start()
        assert worker.started.wait(15), "the board worker did not register"
        assert worker.bus.wait_connected(10), "the board worker did not reach the broker"
        return board

    yield start
    for board in started:
        board.worker.stop()
        board.thread.join(10)
        board.emulator.stop()


def queue_message(db_session, sim_id: int, text: str = "hello", **fields: Any) -> int:
    """A message as the API commits it: queued, on its SIM."""
    with db_session() as s:
        msg = Message(
            direction="outbound",
            recipient=fields.pop("recipient", random_number()),
            message=text,
            status="queued",
            sim_card_id=sim_id,
            segments=fields.pop("segments", 1),
            **fields,
        )
        record(s, msg, "queued", source="api")
        s.commit()
        return msg.id


def message(db_session, message_id: int) -> Message:
    with db_session() as s:
        return s.get(Message, message_id)


def history(db_session, message_id: int) -> list[MessageEvent]:
    with db_session() as s:
        return list(
            s.scalars(select(MessageEvent).where(MessageEvent.message_id == message_id).order_by(MessageEvent.id))
        )


def wait_state(db_session, message_id: int, state: str, timeout: float = 10.0) -> Message:
    return wait_until(
        lambda: (m := message(db_session, message_id)) is not None and m.status == state and m,
        timeout,
        what=f"message {message_id} to be {state}",
    )


@dataclass
class Listener:
    """Records what is published on some topics (events, retained states)."""

    client: paho.Client
    seen: list[tuple[str, dict]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def matching(self, topic: str, **fields: Any) -> list[dict]:
        with self.lock:
            return [p for t, p in self.seen if t == topic and all(p.get(k) == v for k, v in fields.items())]


@pytest.fixture
def listen() -> Iterator[Callable[..., Listener]]:
    clients: list[paho.Client] = []

    def subscribe(*topics: str) -> Listener:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"tests-board-{secrets.token_hex(4)}")
        listener = Listener(client)
        ready = threading.Event()

        def on_message(c, u, msg):
            try:
                payload = json.loads(msg.payload)
            except ValueError:
                return
            with listener.lock:
                listener.seen.append((msg.topic, payload))

        def on_connect(c, u, f, rc, p):
            c.subscribe([(topic, 1) for topic in topics])

        client.on_message = on_message
        client.on_connect = on_connect
        client.on_subscribe = lambda *a: ready.set()
        client.connect("127.0.0.1", 1883)
        client.loop_start()
        clients.append(client)
        assert ready.wait(5), "the test's listener did not subscribe"
        return listener

    yield subscribe
    for client in clients:
        client.disconnect()
        client.loop_stop()
