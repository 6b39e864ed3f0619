"""The events leader's MQTT consumer: message events and modem states,
relayed to browsers (Socket.IO through Redis) and turned into modem webhooks.

Its MQTT session is persistent (fixed client id, clean session off), so QoS 1
events published while no leader was connected are kept by the broker and
handed to the next leader. Message webhooks and opt-outs do not depend on it:
they are derived from Postgres (pipeline/webhooks.py, pipeline/optouts.py);
this consumer only wakes them up early.

An event is a wake-up, never data: every modem worker may publish on the
shared events topic, and MQTT does not say who published (docs/security.md,
"Forged message events"). The message is re-read from Postgres (the worker
commits before it publishes) and what browsers see comes from that row; an
event for a message that does not exist, or that claims a modem or SIM the
message does not belong to, is dropped and logged (`trusted_messages`).
"""

from __future__ import annotations

import json
import logging
import queue
import time
from typing import Any

import redis as redis_lib
from sqlalchemy import select

from smsgw_api.core.runtime import MODEM_STATUS_KEY, MQTT_STATUS_KEY, Runtime
from smsgw_api.domain.nodes import node_and_number, revoked_error
from smsgw_api.domain.webhooks import enqueue_modem_event, modem_status_payload
from smsgw_api.pipeline.loop import WakeableLoop
from smsgw_common.db import session_scope
from smsgw_common.models import RECEIVED, Message, Modem, Node, SimCard, utcnow
from smsgw_common.mqtt import Bus
from smsgw_common.schemas import MessageEventPayload, ModemState, parse

log = logging.getLogger(__name__)

# How often the consumer's thread looks up from an empty queue, so that
# /readyz can tell a quiet consumer from a dead one.
IDLE_ROUND_SECONDS = 1.0
# Message events handled in one transaction. One transaction per event could
# not keep up with a steady 200 msg/s (three events each): the queue, and the
# process's memory, grew for as long as the load lasted (issue 17).
EVENT_BATCH = 200


def trusted_messages(session, events: list[MessageEventPayload]) -> list[tuple[Message | None, str | None]]:
    """For each event, in order, the message it is about, or None and why
    the event is refused; one query for all of them.

    A worker's event names its modem: the message's SIM must sit in that
    modem. An event without a modem (the API's cancel, the sweeper) may only
    repeat the state Postgres already holds."""
    # An id Postgres cannot hold names no message; in the query it would
    # fail the whole batch (a forged event must not cost the others their relay).
    ids = {ev.message_id for ev in events if 0 < ev.message_id < 2**63}
    rows = session.execute(
        select(Message, SimCard.modem_id)
        .outerjoin(SimCard, SimCard.id == Message.sim_card_id)
        .where(Message.id.in_(ids))
    ).all()
    found = {msg.id: (msg, modem_id) for msg, modem_id in rows}
    out: list[tuple[Message | None, str | None]] = []
    for ev in events:
        if ev.message_id not in found:
            out.append((None, "no such message"))
            continue
        msg, modem_id = found[ev.message_id]
        if ev.sim_card_id is not None and ev.sim_card_id != msg.sim_card_id:
            out.append((None, f"message is on SIM {msg.sim_card_id}, event claims SIM {ev.sim_card_id}"))
        elif ev.modem_id is not None and modem_id != ev.modem_id:
            out.append((None, f"message belongs to modem {modem_id}, event claims modem {ev.modem_id}"))
        elif ev.modem_id is None and ev.state != msg.status:
            out.append((None, f"message is {msg.status}, event without a modem claims {ev.state}"))
        else:
            out.append((msg, None))
    return out


def status_update_payload(ev: MessageEventPayload, msg: Message) -> dict:
    """`sms_status_update` with the seed's fields and more (docs/api-contract.md).

    Everything but the state and its time comes from the row, not the event."""
    sender = msg.sender_sim or msg.sender if msg.direction == "outbound" else msg.sender
    return {
        "message_id": msg.id,
        "id": msg.id,
        "status": ev.state,
        "state": ev.state,
        "direction": msg.direction,
        "sender_number": sender,
        "receiver_number": msg.recipient,
        "message": msg.message,
        "sim_card_id": msg.sim_card_id,
        "modem_id": ev.modem_id,
        "segments": msg.segments,
        "timestamp": ev.at.isoformat(),
        "error_code": msg.error_code,
        "error_text": msg.error_text,
    }


