"""The worker loop: one modem, Postgres as the truth, MQTT as the fast path.

Everything that touches the modem or the database runs on one thread, the
loop in `Worker.run`; the serial reader and the MQTT client only put events
on `self.events`. So a +CMTI/+CDSI that arrives in the middle of a send
waits until that batch is done, and no two commands ever race.

Direct delivery (+CMT, +CDS; with AT+CSMS=1 each waits for AT+CNMA, and a
late acknowledgement makes the network deliver it again) cannot wait for a
batch that may take minutes: those events go to `self.direct` and are
handled between segments too (`_service_direct`), never later than the
AT+CMGS in flight when they came. Order: the message or report is committed
first, AT+CNMA follows, so nothing acknowledged is ever lost. If the commit
fails (database down) no AT+CNMA is sent and the network delivers it again;
if it is slow, the acknowledgement is late and the network may deliver it
again: the duplicate detection below (`_store_inbound`) drops such a repeat,
and a repeated report changes nothing.

Outbound, per segment: the part is committed as `submitting` BEFORE AT+CMGS
is written and as `sent` with its reference right after `+CMGS: <mr>`. If the
worker dies in between, `queue.reclaim_expired_leases` turns the message into
`unknown` instead of sending it again (DESIGN.md). The same holds for a send
that times out after the PDU was written, or that gets any answer then but
`+CMGS: <mr>` or a +CMS/+CME error (a bare OK or ERROR): recorded `unknown`,
never resent.

Status reports: a final failure report for any part fails the message with
its TP-ST, whether it comes while the message is `sent`, `expired` or
`unknown`, or while it waits in the queue to retry another part (then the
rest is not sent).

Send errors (errors.classify_send_error):
- permanent (+CMS 1, 8, 10, 21, 28, 29, 30, 50, 69, 81, 95-97, 99, 111, 127,
  128-255, 303-305, 330): the message fails with the modem's code and text;
- SIM problems (+CMS 310-313, 315-318, +CME 10-13, 15-18): the message goes
  back to the queue without spending an attempt, the modem is marked offline;
- anything else (+CMS 17, 22, 27, 38, 41, 42, 47, 98, 300, 314 (SIM busy),
  320-322, 331, 332, 500, other +CME codes incl. 14 (SIM busy), vendor codes,
  no prompt): retried after retry_base * 2^(n-1) seconds (capped at
  retry_max) up to max_attempts, then failed.
"""
from __future__ import annotations

import logging
import os
import queue as queue_mod
import threading
import time
from datetime import timedelta
from hashlib import sha1

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError

from smsgw_common import jsonlog
from smsgw_common import queue as q
from smsgw_common import selfstats
from smsgw_common.db import make_engine, make_sessionmaker
from smsgw_common.models import (
    DELIVERED, EXPIRED, FAILED, QUEUED, RECEIVED, SENDING, SENT, UNKNOWN,
    InboundPart, Message, MessageEvent, MessagePart, Modem, SimCard, utcnow,
)
from smsgw_common.mqtt import Bus
from smsgw_common.schemas import (
    MessageEventPayload, ModemCommand, ModemCommandReply, ModemState, OutboxWakeup, parse,
)
from smsgw_common.topics import Topics

from . import pdu as pdu_codec
from .atmodem import ATModem, Identity, ModemEvent
from .serial_link import URC_HEADS, line_head
from .errors import (
    PERMANENT, SIM_PROBLEM, CmeError, CmsError, CommandError, ModemError, ModemTimeout, PortGone,
    SimProblem, SubmitUnconfirmed, classify_send_error,
)
from .settings import WorkerSettings

log = logging.getLogger(__name__)


SIM_TEXT = {"sim_missing": "SIM not inserted", "pin_required": "SIM PIN required",
            "sim_failure": "SIM failure", "sim_busy": "SIM busy"}


# References wrap at 256 per SIM, so several parts can carry the report's.
# The one whose recipient is the report's (digits only, the last 9 compared so
# that +44 7700 900123 and 07700900123 match) wins, then the latest submission:
# a part re-sent after a transient error keeps its row (and its old id).
SQL_PART_REPORT = """
UPDATE message_parts SET report_status = %s, report_at = %s, status = COALESCE(%s, status)
WHERE id = (SELECT p.id FROM message_parts p JOIN messages m ON m.id = p.message_id
            WHERE p.sim_card_id = %s AND p.reference = %s
            ORDER BY COALESCE(%s <> '' AND right(regexp_replace(COALESCE(m.recipient, ''), '[^0-9]', '', 'g'), 9) = %s,
                              false) DESC,
                     p.sent_at DESC NULLS LAST, p.id DESC
            LIMIT 1 FOR UPDATE OF p)
RETURNING message_id, seq"""
SQL_PART_SUBMIT = f"""
INSERT INTO message_parts (message_id, seq, sim_card_id, status, sent_at)
VALUES (%s, %s, %s, '{q.PART_SUBMITTING}', %s) RETURNING id"""
SQL_PART_RESUBMIT = f"""
UPDATE message_parts SET status = '{q.PART_SUBMITTING}', sim_card_id = %s, reference = NULL, sent_at = %s,
    report_status = NULL, report_at = NULL
WHERE id = %s"""
SQL_PART_SENT = f"UPDATE message_parts SET status = '{q.PART_SENT}', reference = %s, sent_at = %s WHERE id = %s"
SQL_PART_NOT_SENT = f"UPDATE message_parts SET status = '{q.PART_FAILED}', sent_at = NULL WHERE id = %s"


def _sql(session, statement: str, params: tuple):
    return session.connection().exec_driver_sql(statement, params)


def _report_tail(number: str | None) -> str:
    """A number as SQL_PART_REPORT compares it: its last 9 digits."""
    return "".join(ch for ch in number or "" if ch.isdigit())[-9:]



