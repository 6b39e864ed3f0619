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
   client asked for `on_unavailable: "fail"`;
4. queues of the SIMs that can send are evened out (unpinned messages move
   from the longest queue to the shortest), so that no modem idles while
   another still has a backlog.

Every change is recorded in the message's history first, then published as a
message event (so browsers and webhooks see it) with an outbox wake-up for the
new modem.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Row, func, select, text

from smsgw_api.core.runtime import Runtime
from smsgw_api.domain.capacity import Hold, Move, Sim, Usage, has_capacity, usage_of
from smsgw_api.domain.routing import Router, SimFull
from smsgw_api.pipeline.loop import WakeableLoop
from smsgw_common import queue as q
from smsgw_common.db import session_scope
from smsgw_common.models import (
    EXPIRED,
    FAILED,
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

SOURCE = "sweeper"
BATCH = 500


@dataclass
class Target:
    """A SIM that can take rerouted work, with routing's view of it."""

    sim: SimCard
    routing: Sim
    usage: Usage | None  # None: nothing counted yet
    queued: int  # segments queued or sending on it


class Wakeup(NamedTuple):
    modem_id: str | None
    message_id: int


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


# Segments a SIM actually handed to its modem, per window, as carriers count.
_SPENT_SQL = text(
    "SELECT sim_card_id, "
    "coalesce(sum(segments) FILTER (WHERE sending_at >= now() - interval '1 minute'), 0) AS minute, "
    "coalesce(sum(segments) FILTER "
    "(WHERE sending_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), 0) AS day, "
    "coalesce(sum(segments), 0) AS month "
    "FROM messages WHERE direction = 'outbound' AND sim_card_id = ANY(:ids) AND sending_at IS NOT NULL "
    "AND sending_at >= "
    "least(date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', now() - interval '1 minute') "
    "GROUP BY sim_card_id"
)


def _unavailable_sims(session, sims: Sequence[Row[SimCard, bool]]) -> dict[int, str]:
    """SIM id -> why it cannot send now."""
    out: dict[int, str] = {}
    limited = [
        sim.id
        for sim, online in sims
        if any(v is not None for v in (sim.limit_per_minute, sim.limit_per_day, sim.limit_per_month))
    ]
    spent = {r.sim_card_id: r for r in session.execute(_SPENT_SQL, {"ids": limited})} if limited else {}
    for sim, online in sims:
        if sim.status != "active":
            out[sim.id] = f"SIM {sim.id} is {sim.status}"
        elif sim.modem_id is None:
            out[sim.id] = f"SIM {sim.id} is in no modem"
        elif not online:
            out[sim.id] = f"SIM {sim.id}'s modem {sim.modem_id} is offline"
        elif sim.id in spent:
            used = spent[sim.id]
            for name, limit, value in (
                ("minute", sim.limit_per_minute, used.minute),
                ("day", sim.limit_per_day, used.day),
                ("month", sim.limit_per_month, used.month),
            ):
                if limit is not None and value >= limit:
                    out[sim.id] = f"SIM {sim.id} reached its limit of {limit} segments per {name}"
                    break
    return out


def _targets(session, sims: Sequence[Row[SimCard, bool]], unavailable: dict[int, str]) -> list[Target]:
    """SIMs that can take rerouted work, with the routing's own view of their
    load and usage (queued segments count, as when routing a new message)."""
    ready = [
        (sim, bool(online)) for sim, online in sims if sim.id not in unavailable and sim.status == "active" and online
    ]
    conn = session.connection()
    usage = usage_of(conn, [sim.id for sim, _ in ready])
    queued = dict(
        session.execute(
            select(Message.sim_card_id, func.coalesce(func.sum(Message.segments), 0))
            .where(Message.status.in_((QUEUED, SENDING)))
            .group_by(Message.sim_card_id)
        ).all()
    )
    out = []
    for sim, online in ready:
        out.append(
            Target(
                sim=sim,
                routing=Sim(
                    id=sim.id,
                    number=sim.number,
                    status=sim.status,
                    modem_id=sim.modem_id,
                    online=online,
                    limit_per_minute=sim.limit_per_minute,
                    limit_per_day=sim.limit_per_day,
                    limit_per_month=sim.limit_per_month,
                ),
                usage=usage.get(sim.id),
                queued=int(queued.get(sim.id, 0)),
            )
        )
    return out


class Room:
    """Takes room on target SIMs for moved messages. Postgres' usage comes
    first (it alone decides while Redis is down); a limited SIM's room is then
    reserved in the Redis counters, in one atomic step with the API's sends,
    so a move never takes room a send has just been promised."""

    def __init__(self, router: Router, session, holds: list[Hold]):
        self.router, self.session, self.holds = router, session, holds

    def take(self, msg: Message, to: Target) -> Move | None:
        """The move of `msg` onto `to` if it has room (then taken), else None."""
        assert msg.sim_card_id is not None  # moved work is selected by its SIM
        segments = msg.segments or 1
        if not has_capacity(to.routing, to.usage or Usage(), segments):
            return None
        try:
            hold = self.router.hold(self.session.connection(), to.routing, segments)
        except SimFull:
            return None
        if hold is not None:
            self.holds.append(hold)
        to.usage = to.usage or Usage()
        to.usage.add(segments)
        return Move(segments, msg.sim_card_id, to.sim.id, msg.timestamp, held=hold is not None)


def _pick(room: Room, targets: list[Target], msg: Message) -> tuple[Target, Move] | None:
    """The least loaded target with room for `msg`, and the move (counted)."""
    for t in sorted(targets, key=lambda t: (t.queued, t.sim.id)):
        move = room.take(msg, t)
        if move is not None:
            t.queued += move.segments
            return t, move
    return None


def _rebalance(
    session,
    room: Room,
    sims,
    unavailable: dict[int, str],
    now: datetime,
    events: list,
    wakeups: list,
    moves: list[Move],
) -> int:
    """Move unpinned queued messages from the longest queues to the shortest
    until no two sending SIMs differ by more than one message.

    Routing spreads new messages by load, but it sees other API processes'
    choices only through a short-lived snapshot, and modems drain at their own
    pace; without this, one modem can still be busy long after the others
    ran dry, which is the gateway keeping modems idle."""
    ready = [sim.id for sim, online in sims if online and sim.status == "active" and sim.id not in unavailable]
    if len(ready) < 2:
        return 0
    due = (Message.send_at.is_(None)) | (Message.send_at <= now)
    load = dict.fromkeys(ready, 0)
    for sim_id, n in session.execute(
        select(Message.sim_card_id, func.count())
        .where(Message.sim_card_id.in_(ready), Message.status.in_((QUEUED, SENDING)), due)
        .group_by(Message.sim_card_id)
    ).all():
        load[sim_id] = n
    if max(load.values()) - min(load.values()) <= 1:
        return 0
    targets = {t.sim.id: t for t in _targets(session, sims, unavailable)}
    movable: dict[int, list[Message]] = {}
    moved = 0
    for _ in range(BATCH):
        donor = max(load, key=lambda k: (load[k], -k))
        fitting = [k for k in load if k != donor and k in targets]
        if not fitting:
            break
        taker = min(fitting, key=lambda k: (load[k], k))
        if load[donor] - load[taker] <= 1:
            break
        if donor not in movable:
            # The newest, least urgent first: the head of a queue is about to be sent.
            movable[donor] = list(
                session.scalars(
                    select(Message)
                    .where(
                        Message.sim_card_id == donor,
                        Message.status == QUEUED,
                        Message.pinned.is_(False),
                        Message.direction == "outbound",
                        due,
                    )
                    .order_by(Message.priority.asc(), Message.id.desc())
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                ).all()
            )
        if not movable[donor]:
            load.pop(donor)  # nothing it holds can move; leave it alone
            if len(load) < 2:
                break
            continue
        msg = movable[donor].pop(0)
        t = targets[taker]
        move = room.take(msg, t)
        if move is None:
            targets.pop(taker)
            movable[donor].insert(0, msg)
            continue
        moves.append(move)
        msg.sim_card_id, msg.sender_sim, msg.sender = taker, t.sim.number, t.sim.number
        q.record(
            session,
            msg,
            QUEUED,
            source=SOURCE,
            at=now,
            detail=f"rerouted from SIM {donor} to SIM {taker}: evening out the queues",
        )
        events.append(msg)
        wakeups.append(Wakeup(t.sim.modem_id, msg.id))
        load[donor] -= 1
        load[taker] += 1
        moved += 1
    return moved


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
            unavailable = _unavailable_sims(session, sims)
            if unavailable:
                stuck = session.scalars(
                    select(Message)
                    .where(
                        Message.status == QUEUED,
                        Message.direction == "outbound",
                        Message.sim_card_id.in_(list(unavailable)),
                        (Message.send_at.is_(None)) | (Message.send_at <= now),
                    )
                    .order_by(Message.priority.desc(), Message.id)
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                ).all()
                targets = _targets(session, sims, unavailable) if any(not m.pinned for m in stuck) else []
                for msg in stuck:
                    old = msg.sim_card_id
                    if old is None:  # never: stuck is selected by its SIM
                        continue
                    reason = unavailable[old]
                    if msg.pinned:
                        if msg.on_unavailable == "fail":
                            q.record(
                                session,
                                msg,
                                FAILED,
                                source=SOURCE,
                                at=now,
                                error_text=f"pinned SIM unavailable: {reason}",
                            )
                            events.append(msg)
                            counts["failed"] += 1
                        continue
                    picked = _pick(room, targets, msg)
                    if picked is None:
                        continue  # waits until a SIM frees up, or until it expires
                    moves.append(picked[1])
                    target = picked[0].sim
                    msg.sim_card_id = target.id
                    msg.sender_sim = target.number
                    msg.sender = target.number
                    q.record(
                        session,
                        msg,
                        QUEUED,
                        source=SOURCE,
                        at=now,
                        detail=f"rerouted from SIM {old} to SIM {target.id}: {reason}",
                    )
                    events.append(msg)
                    wakeups.append(Wakeup(target.modem_id, msg.id))
                    counts["rerouted"] += 1
            # 4. keep every modem busy: even out the queues of the SIMs that can send
            counts["rebalanced"] = _rebalance(session, room, sims, unavailable, now, events, wakeups, moves)
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
