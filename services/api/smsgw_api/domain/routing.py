"""Which SIM sends an outbound message.

A pinned SIM (`sim_card_id`) is used if it is active; when it is offline or
out of capacity the client chose with `on_unavailable` whether to wait in the
queue or to be told now. Otherwise the router takes an active SIM, online
ones first, with capacity left under its per-minute/day/month limits (counted
in segments), and the fewest queued segments.

Sites (docs/deployment.md, "Several sites"): a SIM is at its modem's site. A
message bound to a site (`site`) goes only to SIMs there, and waits or fails
as `on_unavailable` says when none of them is online. A recipient whose
number starts with a prefix in `site_prefixes` (longest match) prefers that
site's SIMs: among online SIMs they come first, but an online SIM elsewhere
beats an offline one there (`capacity.preference`).

Queue depth (which SIM is least loaded) comes from a snapshot per process,
refreshed at most every ROUTING_CACHE_SECONDS plus what the process routed
since: a stale depth only spreads load a little less evenly (the sweeper
evens the queues out).

If Redis is down the router logs it once and counts from a Postgres snapshot
as before (USAGE_SQL, refreshed with the queue-depth snapshot), so sends are
never refused for that reason alone; it retries Redis after
REDIS_RETRY_SECONDS and then drops the counters of the limited SIMs, which
are reseeded from Postgres (sends accepted meanwhile were not counted there).

Counting under the limits: domain/limits.py.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text

from smsgw_api.core.errors import ApiError, Conflict, ValidationError
from smsgw_api.core.runtime import Runtime
from smsgw_api.domain.capacity import (
    Candidate,
    CounterChange,
    Hold,
    Move,
    PlanItem,
    RouteRequest,
    Sim,
    Usage,
    has_capacity,
    preference,
    preferred_site,
    usage_of,
)
from smsgw_api.domain.limits import Counters, LimitsUnavailable, connected

log = logging.getLogger(__name__)

REDIS_RETRY_SECONDS = 5.0


@dataclass
class Snapshot:
    at: float
    sims: dict[int, Sim]
    queued: dict[int, int]
    usage: dict[int, Usage] | None = field(default=None)  # only while Redis is down
    prefixes: dict[str, str] = field(default_factory=dict)  # recipient prefix -> preferred site


_SIMS_SQL = text(
    "SELECT s.id, s.number, s.status, s.modem_id, coalesce(m.online, false) AS online, "
    "s.limit_per_minute, s.limit_per_day, s.limit_per_month, m.site "
    "FROM sim_cards s LEFT JOIN modems m ON m.id = s.modem_id WHERE s.status = 'active'"
)
_QUEUED_SQL = text(
    "SELECT sim_card_id, sum(segments) AS segments FROM messages "
    "WHERE status = 'queued' AND sim_card_id IS NOT NULL GROUP BY sim_card_id"
)
_PREFIXES_SQL = text("SELECT prefix, site FROM site_prefixes")
_PINNED_SQL = text(
    "SELECT s.id, s.number, s.status, s.modem_id, coalesce(m.online, false) AS online, "
    "s.limit_per_minute, s.limit_per_day, s.limit_per_month, m.site "
    "FROM sim_cards s LEFT JOIN modems m ON m.id = s.modem_id WHERE s.id = :id"
)


class SimFull(Exception):
    """Router.hold: the SIM has no room for the segments under its limits."""


class Router:
    def __init__(self, cache_seconds: float, counters: Counters | None = None):
        self.cache_seconds = cache_seconds
        self.counters = counters
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self._reloading = threading.Lock()
        self._redis_down = False
        self._retry_at = 0.0

    def invalidate(self) -> None:
        self._snapshot = None

    # --- Redis health: fall back to Postgres, never refuse because of Redis

    def _use_redis(self) -> bool:
        if self.counters is None:
            return False
        if not self._redis_down:
            return True
        if time.monotonic() < self._retry_at:
            return False
        # Back: what was accepted meanwhile is in Postgres, not in the counters.
        snap = self._snapshot
        try:
            self.counters.forget([s.id for s in snap.sims.values() if s.limited] if snap else [])
        except LimitsUnavailable:
            self._retry_at = time.monotonic() + REDIS_RETRY_SECONDS
            return False
        self._redis_down = False
        self.invalidate()
        log.warning("routing: Redis is back; limits are counted in Redis again (counters reseeded from Postgres)")
        return True

    def _redis_failed(self, exc) -> None:
        if not self._redis_down:
            log.warning(
                "routing: Redis unavailable (%s); counting limits from a Postgres snapshot until it is back", exc
            )
        self._redis_down = True
        self._retry_at = time.monotonic() + REDIS_RETRY_SECONDS
        self.invalidate()

    # --- the snapshot: active SIMs and queue depth (and usage while Redis is down)

    def _load(self, conn) -> Snapshot:
        sims = {r.id: Sim(**r._mapping) for r in conn.execute(_SIMS_SQL)}
        queued = {r.sim_card_id: int(r.segments) for r in conn.execute(_QUEUED_SQL)}
        usage = None
        if self._redis_down or self.counters is None:
            usage = usage_of(conn, [s.id for s in sims.values() if s.limited])
        prefixes = {r.prefix: r.site for r in conn.execute(_PREFIXES_SQL)}
        return Snapshot(time.monotonic(), sims, queued, usage, prefixes)

    def snapshot(self, conn) -> Snapshot:
        """`conn` is a connection, or a context manager factory giving one
        (so that a cached snapshot costs no pool checkout at all)."""
        snap = self._snapshot
        fresh_enough = snap is not None and (snap.usage is not None or not self._redis_down)
        if snap is not None and fresh_enough and time.monotonic() - snap.at < self.cache_seconds:
            return snap
        # One request reloads an expired snapshot; the requests arriving
        # meanwhile route on the old one instead of each running the same
        # queries at once.
        single = fresh_enough and self.cache_seconds > 0
        if snap is not None and single and not self._reloading.acquire(blocking=False):
            return snap
        try:
            snap = connected(conn, self._load)
            self._snapshot = snap
        finally:
            if single:
                self._reloading.release()
        return snap

    def note_routed(self, sim_id: int, segments: int) -> None:
        """Count a message this process just queued until the next snapshot sees it."""
        snap = self._snapshot
        if snap is None:
            return
        with self._lock:
            snap.queued[sim_id] = snap.queued.get(sim_id, 0) + segments
            if snap.usage is not None and sim_id in snap.sims and snap.sims[sim_id].limited:
                snap.usage.setdefault(sim_id, Usage()).add(segments)

    # --- routing

    def _order(self, snap: Snapshot) -> list[Sim]:
        return sorted(snap.sims.values(), key=lambda s: (s.rank, snap.queued.get(s.id, 0), s.id))

    def route(self, conn, items: list[RouteRequest]) -> list[tuple[Sim, Hold | None]]:
        """Route messages all or nothing: every one gets a SIM and its counters, or an ApiError
        (with `extra["index"]` of the message refused) and nothing is counted."""
        snap = self.snapshot(conn)

        def at(index: int, exc: ApiError) -> ApiError:
            # A batch says which message was refused.
            if len(items) > 1:
                exc.extra = {**(exc.extra or {}), "index": index}
            return exc

        pins: dict[int, Sim] = {}
        for index, (_segments, pin, on_unavailable, site, _recipient) in enumerate(items):
            if pin is None:
                if not snap.sims:
                    raise at(index, connected(conn, no_sim_error))
                if site is not None:
                    _check_site(snap, site, on_unavailable, lambda exc, index=index: at(index, exc))
            elif pin not in pins:
                try:
                    pins[pin] = self._pinned_sim(conn, snap, pin, on_unavailable)
                except ApiError as exc:
                    raise at(index, exc) from None
            elif on_unavailable == "fail" and not pins[pin].online:
                raise at(index, _offline(pins[pin]))
        plan_sites = [
            (None, False)
            if it.sim_card_id is not None
            else (it.site, True)
            if it.site is not None
            else (preferred_site(snap.prefixes, it.recipient), False)
            for it in items
        ]
        # Candidates in preference order. One message needs no SIM after the
        # first unlimited one (it always fits), and none at all if that is the first.
        order = self._order(snap) if any(it.sim_card_id is None for it in items) else []
        if len(items) == 1 and items[0].sim_card_id is None:
            item = PlanItem(items[0].segments, -1, False, *plan_sites[0])
            ranked = [(key, s) for s in order if (key := preference(s, snap.queued.get(s.id, 0), True, item))]
            order = [s for _, s in sorted(ranked, key=lambda r: r[0])]
            cut = next((i for i, s in enumerate(order) if not s.limited), None)
            if cut is not None:
                order = order[: cut + 1]
        cands = [Candidate(s, snap.queued.get(s.id, 0), True) for s in order]
        index_of = {s.id: i for i, (s, _, _) in enumerate(cands)}
        for pin, sim in pins.items():
            if pin not in index_of:
                index_of[pin] = len(cands)
                cands.append(Candidate(sim, snap.queued.get(pin, 0), False))
        plan = [
            PlanItem(
                it.segments,
                -1 if it.sim_card_id is None else index_of[it.sim_card_id],
                it.on_unavailable == "wait",
                *where,
            )
            for it, where in zip(items, plan_sites)
        ]
        if not any(s.limited for s, _, _ in cands):
            return [(cands[i].sim, None) for i in _pick_unlimited(cands, plan)]
        if self.counters is not None and self._use_redis():
            try:
                got = self.counters.reserve(conn, cands, plan)
            except LimitsUnavailable as exc:
                self._redis_failed(exc)
                snap = self.snapshot(conn)
            else:
                if got.picks is None:
                    assert got.full_item is not None  # a Reservation has picks or a full item
                    raise at(got.full_item, _full(items[got.full_item], pins))
                return [
                    (cands[i].sim, Hold(cands[i].sim.id, it.segments, got.second) if cands[i].sim.limited else None)
                    for i, it in zip(got.picks, plan)
                ]
        return self._route_from_snapshot(conn, snap, cands, plan, items, pins, at)

    def _route_from_snapshot(
        self, conn, snap, cands: list[Candidate], plan: list[PlanItem], items: list[RouteRequest], pins, at
    ) -> list[tuple[Sim, Hold | None]]:
        """Redis is down: usage from Postgres (the snapshot, plus what this
        process routed since; a pinned `fail` asks Postgres)."""
        known = snap.usage or {}
        usage = {}
        for sim, _, _ in cands:
            u = known.get(sim.id, Usage())
            usage[sim.id] = Usage(u.minute, u.day, u.month)
        fresh = [
            pin
            for pin, sim in pins.items()
            if sim.limited and any(it.sim_card_id == pin and it.on_unavailable == "fail" for it in items)
        ]
        if fresh:
            usage.update(connected(conn, lambda c: usage_of(c, fresh)))
            for pin in fresh:
                usage.setdefault(pin, Usage())
        queued = [q for _, q, _ in cands]
        out: list[tuple[Sim, Hold | None]] = []
        for index, item in enumerate(plan):
            segments = item.segments
            if item.pin >= 0:
                sim = cands[item.pin].sim
                if not item.force and not has_capacity(sim, usage[sim.id], segments):
                    raise at(index, _full(items[index], pins))
                best = item.pin
            else:
                ranked = [
                    (key, i)
                    for i, (s, _, auto) in enumerate(cands)
                    if (key := preference(s, queued[i], auto, item)) is not None
                    and has_capacity(s, usage[s.id], segments)
                ]
                if not ranked:
                    raise at(index, _full(items[index], pins))
                best = min(ranked)[1]
            queued[best] += segments
            usage[cands[best].sim.id].add(segments)
            out.append((cands[best].sim, None))
        return out

    def _pinned_sim(self, conn, snap: Snapshot, sim_card_id: int, on_unavailable: str) -> Sim:
        if on_unavailable == "wait" and self.cache_seconds > 0 and sim_card_id in snap.sims:
            return snap.sims[sim_card_id]  # active: waiting is allowed, no query needed
        row = connected(conn, lambda c: c.execute(_PINNED_SQL, {"id": sim_card_id}).first())
        if row is None:
            raise ValidationError({"sim_card_id": f"no SIM card with id {sim_card_id}"}, message="Invalid SIM card ID!")
        sim = Sim(**row._mapping)
        if sim.status != "active":
            raise Conflict(
                f"SIM card {sim.id} is {sim.status}; activate it or let the gateway choose", code="sim_inactive"
            )
        if on_unavailable == "fail" and not sim.online:
            raise _offline(sim)
        return sim

    # --- counters kept in step with the database

    def release(self, holds) -> None:
        """Give back reservations of messages that were not queued after all."""
        self._adjust([CounterChange(h.sim_id, h.segments, h.second, -1) for h in holds if h is not None])

    def give_back(self, sim_id: int | None, segments: int | None, at: datetime | None) -> None:
        """A queued message was cancelled: its segments no longer count."""
        if sim_id is not None and segments and at is not None:
            self._adjust([CounterChange(sim_id, segments, at.timestamp(), -1)])

    def hold(self, conn, sim: Sim, segments: int) -> Hold | None:
        """Count `segments` on `sim` now, for a message moved onto it, in the
        same atomic step as a send routed there: a move can never take room an
        API process has just reserved but not yet committed. Raises SimFull if
        they do not fit. None: nothing was counted (the SIM has no limits, or
        Redis is down and the caller's view from Postgres decides); `moved`
        counts it once the move is committed."""
        if not sim.limited or self.counters is None or not self._use_redis():
            return None
        try:
            got = self.counters.reserve(conn, [Candidate(sim, 0, False)], [PlanItem(segments, 0, False)])
        except LimitsUnavailable as exc:
            self._redis_failed(exc)
            return None
        if got.picks is None:
            raise SimFull(sim.id)
        return Hold(sim.id, segments, got.second)

    def moved(self, moves: list[Move]) -> None:
        """Rerouted messages' segments count for their new SIM now, as in Postgres."""
        changes = []
        for m in moves:
            at = m.accepted_at.timestamp()
            changes.append(CounterChange(m.from_sim, m.segments, at, -1))
            if not m.held:
                changes.append(CounterChange(m.to_sim, m.segments, at, 1))
        self._adjust(changes)

    def _adjust(self, changes) -> None:
        if not changes or self.counters is None:
            return
        if self._redis_down and time.monotonic() < self._retry_at:
            return  # the counters are reseeded when Redis is back
        try:
            self.counters.adjust(changes)
        except LimitsUnavailable as exc:
            self._redis_failed(exc)

    def forget(self, sim_ids: list[int]) -> None:
        """A SIM's limits changed: its counters are reseeded from Postgres
        (while a SIM has no limits nothing counts its sends in Redis)."""
        if self.counters is None:
            return
        try:
            self.counters.forget(sim_ids)
        except LimitsUnavailable as exc:
            self._redis_failed(exc)

    def usage(self, conn, sims: list[Sim]) -> dict[int, Usage]:
        """What the limits are checked against: the Redis counters of limited
        SIMs where they exist, Postgres for the rest."""
        out: dict[int, Usage] = {}
        limited = [s for s in sims if s.limited]
        if limited and self.counters is not None and not self._redis_down:
            try:
                out = {k: v for k, v in self.counters.read(limited).items() if v is not None}
            except LimitsUnavailable as exc:
                self._redis_failed(exc)
        rest = [s.id for s in sims if s.id not in out]
        out.update(connected(conn, lambda c: usage_of(c, rest)))
        return out


def _pick_unlimited(cands: list[Candidate], plan: list[PlanItem]) -> list[int]:
    """Every candidate has room: the best by preference (a bound site was checked to have a SIM)."""
    queued = [q for _, q, _ in cands]
    out = []
    for item in plan:
        if item.pin >= 0:
            best = item.pin
        else:
            best = min(
                (key, i) for i, (s, _, auto) in enumerate(cands) if (key := preference(s, queued[i], auto, item))
            )[1]
        queued[best] += item.segments
        out.append(best)
    return out


# Why no SIM can take a message, and what fixes it; the message keeps the
# seed's text (docs/api-contract.md), `reason` and `hint` say the rest.
NO_SIM_MESSAGE = "No available SIM cards! Add or activate a SIM card first."
NO_SIM_HINTS = {
    "no_modem": "No modem is configured. Run `make probe` to find its port, then "
    "`make add-modem PORT=/dev/serial/by-id/...` (or add a SIM card by hand: POST /api/sim-cards).",
    "no_modem_online": "No modem is online ({modems}). The SIMs & modems page (GET /api/modems) lists each "
    "modem's problem and its fix; `make status` and `make logs SERVICE=modem-worker-<id>` say more.",
    "no_active_sim": "Every SIM card is inactive. Activate one on the SIMs & modems page "
    '(PUT /api/sim-cards/<id> {{"status": "active"}}), or insert a SIM into an online modem.',
}
_WHY_SQL = text(
    "SELECT (SELECT count(*) FROM modems) AS modems, "
    "(SELECT count(*) FROM modems WHERE online) AS online, "
    "(SELECT count(*) FROM sim_cards) AS sims, "
    "(SELECT string_agg(id, ', ' ORDER BY id) FROM (SELECT id FROM modems ORDER BY id LIMIT 5) m) AS names"
)


def no_sim_error(conn) -> ApiError:
    """The 503 for "no active SIM", with the reason and its fix."""
    row = conn.execute(_WHY_SQL).one()
    if row.modems == 0 and row.sims == 0:
        reason = "no_modem"
    elif row.modems > 0 and row.online == 0:
        reason = "no_modem_online"
    else:
        reason = "no_active_sim"
    hint = NO_SIM_HINTS[reason].format(modems=row.names or "")
    return ApiError(NO_SIM_MESSAGE, 503, "no_sim_available", extra={"reason": reason, "hint": hint})


def _offline(sim: Sim) -> ApiError:
    return ApiError(f"SIM card {sim.id} is offline (on_unavailable=fail)", 503, "sim_unavailable")


def _check_site(snap: Snapshot, site: str, on_unavailable: str, at) -> None:
    """A message bound to `site` needs an active SIM there, and an online one to fail fast."""
    there = [s for s in snap.sims.values() if s.site == site]
    if not there:
        known = sorted({s.site for s in snap.sims.values() if s.site})
        listed = ", ".join(known[:20]) + (f" and {len(known) - 20} more (GET /api/sites)" if len(known) > 20 else "")
        raise at(
            ValidationError(
                {"site": f"no active SIM card is at site {site!r}; sites with one: {listed or 'none'}"},
                message=f"No active SIM card at site {site}",
            )
        )
    if on_unavailable == "fail" and not any(s.online for s in there):
        raise at(
            ApiError(
                f"no SIM card at site {site} is online (on_unavailable=fail)",
                503,
                "site_unavailable",
                extra={"site": site},
            )
        )


def _full(item: RouteRequest, pins) -> ApiError:
    pin, site = item.sim_card_id, item.site
    if site is not None:
        return ApiError(
            f"every active SIM card at site {site} has reached its sending limit; try again later",
            429,
            "site_limits_reached",
            headers={"Retry-After": "60"},
        )
    if pin is not None:
        return ApiError(
            f"SIM card {pin} has reached its sending limit (on_unavailable=fail)",
            429,
            "sim_limit_reached",
            headers={"Retry-After": "60"},
        )
    return ApiError(
        "every active SIM card has reached its sending limit; try again later",
        429,
        "sim_limits_reached",
        headers={"Retry-After": "60"},
        extra={
            "reason": "limits_reached",
            "hint": "Every active SIM has used up its per-minute, per-day or per-month limit: wait, "
            "raise the limits (PUT /api/sim-cards/<id>), or add a SIM (make add-modem).",
        },
    )


def make_router(runtime: Runtime) -> Router:
    counters = Counters(lambda: runtime.redis, runtime.mqtt.prefix)
    return Router(runtime.settings.routing_cache_seconds, counters)
