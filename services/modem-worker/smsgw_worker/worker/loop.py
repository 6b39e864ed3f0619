"""The worker loop: one thread runs every step that touches the modem or the
database, in order; the serial reader and the MQTT client only enqueue
(events.py). So a +CMTI/+CDSI that arrives in the middle of a send waits
until that batch is done, and no two commands ever race."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from smsgw_common import selfstats
from smsgw_common.schemas import ModemCommand, OutboxWakeup, parse
from smsgw_worker.atmodem import ATModem
from smsgw_worker.settings import WorkerSettings

from .commands import Commands
from .context import WorkerContext
from .events import (
    CommandReceived,
    DirectPending,
    LinkFailed,
    LoopEvent,
    MqttConnected,
    Stop,
    Unsolicited,
    Wakeup,
)
from .inbox import Inbox
from .lifecycle import Lifecycle
from .outbox import Outbox
from .replay import Replay
from .reports import Reports
from .sweep import Sweep

log = logging.getLogger(__name__)

REPLAY_INTERVAL = 1.0  # seconds between tries while the database is away


@dataclass
class Timers:
    """Monotonic times at which each periodic step is next due."""

    claim: float = 0.0
    refresh: float = 0.0
    sweep: float = 0.0
    poll: float = 0.0
    replay: float = 0.0
    rescan: float = 0.0


class Worker:
    def __init__(self, settings: WorkerSettings, *, device: str | None = None) -> None:
        device = device or settings.device
        if device is None:
            raise ValueError("no modem device: set MODEM_DEVICE or pass one")
        self.context = ctx = WorkerContext(settings, device)
        self.reports = Reports(ctx)
        self.inbox = Inbox(ctx, self.reports)
        self.lifecycle = Lifecycle(ctx, self.inbox)
        self.outbox = Outbox(ctx, self.inbox, self.reports)
        self.commands = Commands(ctx, self.lifecycle)
        self.sweep = Sweep(ctx, self.inbox)
        self.replay = Replay(ctx, self.outbox, self.inbox, self.reports)
        self.journal_full_logged = False
        ctx.bus.subscribe(ctx.topics.outbox(ctx.modem_id), self._on_outbox)
        ctx.bus.subscribe(ctx.topics.command(ctx.modem_id), self._on_command)

    # What tests, the bench and __main__ look at.
    @property
    def events(self) -> queue.Queue[LoopEvent]:
        return self.context.events

    @property
    def started(self) -> threading.Event:
        return self.context.started

    @property
    def modem(self) -> ATModem | None:
        return self.context.modem

    @property
    def last_error(self) -> str | None:
        return self.context.last_error

    # -- MQTT callbacks (paho thread: enqueue only) --------------------------
    def _on_outbox(self, topic: str, payload: bytes) -> None:
        wake = parse(OutboxWakeup, payload)
        if wake is not None:
            self.context.events.put(Wakeup(wake.message_id))

    def _on_command(self, topic: str, payload: bytes) -> None:
        command = parse(ModemCommand, payload)
        if command is not None:
            self.context.events.put(CommandReceived(command))

    # -- the loop ----------------------------------------------------------------
    def stop(self) -> None:
        self.context.stopping.set()
        self.context.events.put(Stop())

    def run(self) -> None:
        ctx, settings, lifecycle = self.context, self.context.settings, self.lifecycle
        ctx.bus.start()
        # Own RSS/CPU for the stats collector's "components" (docs/observability.md).
        reporter = selfstats.start(ctx.bus, ctx.topics, f"modem-worker-{ctx.modem_id}"[:64])
        timers = Timers()
        try:
            while not ctx.stopping.is_set():
                ctx.heartbeat()
                now = time.monotonic()
                # First, before the modem: what the journal holds and what this
                # worker claimed before (a restart, a database outage).
                if self.replay.due and now >= timers.replay:
                    ok = self.replay.run()
                    # A long backlog goes on at once; a database still away, in a second.
                    timers.replay = now + (0.0 if ok else REPLAY_INTERVAL)
                    if ok:
                        ctx.want_claim = True
                if ctx.modem is None and now >= lifecycle.next_connect:
                    if lifecycle.connect():
                        timers.refresh = now + settings.refresh_interval
                        ctx.want_claim = True
                    else:
                        lifecycle.connect_failed()
                if ctx.modem is not None:
                    if now >= timers.refresh:
                        timers.refresh = now + settings.refresh_interval
                        lifecycle.guard(lifecycle.refresh)
                    if ctx.modem is not None and ctx.rescan and now >= timers.rescan:
                        # What stayed in the modem's storage because the database
                        # could not take it (or storage was not ready) is read
                        # again within a second, not at the next refresh.
                        timers.rescan = now + REPLAY_INTERVAL
                        ctx.rescan = False
                        lifecycle.guard(self.inbox.read_stored)
                    if ctx.modem is not None and ctx.modem.polling_only and now >= timers.poll:
                        timers.poll = now + settings.poll_interval
                        lifecycle.guard(self.inbox.read_stored)
                    if now >= timers.claim:
                        timers.claim = now + settings.claim_interval
                        ctx.want_claim = True
                    claiming = ctx.want_claim and ctx.modem is not None and not ctx.stopping.is_set()
                    claiming = claiming and lifecycle.may_send() and self._journal_has_room()
                    # Claims of a batch cut short are settled by the replay
                    # step at once, not at lease expiry.
                    claiming = claiming and not self.replay.claims_due
                    if claiming:
                        done = lifecycle.guard(self.outbox.send_batch)
                        if done is None:
                            self.replay.claims_due = True
                        elif not done:
                            ctx.want_claim = False
                if now >= timers.sweep:
                    timers.sweep = now + settings.sweep_interval
                    self.sweep.run()
                busy = ctx.want_claim and ctx.modem is not None and not self.replay.due
                deadlines = [timers.sweep] + ([timers.claim, timers.refresh] if ctx.modem else [lifecycle.next_connect])
                if self.replay.due:
                    deadlines.append(timers.replay)
                if ctx.modem is not None and ctx.modem.polling_only:
                    deadlines.append(timers.poll)
                if ctx.modem is not None and ctx.rescan:
                    deadlines.append(timers.rescan)
                self._drain(0 if busy else max(0.0, min(deadlines) - time.monotonic()))
        finally:
            reporter.stop()
            lifecycle.shutdown()
            ctx.journal.close()

    def _journal_has_room(self) -> bool:
        """Past its bound the journal takes no new sends: better a queue that
        waits than a fact with nowhere to go (docs/reliability.md)."""
        full = self.context.journal.full
        if full and not self.journal_full_logged:
            log.error(
                "outcome journal %s holds %d bytes (bound %d) not yet in the database: sending paused",
                self.context.journal.path,
                self.context.journal.size,
                self.context.journal.max_bytes,
            )
        elif not full and self.journal_full_logged:
            log.info("outcome journal below its bound again: sending resumes")
        self.journal_full_logged = full
        return not full

    def _drain(self, timeout: float) -> None:
        events = self.context.events
        try:
            item = events.get(timeout=timeout) if timeout > 0 else events.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(item)
            if self.context.stopping.is_set():
                return
            try:
                item = events.get_nowait()
            except queue.Empty:
                return

    def _handle(self, item: LoopEvent) -> None:
        ctx, lifecycle = self.context, self.lifecycle
        if isinstance(item, Unsolicited):
            if item.generation == ctx.generation and ctx.modem is not None:
                if item.event.kind in Lifecycle.EVENTS:
                    lifecycle.guard(lambda: lifecycle.on_modem_event(item.event))
                else:
                    lifecycle.guard(lambda: self.inbox.on_unsolicited(item.event))
        elif isinstance(item, LinkFailed):
            if item.generation == ctx.generation and ctx.modem is not None:
                lifecycle.lost("unplugged", str(item.error))
        elif isinstance(item, DirectPending):
            # Even while the port is being reopened: what was read is recorded.
            lifecycle.guard(self.inbox.service_direct)
        elif isinstance(item, Wakeup):
            ctx.want_claim = True
        elif isinstance(item, CommandReceived):
            self.commands.run(item.command)
        elif isinstance(item, MqttConnected):
            # A broker restart loses nothing retained, but a fresh broker does.
            lifecycle.publish_state()
            ctx.want_claim = True
