"""Bringing the modem up and keeping it so: open and reopen the port,
register the modem and its SIM, refresh health, publish the retained state,
and turn modem and database failures into recovery (`guard`)."""

from __future__ import annotations

import glob
import logging
import time
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from smsgw_common import queue as message_queue
from smsgw_common.models import Modem, SimCard, utcnow
from smsgw_common.schemas import ModemState
from smsgw_worker.atmodem import ATModem, Identity, ModemEvent, sim_lock
from smsgw_worker.errors import SIM_STATE_TEXT, CommandError, ModemError, ModemTimeout, PortGone, SimProblem
from smsgw_worker.serial_link import line_head

from .context import Health, WorkerContext
from .events import DirectDelivery, DirectPending, LinkFailed, Unsolicited
from .inbox import Inbox
from .journal import PDU, JournalError
from .registry import register

log = logging.getLogger(__name__)

T = TypeVar("T")


# A modem that worked within this many seconds is looked for every
# WORKER_RECONNECT_MIN (a replug, the end of a stall is noticed at once);
# one gone longer is looked for with backoff up to WORKER_RECONNECT_MAX.
FAST_RECONNECT_WINDOW = 600.0
# Registration states in which the network takes no SMS: sending waits.
NOT_REGISTERED = ("not_registered", "searching", "denied")
SMSC_HINT = (
    'the SIM has no SMS service centre (+CMS ERROR: 330); set it once with AT+CSCA="+<number>" '
    "(the operator's SMSC); sending waits until it is set"
)


class Failure(NamedTuple):
    """Why the modem could not be brought up: the offline reason and the error."""

    reason: str
    error: str