class EventConsumer(WakeableLoop):
    """Subscribes to message events and modem states; one per deployment.

    paho's network thread only parses and enqueues; this loop's thread does
    the database work so that a slow query never delays MQTT acknowledgements.
    """

    thread_name = "events-consumer"

    def __init__(self, runtime: Runtime):
        super().__init__(IDLE_ROUND_SECONDS)
        self.runtime = runtime
        self.topics = runtime.topics
        prefix = runtime.mqtt.prefix
        # A fixed client id makes the session persistent across leaders.
        client_id = "events-" + prefix.strip("/").replace("/", "-")[-40:]
        self.bus = Bus(runtime.mqtt, client_id=client_id, on_connect=self._connected, on_disconnect=self._disconnected)
        self.queue: queue.Queue = queue.Queue(maxsize=100000)
        self.on_modem_offline = lambda: None
        self.on_deliveries = lambda: None
        self.on_inbound = lambda: None

    def start(self) -> None:
        self.bus.subscribe(self.topics.message_events(), self._enqueue_message_event)
        self.bus.subscribe(self.topics.all_states(), self._enqueue_state)
        super().start()
        self.bus.start()

    def stop(self) -> None:
        # No new messages first, then let the thread finish what is queued
        # (browsers); webhook deliveries and opt-outs do not depend on this
        # queue at all, they are derived from Postgres.
        self.stopping.set()
        self.bus.stop()
        self.queue.put(None)
        self._publish_mqtt_status(False)

    # paho thread
    def _connected(self) -> None:
        self._publish_mqtt_status(True)

    def _disconnected(self) -> None:
        if not self.stopping.is_set():
            self._publish_mqtt_status(False)

    def _publish_mqtt_status(self, connected: bool) -> None:
        status = {"connected": connected, "broker": self.runtime.broker}
        try:
            self.runtime.redis.set(self.runtime.key(MQTT_STATUS_KEY), json.dumps(status))
        except Exception:
            log.exception("could not store the mqtt status")
        self.runtime.emit("mqtt_status", status)

    def _enqueue_message_event(self, topic: str, payload: bytes) -> None:
        ev = parse(MessageEventPayload, payload)
        if ev is not None:
            # The worker committed the event before publishing it: the
            # dispatcher can derive its webhook deliveries right away, and
            # the keyword applier find an inbound STOP in `messages`.
            self.on_deliveries()
            if ev.state == RECEIVED or ev.direction == "inbound":
                self.on_inbound()
            self.queue.put(("message", ev))

    def _enqueue_state(self, topic: str, payload: bytes) -> None:
        modem_id = self.topics.modem_id_of(topic)
        if not payload:
            return  # a cleared retained state
        st = parse(ModemState, payload)
        if st is not None and modem_id:
            self.queue.put(("state", (modem_id, st)))

    # this loop's thread
    def run(self) -> None:
        live = self.runtime.live
        next_beat = 0.0
        while True:
            if time.monotonic() >= next_beat:
                # From this thread, after the events it emitted: a client
                # that has a beat has had every event before it (docs/realtime.md).
                live.beat()
                next_beat = time.monotonic() + live.heartbeat_every
            try:
                items = [self.queue.get(timeout=min(self.period, max(next_beat - time.monotonic(), 0.01)))]
            except queue.Empty:
                self.round_done()
                continue
            # What else waits goes along: its message events share one transaction.
            while items[-1] is not None and len(items) < EVENT_BATCH:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            stop = items[-1] is None
            self.handle([item for item in items if item is not None])
            if stop:
                return
            self.round_done()

    def handle(self, items: list[tuple[str, Any]]) -> None:
        events = [data for kind, data in items if kind == "message"]
        try:
            if events:
                self.handle_message_events(events)
        except Exception:
            log.exception("handling %d message events failed", len(events))
        for kind, data in items:
            if kind != "state":
                continue
            try:
                self.handle_modem_state(*data)
            except Exception:
                # One bad state must not stop the relay of the next ones.
                log.exception("handling a modem state failed")

    def handle_message_events(self, events: list[MessageEventPayload]) -> None:
        with session_scope(self.runtime.sessionmaker) as session:
            for ev, (msg, refusal) in zip(events, trusted_messages(session, events), strict=True):
                if msg is None:
                    log.warning(
                        "message event refused: %s (message %s, state %s, modem %s)",
                        refusal,
                        ev.message_id,
                        ev.state,
                        ev.modem_id,
                    )
                else:
                    self._relay(ev, msg)
        # STOP/START is not applied from this copy of the event: the keyword
        # applier (woken in _enqueue_message_event) reads it from `messages`.

    def _relay(self, ev: MessageEventPayload, msg: Message) -> None:
        data = status_update_payload(ev, msg)
        # Browsers first: they are the latency-sensitive consumers.
        self.runtime.emit("sms_status_update", data)
        if ev.state == RECEIVED:
            self.runtime.emit(
                "sms_received",
                {
                    "id": ev.message_id,
                    "message_id": ev.message_id,
                    "sender": data["sender_number"],
                    "recipient": data["receiver_number"],
                    "message": data["message"],
                    "sim_card_id": data["sim_card_id"],
                    "timestamp": data["timestamp"],
                },
            )

    def _unless_revoked(self, modem_id: str, st: ModemState) -> ModemState:
        """A revoked node's modem stays offline, whatever says otherwise: its
        last retained state (the broker hands it over again after a restart)
        or a worker the broker has not shut out (routes/nodes.py, revoke)."""
        # A node's modems are its credentials' ids (domain/nodes.py), as when
        # it is revoked: not whatever NODE_NAME their workers were given.
        owner = node_and_number(modem_id) if st.online else None
        if owner is None:
            return st
        name, number = owner
        with session_scope(self.runtime.sessionmaker) as session:
            revoked = session.scalar(
                select(Node.id).where(Node.name == name, Node.modems >= number, Node.revoked_at.is_not(None))
            )
        if revoked is None:
            return st
        return st.replace(online=False, last_error=revoked_error(name), reason="revoked")

    def handle_modem_state(self, modem_id: str, st: ModemState) -> None:
        st = self._unless_revoked(modem_id, st)
        data = modem_status_payload(modem_id, st)
        r = self.runtime.redis
        status_key = self.runtime.key(MODEM_STATUS_KEY)
        # The previous state lives in Redis, not in this process: a new leader
        # still sees an online -> offline change that happened during handover.
        try:
            prev_raw = r.hget(status_key, modem_id)
            prev_known = True
        except redis_lib.RedisError:
            # Redis down must not cost the modem's row its state (the sweeper
            # reroutes on it), nor browsers the event (held: core/livefeed.py).
            prev_raw, prev_known = None, False
        self.runtime.emit("modem_status", data)
        prev_online = json.loads(prev_raw).get("online") if prev_raw else None
        with session_scope(self.runtime.sessionmaker) as session:
            modem = session.get(Modem, modem_id)
            if not prev_known and modem is not None:
                # Second best: the row, which a worker may already have set
                # online itself (an "online" webhook can be missed, not "offline").
                prev_online = modem.online
            if modem is None and not st.online and st.last_error:
                # A worker that never reached its modem (say, the port cannot
                # be opened) wrote no row: list it anyway, with its error, so
                # the dashboard agrees with its container's health.
                session.add(Modem(id=modem_id, online=False, last_error=st.last_error, device_path=st.device_path))
            if modem is not None and (modem.online != st.online or not st.online):
                # A dead worker cannot write its own offline state; its will can.
                modem.online = st.online
                if st.online:
                    modem.last_seen_at = utcnow()
            queued = 0
            if prev_online != st.online:
                queued = enqueue_modem_event(session, modem_id, st, data)
        # Only after the delivery is committed: a leader that dies before this
        # line leaves the old state in Redis, and the next leader, handed the
        # retained state on subscribing, sees the change again.
        self.runtime.keep_modem_status(modem_id, data)
        if queued:
            self.on_deliveries()
        if not st.online:
            self.on_modem_offline()
