# Over 500 lines on purpose: one board's worker, whose queue, status and silence handling share one state and one lock.
"""The board worker: one seed board (ESP32 + SIM module on MQTT) as a modem.

It takes work from the same durable queue as a USB modem's worker (claim,
record, then publish on events/messages), but hands each message to its
board as the seed's `sms/send/<number>` payload instead of AT commands, and
turns the board's `/sms/status` and `/sms/receive` into the same states,
history rows and events (docs/boards.md).

Which payloads are this board's: the status and receive topics are shared by
every board (the broker cannot give each its own), so a payload is taken
only when it names this SIM's number (`sender_number` of a status,
`receiver_number` of a receive) and, for a status, when its `message_id` is an
outbound message routed to this SIM. Payloads naming another number are
another board's business and are left alone; a payload naming this number
for a message that is not this SIM's is refused and logged.

The parts of a handed-over message are committed as `submitting` before the
payload is published, as before AT+CMGS: if this worker dies before the
board answers, the lease sweep makes the message `unknown`, never a resend.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from smsgw_common import queue as message_queue
from smsgw_common import selfstats
from smsgw_common.db import make_engine, make_sessionmaker
from smsgw_common.models import (
    DELIVERED,
    EXPIRED,
    FAILED,
    RECEIVED,
    SENDING,
    SENT,
    UNKNOWN,
    Message,
    MessageEvent,
    MessagePart,
    Modem,
    SimCard,
    utcnow,
)
from smsgw_common.schemas import ModemCommand, ModemCommandReply, ModemState, OutboxWakeup, parse
from smsgw_common.segments import analyze
from smsgw_common.topics import Topics
from smsgw_worker.settings import touch_heartbeat
from smsgw_worker.worker.context import modem_bus

from .protocol import (
    ReceivePayload,
    SeedTopics,
    SendPayload,
    StatusPayload,
    message_id_of,
    parse_board,
    same_number,
    status_state,
)
from .settings import BoardSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

MANUFACTURER = "seed board"
MODEL = "seed MQTT protocol"
# A status word we do not know is kept in the history under this state; the
# message's own state does not change (and no webhook fires for it).
NOTE = "board_status"
# How far each state has got: a status that would not move a message
# forward is a repeat and changes nothing.
RANK = {SENDING: 0, UNKNOWN: 0, EXPIRED: 0, SENT: 1, DELIVERED: 2, FAILED: 2}
SILENT_DETAIL = "no status from the board within {}s; whether it was sent is unknown"


@dataclass(frozen=True)
class Inbound:
    kind: str  # "status" | "receive" | "wakeup" | "command" | "connected" | "stop"
    payload: bytes = b""


@dataclass
class Counters:
    """What the worker did with the payloads it saw (tests, logs)."""

    handed_over: int = 0
    statuses: int = 0
    repeats: int = 0
    notes: int = 0
    received: int = 0
    refused: int = 0
    foreign: int = 0
    silent: int = 0


class BoardWorker:
    def __init__(self, settings: BoardSettings) -> None:
        self.settings = settings
        self.modem_id = settings.modem_id
        self.worker_id = settings.worker_id
        self.number = settings.number
        self.topics = Topics(settings.common.mqtt.prefix)
        self.seed = SeedTopics(settings.topic_root)
        self.engine = make_engine(settings.common.database.url, pool_size=2, max_overflow=2)
        self.Session = make_sessionmaker(self.engine)
        self.events: queue.Queue[Inbound] = queue.Queue()
        self.stopping = threading.Event()
        self.started = threading.Event()
        self.counters = Counters()
        self.sim_card_id: int | None = None
        # Optimistic at start: a seed board says nothing until it is asked.
        self.online = True
        self.last_error: str | None = None
        self.misses = 0  # silences in a row
        self.next_probe = 0.0
        self.want_claim = True
        self.bus = modem_bus(
            settings.common.mqtt, self.topics, self.modem_id, lambda: self.events.put(Inbound("connected"))
        )
        self.bus.subscribe(self.topics.outbox(self.modem_id), lambda t, p: self.events.put(Inbound("wakeup", p)))
        self.bus.subscribe(self.topics.command(self.modem_id), lambda t, p: self.events.put(Inbound("command", p)))
        self.bus.subscribe(self.seed.status(), lambda t, p: self.events.put(Inbound("status", p)))
        self.bus.subscribe(self.seed.receive(), lambda t, p: self.events.put(Inbound("receive", p)))

    # -- running -------------------------------------------------------------------
    def stop(self) -> None:
        self.stopping.set()
        self.events.put(Inbound("stop"))

    def run(self) -> None:
        settings = self.settings
        self.bus.start()
        reporter = selfstats.start(self.bus, self.topics, f"modem-worker-{self.modem_id}"[:64])
        backoff = 1.0
        try:
            while not self.stopping.is_set():
                try:
                    self.register()
                    break
                except SQLAlchemyError as exc:
                    log.warning("cannot register board %s yet: %s", self.modem_id, str(exc).splitlines()[0])
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
            self.started.set()
            claim_at = sweep_at = state_at = check_at = 0.0
            check_every = min(1.0, settings.status_timeout / 4)
            while not self.stopping.is_set():
                self.heartbeat()
                now = time.monotonic()
                if now >= check_at:
                    check_at = now + check_every
                    self.guard(self.settle_silent)
                if now >= claim_at:
                    claim_at = now + settings.claim_interval
                    self.want_claim = True
                if self.want_claim and not self.guard(self.hand_over):
                    self.want_claim = False
                if now >= sweep_at:
                    sweep_at = now + settings.sweep_interval
                    self.guard(self.sweep)
                if now >= state_at:
                    state_at = now + settings.state_interval
                    self.guard(self.publish_state)
                wait = 0.0 if self.want_claim else max(0.0, min(claim_at, check_at, sweep_at) - time.monotonic())
                self.drain(wait)
        finally:
            reporter.stop()
            self.shutdown()

    def guard(self, step: Callable[[], T]) -> T | None:
        """Run one step; a database or other failure is logged, never fatal."""
        try:
            return step()
        except SQLAlchemyError as exc:
            log.error("database error; will retry: %s", str(exc).splitlines()[0])
        except Exception:
            log.exception("unexpected error in the board worker")
        return None

    def drain(self, timeout: float) -> None:
        try:
            item = self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            return
        while True:
            self.guard(functools.partial(self.handle, item))
            if self.stopping.is_set():
                return
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                return

    def handle(self, item: Inbound) -> None:
        if item.kind == "status":
            self.on_status(item.payload)
        elif item.kind == "receive":
            self.on_receive(item.payload)
        elif item.kind == "wakeup":
            if parse(OutboxWakeup, item.payload) is not None:
                self.want_claim = True
        elif item.kind == "command":
            self.on_command(item.payload)
        elif item.kind == "connected":
            self.publish_state()
            self.want_claim = True

    def heartbeat(self) -> None:
        touch_heartbeat(self.settings.heartbeat_file)

    def shutdown(self) -> None:
        log.info("board worker stopping")
        self.online = False
        try:
            self.mark_modem_row(False, reason="shutdown")
        except SQLAlchemyError:
            log.warning("could not mark the board offline in the database")
        self.publish_state(reason="shutdown")
        time.sleep(0.2)  # let paho flush the retained offline state
        self.bus.stop()
        self.engine.dispose()

    # -- the modem's and the SIM's rows ------------------------------------------
    def register(self) -> None:
        """The board's modem row, and its SIM found by number (a board has no ICCID to give)."""
        now = utcnow()
        with self.Session.begin() as session:
            row = session.get(Modem, self.modem_id)
            if row is None:
                row = Modem(id=self.modem_id)
                session.add(row)
            row.device_path = "mqtt:" + self.seed.send(self.number)
            row.manufacturer, row.model, row.firmware = MANUFACTURER, MODEL, None
            row.online, row.last_seen_at, row.last_error = True, now, None
            session.flush()
            sim = session.scalar(
                select(SimCard)
                .where(SimCard.number == self.number)
                .order_by(
                    (SimCard.modem_id == self.modem_id).desc().nulls_last(), SimCard.iccid.is_(None).desc(), SimCard.id
                )
                .limit(1)
            )
            if sim is None:
                sim = SimCard(number=self.number, status="active")
                session.add(sim)
            sim.modem_id, sim.last_seen_at = self.modem_id, now
            session.flush()
            session.execute(
                update(SimCard).where(SimCard.modem_id == self.modem_id, SimCard.id != sim.id).values(modem_id=None)
            )
            self.sim_card_id = sim.id
        self.online, self.last_error, self.misses = True, None, 0
        self.publish_state()
        log.info("board %s (%s) registered as SIM %s", self.modem_id, self.number, self.sim_card_id)

    def mark_modem_row(self, online: bool, reason: str | None = None) -> None:
        values: dict[str, object] = {"online": online, "last_error": self.last_error}
        if online:
            values["last_seen_at"] = utcnow()
        with self.Session.begin() as session:
            session.execute(update(Modem).where(Modem.id == self.modem_id).values(**values))

    def state(self, reason: str | None = None) -> ModemState:
        depth = None
        try:
            with self.Session() as session:
                depth = message_queue.queue_depth(session, self.sim_card_id)
        except SQLAlchemyError:
            pass
        return ModemState(
            modem_id=self.modem_id,
            online=self.online,
            ts=utcnow(),
            sim_card_id=self.sim_card_id,
            number=self.number,
            manufacturer=MANUFACTURER,
            model=MODEL,
            device_path="mqtt:" + self.seed.send(self.number),
            queue_depth=depth,
            last_error=self.last_error,
            reason=None if self.online else (reason or "not_answering"),
        )

    def publish_state(self, reason: str | None = None) -> None:
        self.bus.publish(self.topics.state(self.modem_id), self.state(reason).to_json(), qos=1, retain=True)

    def went_silent(self) -> None:
        self.online = False
        self.last_error = (
            f"board answered none of the last {self.misses} messages within {self.settings.status_timeout:g}s"
        )
        log.warning("board %s offline: %s", self.modem_id, self.last_error)
        self.mark_modem_row(False)
        self.publish_state()
        self.next_probe = time.monotonic() + self.settings.probe_interval

    def heard_from(self) -> None:
        """The board spoke for itself: it is there."""
        self.misses = 0
        if not self.online:
            self.online, self.last_error = True, None
            log.info("board %s answers again: online", self.modem_id)
            self.mark_modem_row(True)
            self.publish_state()
            self.want_claim = True

    # -- outbound ------------------------------------------------------------------
    def publish_event(self, msg: Message, state: str, message: str | None = None) -> None:
        payload = message_queue.event_of(msg, state, self.modem_id, message=message)
        self.bus.publish(self.topics.message_events(), payload.to_json(), qos=1)

    def hand_over(self) -> bool:
        """Claim what fits and publish it to the board; False when there was nothing to do."""
        settings = self.settings
        if self.sim_card_id is None or self.stopping.is_set():
            return False
        if not self.bus.connected:
            # Handed over now, it would wait in paho's queue while its status
            # timeout ran: the broker's outage would count as the board's silence.
            return False
        batch = settings.claim_batch
        if not self.online:
            # One message at a time, now and then, to find out whether the board is back.
            if time.monotonic() < self.next_probe:
                return False
            batch = 1
        with self.Session() as session:
            limit = message_queue.claim_limit(session, self.sim_card_id, batch)
            if limit <= 0:
                return False
            claimed = message_queue.claim(
                session,
                self.sim_card_id,
                self.worker_id,
                lease_seconds=settings.status_timeout + settings.lease_grace,
                limit=limit,
            )
            if not claimed:
                session.commit()
                return False
            now = utcnow()
            for msg in claimed:
                # Durable before the board can have it (see the module docstring).
                for seq in range(1, max(1, msg.segments or 1) + 1):
                    session.add(
                        MessagePart(
                            message_id=msg.id,
                            seq=seq,
                            sim_card_id=self.sim_card_id,
                            status=message_queue.PART_SUBMITTING,
                            sent_at=now,
                        )
                    )
            session.commit()
            if not self.online:
                self.next_probe = time.monotonic() + settings.probe_interval
            for msg in claimed:
                self.publish_event(msg, SENDING)
                payload = SendPayload(number=msg.recipient or "", message=msg.message or "", message_id=str(msg.id))
                self.bus.publish(self.seed.send(self.number), payload.to_json(), qos=1)
                self.counters.handed_over += 1
                log.info("message %s handed to board %s", msg.id, self.modem_id)
        return True

    def settle_silent(self) -> None:
        """Messages the board never answered become `unknown`, never pending forever."""
        if self.sim_card_id is None:
            return
        cutoff = utcnow() - timedelta(seconds=self.settings.status_timeout)
        detail = SILENT_DETAIL.format(f"{self.settings.status_timeout:g}")
        with self.Session() as session:
            silent = session.scalars(
                select(Message)
                .where(
                    Message.status == SENDING,
                    Message.sim_card_id == self.sim_card_id,
                    Message.worker_id == self.worker_id,
                    Message.sending_at < cutoff,
                )
                .order_by(Message.id)
                .with_for_update(skip_locked=True)
                .limit(100)
            ).all()
            if not silent:
                return
            for msg in silent:
                msg.lease_until = None
                message_queue.record(session, msg, UNKNOWN, source=self.worker_id, detail=detail)
            session.commit()
            for msg in silent:
                self.publish_event(msg, UNKNOWN)
                log.warning("message %s: %s", msg.id, detail)
        self.counters.silent += len(silent)
        self.misses += len(silent)
        if self.online and self.misses >= self.settings.offline_after:
            self.went_silent()

    # -- what the board says -----------------------------------------------------
    def on_status(self, raw: bytes) -> None:
        payload = parse_board(StatusPayload, raw)
        if payload is None:
            return
        if not same_number(payload.sender_number, self.number):
            self.counters.foreign += 1  # another board's, on the shared topic
            return
        message_id = message_id_of(payload)
        with self.Session() as session:
            msg = None
            if message_id is not None:
                msg = session.scalar(select(Message).where(Message.id == message_id).with_for_update())
            if msg is None or msg.direction != "outbound" or msg.sim_card_id != self.sim_card_id:
                session.rollback()
                self.counters.refused += 1
                log.warning(
                    "refused a status from board %s for message %r, which is not one of SIM %s's",
                    self.modem_id,
                    payload.message_id,
                    self.number,
                )
                return
            self.apply_status(session, msg, payload.status)
        self.heard_from()

    def apply_status(self, session: Session, msg: Message, word: str) -> None:
        target = status_state(word)
        self.counters.statuses += 1
        if target is None:
            # Kept, not guessed: the message stays where it is.
            session.add(
                MessageEvent(
                    message_id=msg.id,
                    state=NOTE,
                    at=utcnow(),
                    source=self.worker_id,
                    detail=f"board status {word!r} (not a word this gateway knows; state unchanged)",
                )
            )
            session.commit()
            self.counters.notes += 1
            log.info("message %s: board said %r; kept as detail", msg.id, word)
            return
        current = msg.status
        if current not in RANK or RANK[target] <= RANK[current]:
            session.rollback()
            self.counters.repeats += 1
            log.info("message %s: board status %r changes nothing (already %s)", msg.id, word, current)
            return
        detail = f"board status {word!r}"
        if current in (UNKNOWN, EXPIRED):
            detail += f" after the message was {current}"
        changes: list[str] = []
        if RANK[current] < RANK[SENT] and target in (SENT, DELIVERED):
            msg.lease_until = None
            message_queue.record(session, msg, SENT, source=self.worker_id, detail=detail)
            changes.append(SENT)
        if target in (DELIVERED, FAILED):
            msg.lease_until = None
            message_queue.record(
                session,
                msg,
                target,
                source=self.worker_id,
                error_text="the board reported the send failed" if target == FAILED else None,
                detail=detail,
            )
            changes.append(target)
        part_state = {
            SENT: message_queue.PART_SENT,
            DELIVERED: message_queue.PART_DELIVERED,
            FAILED: message_queue.PART_FAILED,
        }[target]
        session.execute(
            update(MessagePart)
            .where(MessagePart.message_id == msg.id)
            .values(status=part_state, report_at=utcnow() if target != SENT else None)
        )
        session.commit()
        for state in changes:
            self.publish_event(msg, state)
        log.info("message %s %s (board status %r)", msg.id, target, word)

    def on_receive(self, raw: bytes) -> None:
        payload = parse_board(ReceivePayload, raw)
        if payload is None:
            return
        if not same_number(payload.receiver_number, self.number):
            # Another board's SIM (or none of ours): never a SIM made up from it.
            self.counters.foreign += 1
            return
        if self.sim_card_id is None:
            return
        text = payload.message
        info = analyze(text)
        with self.Session() as session:
            msg = Message(
                direction="inbound",
                status=RECEIVED,
                sender=payload.sender_number,
                recipient=self.number,
                message=text,
                encoding=info.encoding,
                segments=max(1, info.segments),
                sim_card_id=self.sim_card_id,
                sender_sim=self.number,
            )
            message_queue.record(session, msg, RECEIVED, source=self.worker_id)
            session.commit()
            self.publish_event(msg, RECEIVED, message=text)
            log.info("received message %s from %s on board %s", msg.id, payload.sender_number, self.modem_id)
        self.counters.received += 1
        self.heard_from()

    def on_command(self, raw: bytes) -> None:
        command = parse(ModemCommand, raw)
        if command is None:
            return
        reply = ModemCommandReply(request_id=command.request_id, ok=False)
        if command.command == "refresh":
            reply.result = self.state().as_dict()
            reply.ok = True
            self.publish_state()
        else:
            reply.error = f"{command.command} is not part of the seed's board protocol"
        self.bus.publish(self.topics.command_reply(self.modem_id), reply.to_json(), qos=1)

    # -- housekeeping ----------------------------------------------------------------
    def sweep(self) -> None:
        """What a USB worker's sweep does too (worker/sweep.py): lapsed leases and
        messages past validity or report time,
        unreadable rows set aside (queue.sweep), so a board alone leaves nothing pending."""
        with self.Session() as session:
            changed = message_queue.sweep(
                session, source=self.worker_id, report_timeout=timedelta(seconds=self.settings.report_timeout)
            )
            if changed:
                self.want_claim = True
            for msg, state in changed:
                self.publish_event(msg, state)