class Lifecycle:
    # Unsolicited events about the modem's health rather than messages.
    EVENTS = frozenset({"registration", "reboot", "smsc_missing"})

    def __init__(self, ctx: WorkerContext, inbox: Inbox) -> None:
        self.ctx = ctx
        self.inbox = inbox
        self.next_connect = 0.0  # monotonic time of the next attempt to open the port
        self.backoff = ctx.settings.reconnect_min
        self.lost_at: float | None = None  # monotonic time a working link was lost
        # Set once the SIM refused MODEM_PIN or wants its PUK: the worker
        # never opens the port again until restarted with a fixed setting,
        # since every new attempt would spend one of the SIM's three tries.
        self.sim_locked_out: SimProblem | None = None
        self.smsc_missing = False
        self.paused: str | None = None  # why sending waits, as last logged

    # -- recovery ----------------------------------------------------------------
    def guard(self, step: Callable[[], T]) -> T | None:
        """Run one step; turn modem and database failures into recovery, never a crash."""
        try:
            return step()
        except Exception as exc:
            self.recover(exc)
            # A step that failed and returned is a loop that turns: with the
            # database out of reach, one iteration may wait out several timeouts.
            self.ctx.heartbeat()
            return None

    def recover(self, exc: Exception) -> None:
        if isinstance(exc, PortGone):
            self.lost("unplugged", str(exc))
        elif isinstance(exc, ModemTimeout):
            self.unresponsive(exc)
        elif isinstance(exc, SimProblem):
            self.lost(exc.reason, str(exc))
        elif isinstance(exc, CommandError) and sim_lock(exc):
            # The SIM locked itself mid-session (the modem rebooted): unlock it anew.
            self.lost(f"{sim_lock(exc)}_required", str(exc))
        elif isinstance(exc, ModemError):
            log.warning("modem error: %s", exc)
            self.ctx.last_error = str(exc)
        elif isinstance(exc, SQLAlchemyError):
            log.error("database error; will retry", exc_info=exc)
            # Whatever stayed on the SIM is read again on the next refresh.
            self.ctx.rescan = True
        else:
            # A bug must not take the modem offline for good: log it, carry on
            # (the timers bound how often it can repeat).
            log.error("unexpected error in the worker loop", exc_info=exc)

    # -- connecting ----------------------------------------------------------------
    def connect(self) -> bool:
        ctx = self.ctx
        if self.sim_locked_out is not None:
            return self.offline(self.sim_locked_out.reason, str(self.sim_locked_out))
        ctx.generation += 1
        generation = ctx.generation
        failure = Failure("port_unavailable", f"cannot open {ctx.device_pattern}: no device matches it")
        for path in self.device_candidates():
            up = self._bring_up(path, generation)
            if not isinstance(up, Failure):
                break
            failure = up
            if self.sim_locked_out is not None:
                return self.offline(*failure)  # never tried again, on whatever path
        else:
            return self.offline(*failure)
        modem, identity = up
        ctx.device = modem.device
        ctx.identity = identity
        ctx.modem = modem
        try:
            register(ctx, identity)
            # Online, but without +CNMI (say): the health says what is missing.
            ctx.last_error = modem.setup_problem or self.polling_note(modem)
            if modem.smsc() == "":
                self.smsc_missing = True
                ctx.last_error = SMSC_HINT
            ctx.rescan = True  # read what arrived while nobody listened
            self.refresh()
        except SQLAlchemyError as exc:
            log.exception("database unavailable during start-up")
            ctx.modem = None
            modem.close()
            return self.offline("database_unavailable", str(exc).splitlines()[0])
        except Exception as exc:
            if not isinstance(exc, ModemError):
                log.exception("unexpected error while bringing the modem up")
            ctx.modem = None
            modem.close()
            return self.offline(getattr(exc, "reason", "init_failed"), str(exc))
        self.backoff = ctx.settings.reconnect_min
        self.lost_at = None
        ctx.started.set()
        log.info("modem %s online on %s (%s %s)", ctx.modem_id, ctx.device, identity.manufacturer, identity.model)
        return True

    def device_candidates(self) -> list[str]:
        """The paths to try: MODEM_DEVICE itself, or what its glob matches
        now (the last path that worked first)."""
        ctx = self.ctx
        pattern = ctx.device_pattern
        if not glob.has_magic(pattern):
            return [pattern]
        found = sorted(glob.glob(pattern))
        if ctx.device in found:
            found.remove(ctx.device)
            found.insert(0, ctx.device)
        return found

    def _bring_up(self, path: str, generation: int) -> tuple[ATModem, Identity] | Failure:
        """Open, set up and identify the modem on `path`: (modem, identity),
        or (offline reason, error) with the port closed again."""
        ctx, settings = self.ctx, self.ctx.settings
        modem = ATModem(
            path,
            pin=settings.pin,
            baudrate=settings.baudrate,
            command_timeout=settings.command_timeout,
            send_timeout=settings.send_timeout,
            submit_timeout=settings.submit_timeout,
            send_probe_after=settings.send_probe_after,
            sim_busy_timeout=settings.sim_busy_timeout,
            sms_ready_timeout=settings.sms_ready_timeout,
            direct_delivery=settings.direct_delivery,
            on_event=lambda event: self._modem_event(event, generation),
            on_fatal=lambda exc: ctx.events.put(LinkFailed(exc, generation)),
        )
        try:
            modem.open()
            modem.init()
            identity = modem.identity()
        except PortGone as exc:
            modem.close()
            return Failure("port_unavailable", str(exc))
        except ModemTimeout as exc:
            modem.close()
            return Failure("not_responding", str(exc))
        except SimProblem as exc:
            modem.close()
            if exc.reason in ("pin_rejected", "puk_required"):
                self.sim_locked_out = exc
            return Failure(exc.reason, str(exc))
        except Exception as exc:  # ModemError, or a bug: retried with backoff either way
            if not isinstance(exc, ModemError):
                log.exception("unexpected error while bringing the modem up")
            modem.close()
            return Failure("init_failed", str(exc))
        expected = self._expected_imei()
        if glob.has_magic(ctx.device_pattern) and expected and identity.imei and identity.imei != expected:
            # Another modem matches the glob: its SIM is not this worker's to use.
            modem.close()
            log.warning("%s holds modem IMEI %s, not this worker's %s: left alone", path, identity.imei, expected)
            return Failure(
                "port_unavailable", f"cannot open {path} as this modem: it holds another (IMEI {identity.imei})"
            )
        return (modem, identity)

    def _expected_imei(self) -> str | None:
        """The IMEI this worker's modem had: from this run, else as registered."""
        ctx = self.ctx
        if ctx.identity is not None and ctx.identity.imei:
            return ctx.identity.imei
        try:
            with ctx.Session() as session:
                row = session.get(Modem, ctx.modem_id)
                return row.imei if row is not None else None
        except SQLAlchemyError:
            return None

    # -- what the modem says about itself ------------------------------------------
    def on_modem_event(self, event: ModemEvent) -> None:
        ctx = self.ctx
        modem = ctx.require_modem()
        if event.kind == "registration":
            state = event.fields.get("state")
            if event.fields.get("domain") == "+CGREG":
                # Packet domain only: SMS goes over circuit switching (or IMS) all the same.
                log.info("packet registration: %s (%s)", state, event.line)
                return
            if isinstance(state, str) and state != ctx.health.registration:
                log.warning("registration now %s (%s)", state, event.line)
                ctx.health.registration = state
                self.mark_modem_row(online=True)
                self.publish_state()
                if state not in NOT_REGISTERED:
                    ctx.want_claim = True
        elif event.kind == "smsc_missing":
            if not self.smsc_missing:
                log.error("%s (%s)", SMSC_HINT, event.line)
            self.smsc_missing = True
            ctx.last_error = SMSC_HINT
            self.mark_modem_row(online=True)
            self.publish_state()
        elif event.kind == "reboot" and modem.settings_lost():
            log.warning("the modem restarted on its own (%s): setting it up again", event.line)
            modem.init()
            ctx.rescan = True  # what arrived while it was rebooting
            ctx.want_claim = True
            self.refresh()

    def may_send(self) -> bool:
        """False while the network or the SIM cannot take an SMS: the queue
        waits instead of spending attempts on +CMS ERROR 330/331."""
        registration = self.ctx.health.registration
        reason = (
            f"registration {registration}"
            if registration in NOT_REGISTERED
            else "no SMSC"
            if self.smsc_missing
            else None
        )
        if reason != self.paused:
            if reason:
                log.warning("sending paused: %s", reason)
            elif self.paused:
                log.info("sending resumed (was: %s)", self.paused)
            self.paused = reason
        return reason is None

    def polling_note(self, modem: ATModem) -> str | None:
        if not modem.polling_only:
            return None
        return (
            f"the modem takes no AT+CNMI (no +CMTI, no status reports): stored messages are listed "
            f"every {self.ctx.settings.poll_interval:g}s (MODEM_POLL_INTERVAL)"
        )

    def connect_failed(self) -> None:
        now = time.monotonic()
        if self.lost_at is not None and now - self.lost_at < FAST_RECONNECT_WINDOW:
            # It worked a moment ago: most faults (a stall, a replug) end
            # within seconds, and an attempt costs one open() or a few ATs.
            self.next_connect = now + self.ctx.settings.reconnect_min
            return
        self.next_connect = now + self.backoff
        self.backoff = min(self.backoff * 2, self.ctx.settings.reconnect_max)

    def _modem_event(self, event: ModemEvent, generation: int) -> None:
        """Serial reader thread: enqueue only."""
        if event.kind in ("sms", "report"):
            # Journaled here, as read: the only copy there is (nothing on
            # the SIM), and the loop may not get to it before a crash.
            entry = None
            if event.pdu is not None:
                try:
                    entry = self.ctx.journal.append(
                        PDU, pdu=event.pdu, origin=line_head(event.line), sim_card_id=self.ctx.sim_card_id
                    )
                except JournalError:
                    log.exception("cannot journal %s", event.line)
            self.ctx.direct.put(DirectDelivery(event, generation, entry))
            self.ctx.events.put(DirectPending())
        else:
            self.ctx.events.put(Unsolicited(event, generation))

    def offline(self, reason: str, error: str) -> bool:
        ctx = self.ctx
        if reason != ctx.offline_reason or error != ctx.last_error:
            log.warning("modem %s offline (%s): %s", ctx.modem_id, reason, error)
        ctx.offline_reason, ctx.last_error = reason, error
        try:
            self.mark_modem_row(online=False)
        except SQLAlchemyError:
            log.warning("could not record the modem offline in the database")
        self.publish_state()
        return False

    def lost(self, reason: str, error: str) -> None:
        ctx = self.ctx
        modem, ctx.modem = ctx.modem, None
        ctx.generation += 1  # events of the old link are stale from now on
        if modem is not None:
            modem.close()
        self.next_connect = time.monotonic() + ctx.settings.reconnect_min
        self.backoff = ctx.settings.reconnect_min
        if self.lost_at is None:
            self.lost_at = time.monotonic()
        self.offline(reason, error)

    def unresponsive(self, exc: ModemTimeout) -> None:
        """A command went unanswered. If a bare AT gets through (the modem
        lost one answer, or answered a liveness probe), set it up again and
        go on; otherwise close the port and look for it every
        WORKER_RECONNECT_MIN (connect), so sending resumes within seconds
        of the stall's end. No ATZ or AT+CFUN=1,1 here: a modem that does
        not answer AT does not answer those either, and one that merely
        queues its input would run them after the stall and reboot."""
        log.warning("modem stopped answering: %s", exc)
        modem = self.ctx.modem
        if modem is None:
            return
        try:
            modem.sync(attempts=2)
            modem.init()
        except ModemError as err:
            log.warning("no answer to AT either (%s): reopening the port", err)
            self.lost("not_responding", str(exc))
            return
        log.info("the modem answers again; set up anew")
        self.ctx.rescan = True  # what arrived while it did not answer
        self.ctx.want_claim = True

    def shutdown(self) -> None:
        ctx = self.ctx
        log.info("worker stopping")
        ctx.offline_reason = "shutdown"
        try:
            self.mark_modem_row(online=False)
        except SQLAlchemyError:
            log.exception("could not mark the modem offline in the database")
        self.publish_state()
        if ctx.modem is not None:
            ctx.modem.close()
            ctx.modem = None
        time.sleep(0.2)  # let paho flush the retained offline state
        ctx.bus.stop()
        ctx.engine.dispose()

    # -- the modem's row ---------------------------------------------------------
    def mark_modem_row(self, online: bool) -> None:
        ctx = self.ctx
        values: dict[str, object] = {
            "online": online,
            "last_error": ctx.last_error,
            "journal_backlog": ctx.journal.count(),
        }
        if online:
            values.update(
                last_seen_at=utcnow(),
                signal_quality=ctx.health.signal_quality,
                signal_rssi=ctx.health.signal_dbm,
                registration=ctx.health.registration,
                operator=ctx.health.operator,
            )
        with ctx.Session.begin() as session:
            session.execute(update(Modem).where(Modem.id == ctx.modem_id).values(**values))

    # -- health ------------------------------------------------------------------
    def refresh(self) -> None:
        ctx = self.ctx
        modem = ctx.require_modem()
        sim = modem.sim_state()
        if sim != "ready":
            raise SimProblem(sim, SIM_STATE_TEXT.get(sim, f"SIM state {sim}"))
        signal = modem.signal()
        ctx.health = Health(
            signal_quality=signal.quality,
            signal_dbm=signal.dbm,
            registration=modem.registration(),
            operator=modem.operator(),
        )
        if self.smsc_missing and modem.smsc():
            log.info("the SIM has an SMS service centre again: sending resumes")
            self.smsc_missing = False
            if ctx.last_error == SMSC_HINT:
                ctx.last_error = modem.setup_problem or self.polling_note(modem)
            ctx.want_claim = True
        if modem.setup_problem is not None:
            # "SMS not ready" outlasted init (or +CNMI was never accepted): try again.
            before = modem.setup_problem
            if modem.setup_sms(timeout=0) is None:
                log.info("SMS setup complete (cnmi %s)", modem.cnmi)
                ctx.rescan = True  # what came while there were no +CMTI
            if ctx.last_error in (None, before):
                ctx.last_error = modem.setup_problem
        try:
            self.mark_modem_row(online=True)
        except SQLAlchemyError:
            # Postgres away (or the WAN to it): the broker may still be
            # there, and its dashboards hear the modem and its journal's backlog.
            self.publish_state()
            raise
        usage = modem.storage_usage()
        reports = modem.report_storage_usage() if modem.report_storage else None
        if ctx.rescan or (usage and usage.used > 0) or (reports and reports.used > 0):
            # A missed +CMTI, a full SIM or a database hiccup left messages there.
            ctx.rescan = False
            self.inbox.read_stored()
        if ctx.health.operator:
            with ctx.Session.begin() as session:
                session.execute(
                    update(SimCard)
                    .where(SimCard.id == ctx.sim_card_id)
                    .values(operator=ctx.health.operator, last_seen_at=utcnow())
                )
        self.publish_state()

    def state(self) -> ModemState:
        ctx = self.ctx
        identity = ctx.identity or Identity()
        online = ctx.modem is not None and ctx.offline_reason is None
        depth = None
        try:
            with ctx.Session() as session:
                depth = message_queue.queue_depth(session, ctx.sim_card_id)
        except SQLAlchemyError:
            pass
        health = ctx.health
        return ModemState(
            modem_id=ctx.modem_id,
            online=online,
            ts=utcnow(),
            sim_card_id=ctx.sim_card_id,
            iccid=identity.iccid,
            imsi=identity.imsi,
            imei=identity.imei,
            number=ctx.sim_number,
            manufacturer=identity.manufacturer,
            model=identity.model,
            firmware=identity.firmware,
            device_path=ctx.device,
            operator=health.operator,
            registration=health.registration,
            signal_quality=health.signal_quality,
            signal_dbm=health.signal_dbm,
            queue_depth=depth,
            last_error=ctx.last_error,
            reason=None if online else ctx.offline_reason,
            node=ctx.settings.node,
            site=ctx.settings.site,
            journal_backlog=ctx.journal.count(),
        )

    def publish_state(self) -> None:
        self.ctx.bus.publish(self.ctx.topics.state(self.ctx.modem_id), self.state().to_json(), qos=1, retain=True)