def _failed_by_report(part) -> bool:
    """A part the network reported as never to be delivered (not a refused AT+CMGS)."""
    return part.status == q.PART_FAILED and part.report_status is not None


class Worker:
    def __init__(self, settings: WorkerSettings, *, device: str | None = None):
        self.s = settings
        self.device = device or settings.device
        self.modem_id = settings.modem_id
        self.worker_id = settings.worker_id
        self.topics = Topics(settings.common.mqtt.prefix)
        # No ping on every checkout: this loop checks a connection out several
        # times per segment, and a dead connection is invalidated by SQLAlchemy
        # and surfaces in _guard, which retries.
        self.engine = make_engine(settings.common.database.url, pool_size=2, max_overflow=2, pre_ping=False)
        self.Session = make_sessionmaker(self.engine)
        self.events: queue_mod.Queue = queue_mod.Queue()
        self.direct: queue_mod.Queue = queue_mod.Queue()  # (+CMT/+CDS event, generation) awaiting AT+CNMA
        # Messages of the running batch a report came for while they were
        # still `sending`: settled (delivered/failed) once they are `sent`.
        self._reported_while_sending: set[int] = set()
        self.modem: ATModem | None = None
        self.identity: Identity | None = None
        self.sim_card_id: int | None = None
        self.sim_number: str | None = None
        self.health: dict = {}
        self.last_error: str | None = None
        self.offline_reason: str | None = "starting"
        self.segments_sent = 0
        self._generation = 0
        self._stop = threading.Event()
        self._want_claim = True
        self._next_connect = 0.0
        self._backoff = settings.reconnect_min
        self._timeouts = 0
        self._rescan = False
        self.started = threading.Event()  # set once the modem is up (tests, bench)
        suffix = "" if settings.common.mqtt.prefix == "smsgw/" else "-" + sha1(
            settings.common.mqtt.prefix.encode()).hexdigest()[:8]
        will = ModemState(modem_id=self.modem_id, online=False, ts=utcnow(), reason="lwt").to_json()
        self.bus = Bus(
            settings.common.mqtt, client_id=f"smsgw-worker-{self.modem_id}{suffix}"[:64],
            will=(self.topics.state(self.modem_id), will, 1, True),
            on_connect=lambda: self.events.put(("mqtt_connected",)),
        )
        self.bus.subscribe(self.topics.outbox(self.modem_id), self._on_outbox)
        self.bus.subscribe(self.topics.command(self.modem_id), self._on_command)

    # -- MQTT callbacks (paho thread: enqueue only) --------------------------
    def _on_outbox(self, topic: str, payload: bytes) -> None:
        wake = parse(OutboxWakeup, payload)
        if wake is not None:
            self.events.put(("wakeup", wake.message_id))

    def _on_command(self, topic: str, payload: bytes) -> None:
        command = parse(ModemCommand, payload)
        if command is not None:
            self.events.put(("command", command))

    # -- lifecycle ---------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self.events.put(("stop",))

    def run(self) -> None:
        self.bus.start()
        # Own RSS/CPU for the stats collector's "components" (docs/observability.md).
        reporter = selfstats.start(self.bus, self.topics, f"modem-worker-{self.modem_id}"[:64])
        timers = {"claim": 0.0, "refresh": 0.0, "sweep": 0.0}
        try:
            while not self._stop.is_set():
                self._heartbeat()
                now = time.monotonic()
                if self.modem is None and now >= self._next_connect:
                    if self._connect():
                        timers["refresh"] = now + self.s.refresh_interval
                        self._want_claim = True
                    else:
                        self._next_connect = time.monotonic() + self._backoff
                        self._backoff = min(self._backoff * 2, self.s.reconnect_max)
                if self.modem is not None:
                    if now >= timers["refresh"]:
                        timers["refresh"] = now + self.s.refresh_interval
                        self._guard(self._refresh)
                    if now >= timers["claim"]:
                        timers["claim"] = now + self.s.claim_interval
                        self._want_claim = True
                    if self._want_claim and self.modem is not None and not self._stop.is_set():
                        if not self._guard(self._send_batch):
                            self._want_claim = False
                if now >= timers["sweep"]:
                    timers["sweep"] = now + self.s.sweep_interval
                    self._sweep()
                busy = self._want_claim and self.modem is not None
                deadlines = [timers["sweep"]] + ([timers["claim"], timers["refresh"]] if self.modem else [self._next_connect])
                self._drain(0 if busy else max(0.0, min(deadlines) - time.monotonic()))
        finally:
            reporter.stop()
            self._shutdown()

    def _heartbeat(self) -> None:
        if self.s.heartbeat_file:
            try:
                with open(self.s.heartbeat_file, "a"):
                    os.utime(self.s.heartbeat_file)
            except OSError as exc:
                log.warning("cannot touch the heartbeat file %s: %s", self.s.heartbeat_file, exc)

    def _drain(self, timeout: float) -> None:
        try:
            item = self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue_mod.Empty:
            return
        while True:
            self._handle(item)
            if self._stop.is_set():
                return
            try:
                item = self.events.get_nowait()
            except queue_mod.Empty:
                return

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == "modem":
            if item[2] == self._generation and self.modem is not None:
                self._guard(self._on_modem_event, item[1])
        elif kind == "fatal":
            if item[2] == self._generation and self.modem is not None:
                self._lost("unplugged", str(item[1]))
        elif kind == "direct":
            if self.modem is not None:
                self._guard(self._service_direct)
        elif kind == "wakeup":
            self._want_claim = True
        elif kind == "command":
            self._run_command(item[1])
        elif kind == "mqtt_connected":
            # A broker restart loses nothing retained, but a fresh broker does.
            self._publish_state()
            self._want_claim = True

    def _shutdown(self) -> None:
        log.info("worker stopping")
        self.offline_reason = "shutdown"
        try:
            self._mark_modem_row(online=False)
        except SQLAlchemyError:
            log.exception("could not mark the modem offline in the database")
        self._publish_state()
        if self.modem is not None:
            self.modem.close()
            self.modem = None
        time.sleep(0.2)  # let paho flush the retained offline state
        self.bus.stop()
        self.engine.dispose()

    def _guard(self, fn, *args):
        """Run one step; turn modem and database failures into recovery, never a crash."""
        try:
            result = fn(*args)
            self._timeouts = 0
            return result
        except PortGone as exc:
            self._lost("unplugged", str(exc))
        except ModemTimeout as exc:
            self._unresponsive(exc)
        except SimProblem as exc:
            self._lost(exc.reason, str(exc))
        except ModemError as exc:
            log.warning("modem error: %s", exc)
            self.last_error = str(exc)
        except SQLAlchemyError:
            log.exception("database error; will retry")
            # Whatever stayed on the SIM is read again on the next refresh.
            self._rescan = True
        except Exception:
            # A bug must not take the modem offline for good: log it, carry on
            # (the timers bound how often it can repeat).
            log.exception("unexpected error in the worker loop")
        return None

    # -- connecting and health -------------------------------------------------
    def _connect(self) -> bool:
        self._generation += 1
        gen = self._generation
        modem = ATModem(
            self.device, pin=self.s.pin, baudrate=self.s.baudrate,
            command_timeout=self.s.command_timeout, send_timeout=self.s.send_timeout,
            sim_busy_timeout=self.s.sim_busy_timeout, sms_ready_timeout=self.s.sms_ready_timeout,
            direct_delivery=self.s.direct_delivery,
            on_event=lambda event: self._modem_event(event, gen),
            on_fatal=lambda exc: self.events.put(("fatal", exc, gen)),
        )
        try:
            modem.open()
            modem.init()
            self.identity = modem.identity()
        except PortGone as exc:
            modem.close()
            return self._offline("port_unavailable", str(exc))
        except ModemTimeout as exc:
            modem.close()
            return self._offline("not_responding", str(exc))
        except SimProblem as exc:
            modem.close()
            return self._offline(exc.reason, str(exc))
        except Exception as exc:  # ModemError, or a bug: retried with backoff either way
            if not isinstance(exc, ModemError):
                log.exception("unexpected error while bringing the modem up")
            modem.close()
            return self._offline("init_failed", str(exc))
        self.modem = modem
        try:
            self._register()
            # Online, but without +CNMI (say): the health says what is missing.
            self.last_error = modem.setup_problem
            self._rescan = True  # read what arrived while nobody listened
            self._refresh()
        except SQLAlchemyError as exc:
            log.exception("database unavailable during start-up")
            self.modem = None
            modem.close()
            return self._offline("database_unavailable", str(exc).splitlines()[0])
        except Exception as exc:
            if not isinstance(exc, ModemError):
                log.exception("unexpected error while bringing the modem up")
            self.modem = None
            modem.close()
            return self._offline(getattr(exc, "reason", "init_failed"), str(exc))
        self._backoff = self.s.reconnect_min
        self.started.set()
        log.info("modem %s online on %s (%s %s)", self.modem_id, self.device,
                 self.identity.manufacturer, self.identity.model)
        return True

    def _modem_event(self, event: ModemEvent, gen: int) -> None:
        """Serial reader thread: enqueue only."""
        if event.kind in ("sms", "report"):
            self.direct.put((event, gen))
            self.events.put(("direct",))
        else:
            self.events.put(("modem", event, gen))

    def _offline(self, reason: str, error: str) -> bool:
        if reason != self.offline_reason or error != self.last_error:
            log.warning("modem %s offline (%s): %s", self.modem_id, reason, error)
        self.offline_reason, self.last_error = reason, error
        try:
            self._mark_modem_row(online=False)
        except SQLAlchemyError:
            log.warning("could not record the modem offline in the database")
        self._publish_state()
        return False

    def _lost(self, reason: str, error: str) -> None:
        modem, self.modem = self.modem, None
        self._generation += 1  # events of the old link are stale from now on
        if modem is not None:
            modem.close()
        self._next_connect = time.monotonic() + self.s.reconnect_min
        self._backoff = self.s.reconnect_min
        self._offline(reason, error)

    def _unresponsive(self, exc: ModemTimeout) -> None:
        log.warning("modem stopped answering: %s", exc)
        modem = self.modem
        if modem is None:
            return
        try:
            how = modem.reset(timeout=self.s.command_timeout)
            log.warning("modem reset with %s", "ATZ" if how == "atz" else "AT+CFUN=1,1")
            if how == "atz":
                modem.init()
                log.info("modem answered again after ATZ")
                return
        except ModemError as err:
            log.warning("reset failed: %s", err)
        # After AT+CFUN=1,1 the module reboots (the port may re-enumerate):
        # reopen from scratch with backoff.
        self._lost("not_responding", str(exc))

    def _register(self) -> None:
        ident = self.identity
        now = utcnow()
        with self.Session.begin() as s:
            row = s.get(Modem, self.modem_id)
            if row is None:
                row = Modem(id=self.modem_id)
                s.add(row)
            row.imei, row.device_path = ident.imei, self.device
            row.manufacturer, row.model, row.firmware = ident.manufacturer, ident.model, ident.firmware
            row.online, row.last_seen_at, row.last_error = True, now, None
            s.flush()
            sim = None
            if ident.iccid:
                sim = s.scalar(select(SimCard).where(SimCard.iccid == ident.iccid))
                if sim is None and ident.number:
                    # A SIM an admin created by number before any worker saw it.
                    sim = s.scalar(select(SimCard).where(SimCard.number == ident.number, SimCard.iccid.is_(None)))
            else:
                sim = s.scalar(select(SimCard).where(SimCard.modem_id == self.modem_id).order_by(SimCard.id))
            if sim is None:
                sim = SimCard(status="active")
                s.add(sim)
            sim.iccid = ident.iccid or sim.iccid
            sim.imsi = ident.imsi or sim.imsi
            sim.modem_id = self.modem_id
            sim.last_seen_at = now
            if ident.number:
                sim.number = ident.number
            s.flush()
            # A SIM that left this modem is no longer here.
            s.execute(update(SimCard).where(SimCard.modem_id == self.modem_id, SimCard.id != sim.id)
                      .values(modem_id=None))
            self.sim_card_id, self.sim_number = sim.id, sim.number
        self.offline_reason, self.last_error = None, None

    def _refresh(self) -> None:
        modem = self.modem
        sim = modem.sim_state()
        if sim != "ready":
            raise SimProblem(sim, SIM_TEXT.get(sim, f"SIM state {sim}"))
        quality, dbm = modem.signal()
        self.health = {
            "signal_quality": quality, "signal_dbm": dbm,
            "registration": modem.registration(), "operator": modem.operator(),
        }
        if modem.setup_problem is not None:
            # "SMS not ready" outlasted init (or +CNMI was never accepted): try again.
            before = modem.setup_problem
            if modem.setup_sms(timeout=0) is None:
                log.info("SMS setup complete (cnmi %s)", modem.cnmi)
                self._rescan = True  # what came while there were no +CMTI
            if self.last_error in (None, before):
                self.last_error = modem.setup_problem
        self._mark_modem_row(online=True)
        usage = modem.storage_usage()
        reports = modem.report_storage_usage() if modem.report_storage else None
        if self._rescan or (usage and usage[0] > 0) or (reports and reports[0] > 0):
            # A missed +CMTI, a full SIM or a database hiccup left messages there.
            self._rescan = False
            self._read_stored()
        if self.health["operator"]:
            with self.Session.begin() as s:
                s.execute(update(SimCard).where(SimCard.id == self.sim_card_id)
                          .values(operator=self.health["operator"], last_seen_at=utcnow()))
        self._publish_state()

    def _mark_modem_row(self, online: bool) -> None:
        values = {"online": online, "last_error": self.last_error}
        if online:
            values.update(
                last_seen_at=utcnow(), signal_quality=self.health.get("signal_quality"),
                signal_rssi=self.health.get("signal_dbm"), registration=self.health.get("registration"),
                operator=self.health.get("operator"),
            )
        with self.Session.begin() as s:
            s.execute(update(Modem).where(Modem.id == self.modem_id).values(**values))

    def state(self) -> ModemState:
        ident = self.identity or Identity()
        online = self.modem is not None and self.offline_reason is None
        depth = None
        if self.sim_card_id is not None:
            try:
                with self.Session() as s:
                    depth = s.scalar(select(func.count()).select_from(Message).where(
                        Message.sim_card_id == self.sim_card_id, Message.status == QUEUED))
            except SQLAlchemyError:
                pass
        return ModemState(
            modem_id=self.modem_id, online=online, ts=utcnow(), sim_card_id=self.sim_card_id,
            iccid=ident.iccid, imsi=ident.imsi, imei=ident.imei, number=self.sim_number,
            manufacturer=ident.manufacturer, model=ident.model, firmware=ident.firmware,
            device_path=self.device, operator=self.health.get("operator"),
            registration=self.health.get("registration"), signal_quality=self.health.get("signal_quality"),
            signal_dbm=self.health.get("signal_dbm"), queue_depth=depth, last_error=self.last_error,
            reason=None if online else self.offline_reason,
        )

    def _publish_state(self) -> None:
        self.bus.publish(self.topics.state(self.modem_id), self.state().to_json(), qos=1, retain=True)

    def _publish_event(self, msg: Message, state: str, **extra) -> None:
        payload = MessageEventPayload(
            message_id=msg.id, state=state, direction=msg.direction or "outbound", at=utcnow(),
            sim_card_id=msg.sim_card_id, modem_id=self.modem_id, sender=msg.sender,
            recipient=msg.recipient, segments=msg.segments, error_code=msg.error_code,
            error_text=msg.error_text, **extra,
        )
        self.bus.publish(self.topics.message_events(), payload.to_json(), qos=1)

    # -- sweeping ------------------------------------------------------------
    def _sweep(self) -> None:
        try:
            now = utcnow()
            with self.Session() as s:
                reclaimed = q.reclaim_expired_leases(s, source=self.worker_id, now=now)
                expired = q.expire_due(s, report_timeout=timedelta(seconds=self.s.report_timeout),
                                       source=self.worker_id, now=now)
                s.commit()
                if any(reclaimed.values()) or any(expired.values()):
                    log.info("sweep: reclaimed %s, expired %s", reclaimed, expired)
                    self._want_claim = True
                    # The sweep's own history rows tell which messages changed.
                    changed = s.execute(select(Message, MessageEvent.state).join(
                        MessageEvent, MessageEvent.message_id == Message.id).where(
                        MessageEvent.source == self.worker_id, MessageEvent.at == now)).all()
                    for msg, state in changed:
                        self._publish_event(msg, state)
            self._flush_incomplete()
        except SQLAlchemyError:
            log.exception("sweep failed")

    def _flush_incomplete(self) -> None:
        """A concatenated SMS whose missing parts never came is delivered as
        what arrived (gaps marked) instead of waiting in inbound_parts forever."""
        if self.sim_card_id is None:
            return
        self._prune_completed_parts()
        cutoff = utcnow() - timedelta(seconds=self.s.inbound_part_timeout)
        with self.Session() as s:
            groups = s.execute(select(InboundPart.sender, InboundPart.reference, InboundPart.total).where(
                InboundPart.sim_card_id == self.sim_card_id, InboundPart.total > 0).group_by(
                InboundPart.sender, InboundPart.reference, InboundPart.total).having(
                func.min(InboundPart.received_at) < cutoff).limit(100)).all()
            for sender, reference, total in groups:
                parts = s.scalars(select(InboundPart).where(
                    InboundPart.sim_card_id == self.sim_card_id, InboundPart.sender == sender,
                    InboundPart.reference == reference, InboundPart.total == total,
                ).order_by(InboundPart.seq).with_for_update(skip_locked=True)).all()
                if not parts:
                    continue
                by_seq = {p.seq: p.content for p in parts}
                text = "".join(by_seq.get(n, f"[part {n} of {total} missing]") for n in range(1, total + 1))
                msg = Message(
                    direction="inbound", status=RECEIVED, sender=sender, recipient=self.sim_number, message=text,
                    encoding=parts[0].encoding, segments=total, sim_card_id=self.sim_card_id,
                    sender_sim=self.sim_number, sent_at=min((p.sent_at for p in parts if p.sent_at), default=None),
                )
                q.record(s, msg, RECEIVED, source=self.worker_id,
                         detail=f"incomplete: {len(by_seq)} of {total} parts arrived")
                self._mark_completed(s, sender, reference, total, parts)
                s.commit()
                self._publish_event(msg, RECEIVED, message=text)
                log.warning("incomplete SMS from %s delivered with %d of %d parts", sender, len(by_seq), total)

    # -- outbound --------------------------------------------------------------
    def _allowance(self, s) -> int | None:
        """Segments this SIM may still send now under its caps: the last 60 s,
        the calendar day and month in UTC (as carriers count, and as routing.py
        in the API counts), from the parts actually handed to the modem."""
        sim = s.get(SimCard, self.sim_card_id)
        if sim is None or sim.status != "active":
            return 0
        limits = (sim.limit_per_minute, sim.limit_per_day, sim.limit_per_month)
        if all(limit is None for limit in limits):
            return None
        now = utcnow()
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        windows = (now - timedelta(minutes=1), day, day.replace(day=1))
        used = s.execute(select(*[
            func.count().filter(MessagePart.sent_at >= start) for start in windows
        ]).where(MessagePart.sim_card_id == self.sim_card_id, MessagePart.sent_at >= min(windows))).one()
        return min(limit - count for limit, count in zip(limits, used) if limit is not None)

    def _fitting(self, s, allowance: int | None) -> int:
        if allowance is None:
            return self.s.claim_batch
        now = utcnow()
        rows = s.execute(
            select(Message.segments).where(
                Message.status == QUEUED, Message.sim_card_id == self.sim_card_id,
                or_(Message.send_at.is_(None), Message.send_at <= now),
                or_(Message.next_attempt_at.is_(None), Message.next_attempt_at <= now),
            ).order_by(Message.priority.desc(), Message.id).limit(self.s.claim_batch)
        ).all()
        count = 0
        for (segments,) in rows:
            allowance -= segments or 1
            if allowance < 0:
                break
            count += 1
        return count

    def _send_batch(self) -> bool:
        """Claim what fits and send it; False when there was nothing to do.

        One session serves the whole batch: the claimed rows stay loaded (a
        claimed message cannot be cancelled, and only its lease running out
        lets anyone else touch it), which keeps the statements per segment few.
        """
        if self.sim_card_id is None:
            return False
        with self.Session() as s:
            limit = self._fitting(s, self._allowance(s))
            if limit <= 0:
                return False
            claimed = q.claim(s, self.sim_card_id, self.worker_id, lease_seconds=self.s.lease_seconds, limit=limit)
            s.commit()
            claimed_at = time.monotonic()
            if not claimed:
                return False
            self._reported_while_sending.clear()
            for msg in claimed:
                self._publish_event(msg, SENDING)
            parts: dict[int, dict[int, MessagePart]] = {m.id: {} for m in claimed}
            for part in s.scalars(select(MessagePart).where(MessagePart.message_id.in_(list(parts)))):
                parts[part.message_id][part.seq] = part
            for n, msg in enumerate(claimed):
                if self.modem is None or self._stop.is_set():
                    self._release([m.id for m in claimed[n:]],
                                  "worker stopping" if self._stop.is_set() else "modem lost before sending")
                    break
                if time.monotonic() - claimed_at > self.s.lease_seconds / 3:
                    # Slow sends ahead of it in the batch: renew the lease, and
                    # never send a message whose lease somebody else reclaimed.
                    owned = q.extend_lease(s, msg.id, self.worker_id, self.s.lease_seconds)
                    s.commit()
                    if not owned:
                        log.warning("message %s was reclaimed while waiting in the batch; skipped", msg.id)
                        continue
                self._heartbeat()
                self._service_direct_now()
                if msg.id in self._reported_while_sending:
                    for part in parts[msg.id].values():
                        s.refresh(part)  # a report changed it since the batch began
                token = jsonlog.bind(message_id=msg.id)
                try:
                    self._send_message(s, msg, parts[msg.id])
                except (PortGone, ModemTimeout, SimProblem):
                    s.rollback()
                    self._release([m.id for m in claimed[n + 1:]], "modem lost before sending")
                    raise
                finally:
                    jsonlog.context.reset(token)
        return True

    def _release(self, ids: list[int], why: str) -> None:
        """Give claimed but untouched messages back to the queue at once."""
        if not ids:
            return
        with self.Session.begin() as s:
            for msg in s.scalars(select(Message).where(Message.id.in_(ids), Message.status == SENDING,
                                                       Message.worker_id == self.worker_id).with_for_update()):
                msg.worker_id = msg.lease_until = None
                msg.attempts = max(0, (msg.attempts or 1) - 1)
                q.record(s, msg, QUEUED, source=self.worker_id, detail=why)
        log.info("released %d claimed message(s): %s", len(ids), why)

    def _send_message(self, s, msg: Message, parts: dict[int, MessagePart]) -> None:
        doomed = next((parts[n] for n in sorted(parts) if _failed_by_report(parts[n])), None)
        if doomed is not None:
            # A part that left on an earlier attempt can never be delivered:
            # the rest would not make a whole message.
            self._finish(s, msg, FAILED, error_code=doomed.report_status,
                         error_text=q.report_error(doomed.report_status),
                         detail=f"status report for part {doomed.seq}; the rest not sent")
            return
        validity = None
        if msg.expires_at is not None:
            validity = max(5, int((msg.expires_at - utcnow()).total_seconds() // 60))
        try:
            pdus = pdu_codec.encode_submit(
                msg.recipient or "", msg.message or "", request_status_report=True,
                validity_minutes=validity, concat_ref=msg.id % 256,
            )
        except (pdu_codec.PduError, ValueError) as exc:
            self._finish(s, msg, FAILED, error_text=f"cannot encode: {exc}")
            return
        if msg.segments != len(pdus):
            msg.segments = len(pdus)
        # A resumed message: segments that already left are not sent again.
        pending = [seg for seg in pdus
                   if seg.seq not in parts or parts[seg.seq].status not in (q.PART_SENT, q.PART_DELIVERED)]
        lease_at = time.monotonic()
        for seg in pending:
            # Part rows through plain SQL: this is the hot path (bench/worker_throughput.py).
            if seg.seq in parts:
                part_id = parts[seg.seq].id
                _sql(s, SQL_PART_RESUBMIT, (self.sim_card_id, utcnow(), part_id))
            else:
                part_id = _sql(s, SQL_PART_SUBMIT, (msg.id, seg.seq, self.sim_card_id, utcnow())).scalar()
            s.commit()  # durable BEFORE AT+CMGS: see the module docstring
            try:
                mr = self.modem.send_pdu(seg.hex, seg.tpdu_length)
            except ModemTimeout as exc:
                if exc.submitted:
                    self._finish(s, msg, UNKNOWN, error_text=str(exc),
                                 detail="no +CMGS after the PDU was written; not resent to avoid a duplicate")
                else:
                    self._not_sent(s, msg, part_id, exc)
                raise
            except SubmitUnconfirmed as exc:
                # No reference and no +CMS/+CME after the PDU: it may have left.
                msg.lease_until = None
                self._finish(s, msg, UNKNOWN, error_text=str(exc),
                             detail="no +CMGS after the PDU was written; not resent to avoid a duplicate")
                return
            except PortGone as exc:
                self._not_sent(s, msg, part_id, exc, count_attempt=False)
                raise
            except CommandError as exc:
                self._not_sent(s, msg, part_id, exc)
                if classify_send_error(exc) == SIM_PROBLEM:
                    raise SimProblem("sim_failure", str(exc)) from exc
                return
            _sql(s, SQL_PART_SENT, (mr, utcnow(), part_id))
            self.segments_sent += 1
            if seg is pending[-1]:
                break  # committed together with the message's `sent` below
            s.commit()
            if time.monotonic() - lease_at > self.s.lease_seconds / 3:
                q.extend_lease(s, msg.id, self.worker_id, self.s.lease_seconds)
                s.commit()
                lease_at = time.monotonic()
            self._service_direct_now()  # a +CDS/+CMT must not wait for the other segments
        msg.lease_until = None
        self._finish(s, msg, SENT)
        if parts or msg.id in self._reported_while_sending:
            # Resumed, or reported while still sending: a part may have been
            # reported failed or all delivered meanwhile, and no later report
            # would say so.
            self._reported_while_sending.discard(msg.id)
            self._settle_reports(s, msg)

    def _service_direct_now(self) -> None:
        """Between segments and messages of a batch (no transaction open)."""
        if not self.direct.empty():
            self._service_direct()

    def _settle_reports(self, s, msg: Message) -> None:
        """A `sent` message whose reports came before it was: failed or delivered."""
        if self._fail_if_reported(s, msg):
            return
        delivered = s.scalar(select(func.count()).select_from(MessagePart).where(
            MessagePart.message_id == msg.id, MessagePart.status == q.PART_DELIVERED))
        if delivered >= (msg.segments or 1):
            self._finish(s, msg, DELIVERED)

    def _fail_if_reported(self, s, msg: Message) -> bool:
        """Fail `msg` if one of its parts has a final failure report."""
        doomed = s.execute(select(MessagePart.seq, MessagePart.report_status).where(
            MessagePart.message_id == msg.id, MessagePart.status == q.PART_FAILED,
            MessagePart.report_status.is_not(None)).order_by(MessagePart.report_at, MessagePart.seq).limit(1)).first()
        if doomed is None:
            return False
        seq, status = doomed
        self._finish(s, msg, FAILED, error_code=status, error_text=q.report_error(status),
                     detail=f"status report for part {seq}")
        return True

    def _not_sent(self, s, msg: Message, part_id: int, exc: Exception, count_attempt: bool = True) -> None:
        """AT+CMGS was refused (nothing left): retry later or fail for good."""
        _sql(s, SQL_PART_NOT_SENT, (part_id,))
        kind = classify_send_error(exc)
        code = exc.code if isinstance(exc, (CmsError, CmeError)) else None
        text = exc.text if isinstance(exc, (CmsError, CmeError)) else str(exc)
        if kind == PERMANENT:
            self._finish(s, msg, FAILED, error_code=code, error_text=text, detail=f"modem refused: {exc}")
            return
        if kind == SIM_PROBLEM or not count_attempt:
            msg.attempts = max(0, (msg.attempts or 1) - 1)
            delay = 0.0
        elif (msg.attempts or 0) >= self.s.max_attempts:
            self._finish(s, msg, FAILED, error_code=code, error_text=text,
                         detail=f"gave up after {msg.attempts} attempts")
            return
        else:
            delay = min(self.s.retry_base * 2 ** max(0, (msg.attempts or 1) - 1), self.s.retry_max)
        msg.worker_id = msg.lease_until = None
        msg.next_attempt_at = utcnow() + timedelta(seconds=delay)
        self._finish(s, msg, QUEUED, error_code=code, error_text=text,
                     detail=f"transient error, retry in {delay:g}s: {exc}")

    def _finish(self, s, msg: Message, state: str, **kw) -> None:
        q.record(s, msg, state, source=self.worker_id, **kw)
        s.commit()
        self._publish_event(msg, state)
        log.info("message %s %s", msg.id, state, extra={"error_code": kw.get("error_code")})

    # -- inbound and reports ---------------------------------------------------
    def _on_modem_event(self, event: ModemEvent) -> None:
        modem = self.modem
        if event.kind in ("stored_sms", "stored_report"):
            stored = modem.read_message(event.index, event.storage)
            if stored is None:
                log.warning("%s points at an empty slot", event.line)
                return
            if self._handle_pdu(stored.pdu):
                modem.delete_message(event.index, event.storage)
        elif event.kind in ("sms", "report"):
            self._record_and_ack(event)
        elif event.kind == "sim":
            if "READY" not in event.line.upper() or "NOT READY" in event.line.upper():
                state = modem.sim_state()
                if state != "ready":
                    raise SimProblem(state, f"{SIM_TEXT.get(state, state)} ({event.line})")
        elif event.kind == "storage_full":
            log.warning("SIM storage full (%s): reading and clearing it", event.line)
            self._read_stored()
        elif event.kind == "ussd":
            log.info("network-initiated USSD: %s", event.fields.get("text"))
        elif event.kind == "noise":
            if line_head(event.line) in URC_HEADS:
                log.debug("vendor status line: %s", event.line[:200])  # ^RSSI and friends, every few s
            else:
                log.info("unknown unsolicited line ignored: %r", event.line[:200])

    def _service_direct(self) -> None:
        """Record, then acknowledge, each +CMT/+CDS that came (see the module docstring)."""
        while self.modem is not None:
            try:
                event, gen = self.direct.get_nowait()
            except queue_mod.Empty:
                return
            if gen != self._generation:
                continue  # from a link since closed: unacknowledged, so the network has it still
            try:
                self._record_and_ack(event)
            except SQLAlchemyError:
                log.exception("could not record %s; not acknowledged, so the network delivers it again",
                              event.line)

    def _record_and_ack(self, event: ModemEvent) -> None:
        if event.pdu is None:
            # No AT+CNMA: the network delivers it again, whole this time.
            log.warning("truncated %s (no PDU line); not acknowledged", event.line)
            return
        self._handle_pdu(event.pdu)  # committed before the acknowledgement
        self.modem.ack()

    def _read_stored(self) -> None:
        modem = self.modem
        memories = [None]
        if modem.report_storage and modem.report_storage != modem.cpms.split(",")[0].strip('"'):
            memories.append(modem.report_storage)  # status reports a +CDSI announced while nobody listened
        for memory in memories:
            try:
                listing = modem.list_messages(4, memory)
            except CommandError as exc:
                # "SMS not ready" for a while after power-up, say: next refresh.
                log.warning("cannot list %s: %s", memory or "stored messages", exc)
                self._rescan = True
                continue
            for stored in listing:
                if stored.stat in (2, 3):
                    continue  # outgoing drafts somebody stored: not ours to delete
                if self._handle_pdu(stored.pdu):
                    modem.delete_message(stored.index, memory)

    def _handle_pdu(self, hex_pdu: str) -> bool:
        """Decode and store; True when the SIM copy may be deleted."""
        try:
            decoded = pdu_codec.decode(hex_pdu)
        except Exception as exc:  # PduError, or worse on line noise
            # Kept in the log, since no SIM slot should stay blocked by it.
            log.error("undecodable PDU dropped: %s", exc, extra={"pdu": hex_pdu[:400]})
            return True
        if isinstance(decoded, pdu_codec.Deliver):
            self._store_inbound(decoded)
            return True
        if isinstance(decoded, pdu_codec.StatusReport):
            self._apply_report(decoded)
            return True
        log.info("stored SMS-SUBMIT left alone")
        return False

    def _store_inbound(self, d) -> None:
        text = d.text if d.encoding != "8-bit" else (d.data or b"").hex()
        with self.Session() as s:
            concat = d.concat if d.concat is not None and d.concat.total > 1 else None
            segments, scts = 1, d.scts
            if concat is not None:
                if self._seen_part(s, d, concat, text):
                    s.commit()
                    log.info("part %d/%d from %s repeats one of a message already received; ignored",
                             concat.seq, concat.total, d.sender)
                    return
                s.execute(pg_insert(InboundPart).values(
                    sim_card_id=self.sim_card_id, sender=d.sender, reference=concat.ref, total=concat.total,
                    seq=concat.seq, content=text, encoding=d.encoding, sent_at=d.scts,
                ).on_conflict_do_nothing(constraint="uq_inbound_parts_key"))
                parts = s.scalars(select(InboundPart).where(
                    InboundPart.sim_card_id == self.sim_card_id, InboundPart.sender == d.sender,
                    InboundPart.reference == concat.ref, InboundPart.total == concat.total,
                ).order_by(InboundPart.seq).with_for_update()).all()
                if len({p.seq for p in parts}) < concat.total:
                    s.commit()
                    log.info("part %d/%d from %s kept until the rest arrives", concat.seq, concat.total, d.sender)
                    return
                text = "".join(p.content for p in parts)
                scts = min((p.sent_at for p in parts if p.sent_at), default=d.scts)
                segments = concat.total
                self._mark_completed(s, d.sender, concat.ref, concat.total, parts)
            duplicate = s.scalar(select(Message.id).where(
                Message.direction == "inbound", Message.sim_card_id == self.sim_card_id,
                Message.sender == d.sender, Message.sent_at == scts, Message.message == text,
            ).limit(1))
            if duplicate is not None:
                s.commit()
                log.info("duplicate inbound SMS from %s ignored (message %s)", d.sender, duplicate)
                return
            msg = Message(
                direction="inbound", status=RECEIVED, sender=d.sender, recipient=self.sim_number, message=text,
                encoding=d.encoding if d.encoding in ("GSM-7", "UCS-2") else "8-bit", segments=segments,
                sim_card_id=self.sim_card_id, sender_sim=self.sim_number, sent_at=scts,
            )
            q.record(s, msg, RECEIVED, source=self.worker_id)
            s.commit()
            self._publish_event(msg, RECEIVED, message=text)
            log.info("received message %s from %s", msg.id, d.sender)

    # A completed concatenated SMS keeps its parts in inbound_parts as markers,
    # with `total` negated: out of the way of a new message that reuses the
    # reference (the unique key includes total), and still there to recognise
    # a part delivered again (an SMSC resend, an AT+CMGD that failed after the
    # commit, a crash before it). `received_at` is then the completion time,
    # and the sweep drops markers older than inbound_duplicate_window.
    def _seen_part(self, s, d, concat, text: str) -> bool:
        return s.scalar(select(InboundPart.id).where(
            InboundPart.sim_card_id == self.sim_card_id, InboundPart.sender == d.sender,
            InboundPart.reference == concat.ref, InboundPart.total == -concat.total,
            InboundPart.seq == concat.seq, InboundPart.content == text,
            InboundPart.sent_at.is_not_distinct_from(d.scts),
        ).limit(1)) is not None

    def _mark_completed(self, s, sender: str, reference: int, total: int, parts: list[InboundPart]) -> None:
        # An older message under the same key (the reference wrapped) gives way.
        s.execute(delete(InboundPart).where(
            InboundPart.sim_card_id == self.sim_card_id, InboundPart.sender == sender,
            InboundPart.reference == reference, InboundPart.total == -total,
        ).execution_options(synchronize_session=False))
        s.execute(update(InboundPart).where(InboundPart.id.in_([p.id for p in parts])).values(
            total=-total, received_at=utcnow()).execution_options(synchronize_session=False))

    def _prune_completed_parts(self) -> None:
        cutoff = utcnow() - timedelta(seconds=self.s.inbound_duplicate_window)
        with self.Session.begin() as s:
            s.execute(delete(InboundPart).where(
                InboundPart.sim_card_id == self.sim_card_id, InboundPart.total < 0,
                InboundPart.received_at < cutoff))

    def _apply_report(self, r) -> None:
        # Plain SQL, not ORM flushes: this runs once per segment sent.
        final = r.final
        status = (q.PART_DELIVERED if r.delivered else q.PART_FAILED) if final else None
        tail = _report_tail(r.recipient)
        with self.Session() as s:
            row = _sql(s, SQL_PART_REPORT,
                       (r.status, utcnow(), status, self.sim_card_id, r.reference, tail, tail)).first()
            if row is None:
                s.commit()
                log.info("status report for unknown reference %s (TP-ST %#04x) ignored", r.reference, r.status)
                return
            message_id, seq = row
            if not final:
                s.commit()
                return
            msg = s.get(Message, message_id, with_for_update=True)
            if msg.status == QUEUED and not r.delivered:
                # Waiting to retry its other parts: this one will never arrive,
                # so neither will the whole message. Stop here.
                msg.next_attempt_at = None
                token = jsonlog.bind(message_id=msg.id)
                try:
                    self._finish(s, msg, FAILED, error_code=r.status, error_text=q.report_error(r.status),
                                 detail=f"status report for part {seq}; the rest not sent")
                finally:
                    jsonlog.context.reset(token)
                return
            if msg.status not in (SENT, EXPIRED, UNKNOWN):
                # Still sending the other parts: the part row says enough;
                # _send_message reads it when it takes the message up again,
                # or settles it once sent (a report between its segments).
                if msg.status == SENDING:
                    self._reported_while_sending.add(msg.id)
                s.commit()
                return
            token = jsonlog.bind(message_id=msg.id)
            try:
                if not r.delivered:
                    self._finish(s, msg, FAILED, error_code=r.status, error_text=q.report_error(r.status),
                                 detail=f"status report for part {seq}")
                    return
                if (msg.segments or 1) > 1:
                    if self._fail_if_reported(s, msg):
                        return
                    delivered = s.scalar(select(func.count()).select_from(MessagePart).where(
                        MessagePart.message_id == msg.id, MessagePart.status == q.PART_DELIVERED))
                    if delivered < msg.segments:
                        s.commit()
                        return
                self._finish(s, msg, DELIVERED)
            finally:
                jsonlog.context.reset(token)

    # -- commands --------------------------------------------------------------
    def _run_command(self, command: ModemCommand) -> None:
        reply = ModemCommandReply(request_id=command.request_id, ok=False)
        try:
            if command.command == "restart":
                self._lost("restart", "restart requested")
                self._next_connect = 0.0
                reply.ok = True
            elif self.modem is None:
                reply.error = f"modem offline ({self.offline_reason})"
            elif command.command == "ussd":
                code = str(command.args.get("code", ""))
                reply.result = self.modem.ussd(code, timeout=max(self.s.command_timeout, 30))
                reply.ok = True
            elif command.command == "refresh":
                self._refresh()
                reply.result = self.state().model_dump(mode="json", exclude_none=True)
                reply.ok = True
        except ValueError as exc:
            reply.error = str(exc)
        except ModemError as exc:
            reply.error = str(exc)
            self._guard(self._raise, exc)
        except SQLAlchemyError as exc:
            reply.error = "database error"
            log.warning("command %s: %s", command.command, exc)
        self.bus.publish(self.topics.command_reply(self.modem_id), reply.to_json(), qos=1)

    @staticmethod
    def _raise(exc: BaseException):
        raise exc
