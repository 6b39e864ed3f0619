"""The events consumer keeps up with a steady load: what waits in its queue
is handled together, so the queue (and the process's memory) does not grow
while the load lasts (issue 17: one transaction per event could not follow
200 msg/s, three events each)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, text

from smsgw_api.core.runtime import Runtime
from smsgw_api.core.settings import ApiSettings
from smsgw_api.pipeline.events import EventConsumer
from smsgw_common.schemas import MessageEventPayload

from .conftest import add_modem_and_sim, add_outbound


@pytest.fixture
def consumer(pipeline_env):
    runtime = Runtime(ApiSettings.from_env(pipeline_env))
    # Its own Socket.IO channel: what this test relays reaches no other test's browsers.
    runtime.key = lambda name: f"{pipeline_env['MQTT_PREFIX']}backlog/{name}"  # type: ignore[method-assign]
    try:
        yield EventConsumer(runtime)  # not started: the test feeds its queue
    finally:
        runtime.close()


def _relayed(pubsub, expected: int, timeout: float = 20.0) -> list[dict]:
    """The status updates on the channel: until `expected` have come (a loaded
    machine may pause the emits for longer than any quiet gap), then whatever
    else comes within half a second, so that a duplicate still shows."""
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.5)
        if msg is not None:
            out.extend(_update(msg))
    while (msg := pubsub.get_message(timeout=0.5)) is not None:
        out.extend(_update(msg))
    return out


def _update(msg: dict) -> list[dict]:
    if msg["type"] != "message":
        return []
    packet = json.loads(msg["data"])
    return [packet["data"][0]] if packet.get("event") == "sms_status_update" else []  # the emit's arguments


def test_a_backlog_of_events_takes_a_query_per_batch_not_per_event(consumer, db_session, people):
    modem, sim = add_modem_and_sim(db_session)
    ids = [add_outbound(db_session, sim, people["bob"].user_id, text=f"backlog {i}") for i in range(450)]
    forged_modem, _ = add_modem_and_sim(db_session)
    now = datetime.now(UTC)
    for i in ids:
        consumer.queue.put(("message", MessageEventPayload(message_id=i, state="sent", at=now, modem_id=modem)))
        if i == ids[10]:
            # Refused ones in the middle (another modem's claim, an id no
            # message can have) cost the others nothing.
            consumer.queue.put(
                ("message", MessageEventPayload(message_id=i, state="failed", at=now, modem_id=forged_modem))
            )
            consumer.queue.put(("message", MessageEventPayload(message_id=2**70, state="sent", at=now, modem_id=modem)))
    consumer.queue.put(None)  # what stop() puts: the loop ends after the backlog

    statements: list[str] = []
    event.listen(consumer.runtime.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    pubsub = consumer.runtime.redis.pubsub()
    pubsub.subscribe(consumer.runtime.socketio_channel)
    pubsub.get_message(timeout=1)  # the subscription's confirmation
    try:
        consumer.run()
        relayed = _relayed(pubsub, len(ids))
    finally:
        pubsub.close()

    # Every event relayed once, in order, with what the row says.
    assert [(d["message_id"], d["state"]) for d in relayed] == [(i, "sent") for i in ids]
    assert relayed[0]["message"] == "backlog 0" and relayed[0]["modem_id"] == modem
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) <= 5, f"{len(selects)} queries for {len(ids)} events"


@pytest.fixture(autouse=True)
def _no_backlog_left(db_session):
    """450 queued rows would be work for every events leader that shares this
    database after the test (the sweeper's, the live-outage test's)."""
    yield
    with db_session() as s:
        s.execute(text("DELETE FROM messages WHERE message LIKE 'backlog %'"))
        s.commit()
