"""The sweeper: nothing waits on a dead modem, nothing stays pending forever.

Runs in the events leader only (pipeline/runner.py), every SWEEP_INTERVAL_SECONDS
and at once when a modem goes offline:

1. leases of crashed workers run out -> back to `queued` (or `unknown` when a
   segment may have left), via `queue.reclaim_expired_leases`;
2. queued messages past `expires_at`, and sent ones without a delivery report
   after REPORT_TIMEOUT seconds -> `expired`, via `queue.expire_due`; queued
   ones without `expires_at` DEFAULT_VALIDITY_HOURS after they were due ->
   `expired` ("not sent within its validity"); SIMs whose modem has been
   offline for SIM_ABSENT_HOURS -> `inactive`, and `active` again once a
   worker sees them (unless an admin changed them meanwhile);
3. due queued messages whose SIM cannot send (inactive, no modem, modem
   offline, or a limit used up) move to the least loaded SIM that can, unless
   the client pinned the SIM: then they wait, or fail with the reason when the
   client asked for `on_unavailable: "fail"`; a message bound to a site moves
   only within it;
4. queues of the SIMs that can send are evened out (unpinned messages move
   from the longest queue to the shortest, within a site), so that no modem
   idles while another still has a backlog. Steps 3 and 4: pipeline/rerouting.py.

Every change is recorded in the message's history first, then published as a
message event (so browsers and webhooks see it) with an outbox wake-up for the
new modem.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import func, select

from smsgw_api.core.runtime import Runtime
from smsgw_api.domain.capacity import Hold, Move
from smsgw_api.domain.routing import Router
from smsgw_api.pipeline.loop import WakeableLoop
from smsgw_api.pipeline.rerouting import (
    BATCH,
    SOURCE,
    Room,
    Sites,
    Wakeup,
    rebalance,
    reroute_stuck,
    unavailable_sims,
)
from smsgw_common import queue as q
from smsgw_common.db import session_scope
from smsgw_common.models import (
    EXPIRED,
    QUEUED,
    SENDING,
    SENT,
    Log,
    Message,
    Modem,
    SimCard,
    utcnow,
)
from smsgw_common.schemas import MessageEventPayload, OutboxWakeup

log = logging.getLogger(__name__)


class Sweeper(WakeableLoop):
    thread_name = "sweeper"

    def __init__(self, runtime: Runtime, router: Router):
        super().__init__(runtime.pipeline.sweep_interval)
        self.runtime = runtime
        self.router = router

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                sweep_once(self.runtime, self.router)
                self.round_done()
            except Exception:
                log.exception("sweep failed")
            self._wake.wait(self.period)
            self._wake.clear()


def sweep_once(runtime: Runtime, router: Router, now: datetime | None = None) -> dict:
    s = runtime.pipeline
    now = now or utcnow()
    events: list[Message] = []
    wakeups: list[Wakeup] = []
    moves: list[Move] = []
    counts = {"requeued": 0, "unknown": 0, "expired": 0, "rerouted": 0, "failed": 0, "rebalanced": 0}
    holds: list[Hold] = []  # room taken in the Redis counters for the moves
    try:
        with session_scope(runtime.sessionmaker) as session:
            room = Room(router, session, holds)
            # 0. rows whose dates Python cannot read: failed, so nothing below trips on them
            quarantined = q.quarantine_unreadable(session, source=SOURCE, now=now)
            if quarantined:
                counts["failed"] += len(quarantined)
                session.flush()
                events += session.scalars(select(Message).where(Message.id.in_([i for i, _ in quarantined]))).all()

            # 1. leases
            lapsed = session.scalars(
                select(Message.id).where(Message.status == SENDING, Message.lease_until < now).limit(BATCH)
            ).all()
            if lapsed:
                c = q.reclaim_expired_leases(session, source=SOURCE, now=now)
                counts["requeued"], counts["unknown"] = c[QUEUED], c["unknown"]
                session.flush()
                events += session.scalars(
                    select(Message).where(Message.id.in_(lapsed), Message.status != SENDING)
                ).all()

            # 2. validity and missing reports
            due = session.scalars(
                select(Message.id)
                .where(
                    ((Message.status == QUEUED) & Message.expires_at.is_not(None) & (Message.expires_at <= now))
                    | ((Message.status == SENT) & (Message.sent_at < now - s.report_timeout))
                )
                .limit(2000)
            ).all()
            if due:
                c = q.expire_due(session, report_timeout=s.report_timeout, source=SOURCE, now=now)
                counts["expired"] = c["validity"] + c["no_report"]
                session.flush()
                events += session.scalars(select(Message).where(Message.id.in_(due), Message.status == EXPIRED)).all()

            # 2b. no message waits forever; SIMs of long-gone modems stop taking work
            overdue = expire_past_default_validity(session, s.default_validity, now)
            events += overdue
            counts["expired"] += len(overdue)
            sims_changed = retire_absent_sims(session, s.sim_absent_after, now) + revive_returning_sims(session, now)

            # 3. reroute or fail what waits on a SIM that cannot send
            sims = session.execute(select(SimCard, Modem.online).outerjoin(Modem, Modem.id == SimCard.modem_id)).all()
            unavailable = unavailable_sims(session, sims)
            sites = Sites.load(session)
            if unavailable:
                rerouted, failed = reroute_stuck(session, room, unavailable, sims, now, events, wakeups, moves, sites)
                counts["rerouted"] += rerouted
                counts["failed"] += failed
            # 4. keep every modem busy: even out the queues of the SIMs that can send, site by site
            counts["rebalanced"] = rebalance(session, room, sims, unavailable, now, events, wakeups, moves, sites)
    except BaseException:
        router.release(holds)  # nothing moved: the room it took is free again
        raise

    # Committed: the moved segments count for their new SIMs in Redis too, as in Postgres.
    router.moved(moves)
    if sims_changed:
        router.invalidate()
    _publish(runtime, events, wakeups, now)
    if any(counts.values()):
        log.info("sweep", extra={"counts": counts})
    return counts


VALIDITY_DETAIL = "not sent within its validity"


def expire_past_default_validity(session, validity: timedelta | None, now: datetime) -> list[Message]:
    """Queued messages the client gave no `expires_at` expire DEFAULT_VALIDITY_HOURS
    after they were due (created, or their `send_at`): without a SIM that can
    send, they would otherwise wait forever."""
    if validity is None:
        return []
    overdue = session.scalars(
        select(Message)
        .where(
            Message.status == QUEUED,
            Message.direction == "outbound",
            Message.expires_at.is_(None),
            func.coalesce(Message.send_at, Message.timestamp) <= now - validity,
        )
        .order_by(Message.id)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    hours = f"{validity.total_seconds() / 3600:g} h"
    for msg in overdue:
        q.record(
            session,
            msg,
            EXPIRED,
            source=SOURCE,
            at=now,
            error_text=VALIDITY_DETAIL,
            detail=f"{VALIDITY_DETAIL} ({hours}, DEFAULT_VALIDITY_HOURS)",
        )
    return list(overdue)


# The audit rows that mark a SIM the sweeper set inactive, and an admin's edit
# (routes/simcards.py) that overrides it: only the sweeper's own retirement is
# undone when the SIM is seen again.
ABSENT_ACTION = "sim_absent"


def _absent_marker(sim_id: int) -> str:
    return f"sim_card_id={sim_id}:"


def retire_absent_sims(session, absent_after: timedelta | None, now: datetime) -> int:
    """Active SIMs whose modem has been offline longer than SIM_ABSENT_HOURS
    become inactive (routing then says so instead of queueing on them)."""
    if absent_after is None:
        return 0
    gone = session.execute(
        select(SimCard, Modem.last_seen_at)
        .join(Modem, Modem.id == SimCard.modem_id)
        .where(
            SimCard.status == "active",
            Modem.online.is_(False),
            func.coalesce(Modem.last_seen_at, SimCard.last_seen_at, Modem.created_at) < now - absent_after,
        )
        .with_for_update(of=SimCard, skip_locked=True)
    ).all()
    for sim, seen in gone:
        sim.status = "inactive"
        session.add(
            Log(
                action=ABSENT_ACTION,
                details=f"{_absent_marker(sim.id)} modem {sim.modem_id} gone since {seen or 'ever'}; "
                "inactive until the SIM is seen again",
                sender_sim=sim.number,
                actor=SOURCE,
                timestamp=now,
            )
        )
        log.warning("SIM %s set inactive: its modem %s has been gone since %s", sim.id, sim.modem_id, seen)
    return len(gone)


def revive_returning_sims(session, now: datetime) -> int:
    """A SIM the sweeper retired is active again once a worker has seen it
    (its ICCID) after that, unless an admin changed it since."""
    back = session.scalars(
        select(SimCard)
        .join(Modem, Modem.id == SimCard.modem_id)
        .where(SimCard.status == "inactive", Modem.online.is_(True), SimCard.last_seen_at.is_not(None))
    ).all()
    revived = 0
    for sim in back:
        latest = session.execute(
            select(Log.action, Log.timestamp)
            .where(
                ((Log.action == ABSENT_ACTION) & Log.details.startswith(_absent_marker(sim.id)))
                | ((Log.action == "update_sim_card") & Log.details.startswith(f"updated SIM card {sim.id}:"))
            )
            .order_by(Log.id.desc())
            .limit(1)
        ).first()
        if latest is None or latest.action != ABSENT_ACTION or sim.last_seen_at <= latest.timestamp:
            continue
        sim.status = "active"
        session.add(
            Log(
                action="sim_returned",
                details=f"SIM {sim.id} seen again in modem {sim.modem_id}; active again",
                sender_sim=sim.number,
                actor=SOURCE,
                timestamp=now,
            )
        )
        revived += 1
    return revived


def _publish(runtime: Runtime, events: list[Message], wakeups: list[Wakeup], now: datetime) -> None:
    if not events and not wakeups:
        return
    topics = runtime.topics
    client = runtime.bus
    for msg in events:
        payload = MessageEventPayload(
            message_id=msg.id,
            state=msg.status,
            direction="outbound",
            at=now,
            sim_card_id=msg.sim_card_id,
            recipient=msg.recipient,
            segments=msg.segments,
            error_code=msg.error_code,
            error_text=msg.error_text,
        )
        client.publish(topics.message_events(), payload.to_json(), qos=1)
    # One wake-up per modem is enough: a woken worker claims all it can.
    for modem_id, message_id in dict(reversed(wakeups)).items():
        if modem_id is None:  # a SIM in no modem: nobody to wake
            continue
        client.publish(topics.outbox(modem_id), OutboxWakeup(message_id=message_id).to_json(), qos=1)
