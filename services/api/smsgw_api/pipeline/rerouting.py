"""Moving queued work between SIMs: the sweeper's steps 3 and 4
(pipeline/sweeper.py). A message leaves a SIM that cannot send for the least
loaded one that can, and queues are evened out so no modem idles while
another has a backlog. Either way the new SIM must have room under its
limits: first by Postgres' usage, then by the Redis counters the API reserves
sends from, in one atomic step with them (`Room`).

Sites bind as in routing (domain/routing.py): a message bound to a site
moves only to another SIM there (and fails instead, if its client asked,
when none there can send); a message whose recipient prefers a site goes
to a SIM there first. Queues are evened out within a site only, so the
evening-out never takes a message away from the site routing chose."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Row, func, select, text

from smsgw_api.domain.capacity import Hold, Move, Sim, Usage, has_capacity, preferred_site, usage_of
from smsgw_api.domain.routing import Router, SimFull
from smsgw_common import queue as q
from smsgw_common.models import FAILED, QUEUED, SENDING, Message, Modem, SimCard, SitePrefix

SOURCE = "sweeper"  # these moves are the sweeper's, in every message's history
BATCH = 500


@dataclass
class Target:
    """A SIM that can take rerouted work, with routing's view of it."""

    sim: SimCard
    routing: Sim
    usage: Usage | None  # None: nothing counted yet
    queued: int  # segments queued or sending on it


@dataclass
class Sites:
    """Where each SIM is (its modem's site) and which site a recipient prefers."""

    of_sim: dict[int, str | None]
    prefixes: dict[str, str]

    @classmethod
    def load(cls, session) -> Sites:
        of_sim = dict(
            session.execute(select(SimCard.id, Modem.site).outerjoin(Modem, Modem.id == SimCard.modem_id)).all()
        )
        prefixes = dict(session.execute(select(SitePrefix.prefix, SitePrefix.site)).all())
        return cls(of_sim, prefixes)

    def wanted(self, msg: Message) -> tuple[str | None, bool]:
        """(the site the message goes to first, whether only there)."""
        if msg.site is not None:
            return msg.site, True
        return preferred_site(self.prefixes, msg.recipient), False


class Wakeup(NamedTuple):
    modem_id: str | None
    message_id: int


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


def unavailable_sims(session, sims: Sequence[Row[SimCard, bool]]) -> dict[int, str]:
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


def _targets(session, sims: Sequence[Row[SimCard, bool]], unavailable: dict[int, str], sites: Sites) -> list[Target]:
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
                    site=sites.of_sim.get(sim.id),
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


def _pick(
    room: Room, targets: list[Target], msg: Message, site: str | None, strict: bool
) -> tuple[Target, Move] | None:
    """The target with room for `msg`, at `site` first (only there if
    strict), then the least loaded; and the move (counted)."""
    fitting = [t for t in targets if not strict or t.routing.site == site]
    for t in sorted(fitting, key=lambda t: (site is not None and t.routing.site != site, t.queued, t.sim.id)):
        move = room.take(msg, t)
        if move is not None:
            t.queued += move.segments
            return t, move
    return None


def _reroute(session, msg: Message, to: SimCard, detail: str, now: datetime) -> None:
    """The message is on `to` now, and its history says why."""
    msg.sim_card_id, msg.sender_sim, msg.sender = to.id, to.number, to.number
    q.record(session, msg, QUEUED, source=SOURCE, at=now, detail=detail)


def rebalance(
    session,
    room: Room,
    sims,
    unavailable: dict[int, str],
    now: datetime,
    events: list,
    wakeups: list,
    moves: list[Move],
    sites: Sites,
) -> int:
    """Move unpinned queued messages from the longest queues to the shortest,
    within each site, until no two sending SIMs there differ by more than one
    message.

    Routing spreads new messages by load, but it sees other API processes'
    choices only through a short-lived snapshot, and modems drain at their own
    pace; without this, one modem can still be busy long after the others
    ran dry, which is the gateway keeping modems idle."""
    ready = [sim.id for sim, online in sims if online and sim.status == "active" and sim.id not in unavailable]
    by_site: dict[str | None, list[int]] = {}
    for sim_id in ready:
        by_site.setdefault(sites.of_sim.get(sim_id), []).append(sim_id)
    found: list[dict[int, Target]] = []

    def targets() -> dict[int, Target]:
        if not found:
            found.append({t.sim.id: t for t in _targets(session, sims, unavailable, sites)})
        return found[0]

    return sum(
        _even_out(session, room, group, targets, now, events, wakeups, moves)
        for group in by_site.values()
        if len(group) >= 2
    )


def _even_out(session, room: Room, ready: list[int], all_targets, now, events, wakeups, moves) -> int:
    """rebalance, among the SIMs `ready` (of one site)."""
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
    targets = {k: t for k, t in all_targets().items() if k in load}
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
        _reroute(session, msg, t.sim, f"rerouted from SIM {donor} to SIM {taker}: evening out the queues", now)
        events.append(msg)
        wakeups.append(Wakeup(t.sim.modem_id, msg.id))
        load[donor] -= 1
        load[taker] += 1
        moved += 1
    return moved


def _fail_if_asked(session, msg: Message, error_text: str, now: datetime, events: list) -> int:
    """Fail a message that cannot go anywhere if its client asked for that
    (on_unavailable=fail); else it waits. Returns how many failed (0 or 1)."""
    if msg.on_unavailable != "fail":
        return 0
    q.record(session, msg, FAILED, source=SOURCE, at=now, error_text=error_text)
    events.append(msg)
    return 1


def reroute_stuck(
    session,
    room: Room,
    unavailable: dict[int, str],
    sims,
    now: datetime,
    events: list,
    wakeups: list,
    moves: list[Move],
    sites: Sites,
) -> tuple[int, int]:
    """Due queued messages on a SIM that cannot send move to the least loaded
    SIM that can (of their site, see the module docstring); pinned ones, and
    ones bound to a site where no SIM can take them, wait, or fail if the
    client asked for that. Returns (rerouted, failed)."""
    rerouted = failed = 0
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
    targets = _targets(session, sims, unavailable, sites) if any(not m.pinned for m in stuck) else []
    for msg in stuck:
        old = msg.sim_card_id
        if old is None:  # never: stuck is selected by its SIM
            continue
        reason = unavailable[old]
        if msg.pinned:
            failed += _fail_if_asked(session, msg, f"pinned SIM unavailable: {reason}", now, events)
            continue
        site, strict = sites.wanted(msg)
        picked = _pick(room, targets, msg, site, strict)
        if picked is None:
            if strict and not any(t.routing.site == site for t in targets):
                failed += _fail_if_asked(session, msg, f"no SIM at site {site} can send: {reason}", now, events)
            continue  # waits until a SIM frees up, or until it expires
        moves.append(picked[1])
        target = picked[0].sim
        _reroute(session, msg, target, f"rerouted from SIM {old} to SIM {target.id}: {reason}", now)
        events.append(msg)
        wakeups.append(Wakeup(target.modem_id, msg.id))
        rerouted += 1
    return rerouted, failed
