"""Which SIM sends an outbound message.

A pinned SIM (`sim_card_id`) is used if it is active; when it is offline or
out of capacity the client chose with `on_unavailable` whether to wait in the
queue or to be told now. Otherwise the router takes an active SIM, online
ones first, with capacity left under its per-minute/day/month limits (counted
in segments), and the fewest queued segments.

Counting queued segments and usage on every request would scan the queue each
time; the router keeps a snapshot per process, refreshed at most every
ROUTING_CACHE_SECONDS, and adds what this process routed since. Limits can
therefore be overshot by what other processes routed within that interval
(by default one second), which is the price of not serialising every send on
a counter row.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from flask import Flask, current_app
from sqlalchemy import text

from .errors import ApiError, Conflict, ValidationError


@dataclass
class Sim:
    id: int
    number: str | None
    status: str
    modem_id: str | None
    online: bool
    limit_per_minute: int | None
    limit_per_day: int | None
    limit_per_month: int | None

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.limit_per_minute, self.limit_per_day, self.limit_per_month))


@dataclass
class Usage:
    minute: int = 0
    day: int = 0
    month: int = 0

    def add(self, segments: int) -> None:
        self.minute += segments
        self.day += segments
        self.month += segments


@dataclass
class Snapshot:
    at: float
    sims: dict[int, Sim]
    queued: dict[int, int]
    usage: dict[int, Usage] = field(default_factory=dict)


_SIMS_SQL = text(
    "SELECT s.id, s.number, s.status, s.modem_id, coalesce(m.online, false) AS online, "
    "s.limit_per_minute, s.limit_per_day, s.limit_per_month "
    "FROM sim_cards s LEFT JOIN modems m ON m.id = s.modem_id WHERE s.status = 'active'"
)
_QUEUED_SQL = text(
    "SELECT sim_card_id, sum(segments) AS segments FROM messages "
    "WHERE status = 'queued' AND sim_card_id IS NOT NULL GROUP BY sim_card_id"
)
# Minute: the last 60 s; day and month: the calendar (UTC), as carriers count.
USAGE_SQL = text(
    "SELECT sim_card_id, "
    "coalesce(sum(segments) FILTER (WHERE timestamp >= now() - interval '1 minute'), 0) AS minute, "
    "coalesce(sum(segments) FILTER (WHERE timestamp >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), 0) AS day, "
    "coalesce(sum(segments), 0) AS month "
    "FROM messages WHERE direction = 'outbound' AND sim_card_id = ANY(:ids) AND status <> 'cancelled' "
    "AND timestamp >= least(date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', now() - interval '1 minute') "
    "GROUP BY sim_card_id"
)
_PINNED_SQL = text(
    "SELECT s.id, s.number, s.status, s.modem_id, coalesce(m.online, false) AS online, "
    "s.limit_per_minute, s.limit_per_day, s.limit_per_month "
    "FROM sim_cards s LEFT JOIN modems m ON m.id = s.modem_id WHERE s.id = :id"
)


def usage_of(conn, sim_ids: list[int]) -> dict[int, Usage]:
    if not sim_ids:
        return {}
    rows = conn.execute(USAGE_SQL, {"ids": list(sim_ids)}).all()
    return {r.sim_card_id: Usage(int(r.minute), int(r.day), int(r.month)) for r in rows}


def has_capacity(sim: Sim, usage: Usage, segments: int) -> bool:
    for limit, used in ((sim.limit_per_minute, usage.minute), (sim.limit_per_day, usage.day),
                        (sim.limit_per_month, usage.month)):
        if limit is not None and used + segments > limit:
            return False
    return True


class Router:
    def __init__(self, cache_seconds: float):
        self.cache_seconds = cache_seconds
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self._reloading = threading.Lock()

    def invalidate(self) -> None:
        self._snapshot = None

    def _load(self, conn) -> Snapshot:
        sims = {r.id: Sim(**r._mapping) for r in conn.execute(_SIMS_SQL)}
        queued = {r.sim_card_id: int(r.segments) for r in conn.execute(_QUEUED_SQL)}
        limited = [s.id for s in sims.values() if s.limited]
        return Snapshot(time.monotonic(), sims, queued, usage_of(conn, limited))

    def snapshot(self, conn) -> Snapshot:
        """`conn` is a connection, or a context manager factory giving one
        (so that a cached snapshot costs no pool checkout at all)."""
        snap = self._snapshot
        if snap is not None and time.monotonic() - snap.at < self.cache_seconds:
            return snap
        # One request reloads an expired snapshot; the requests arriving
        # meanwhile route on the old one instead of each running the same
        # queries at once.
        single = snap is not None and self.cache_seconds > 0
        if single and not self._reloading.acquire(blocking=False):
            return snap
        try:
            if callable(conn):
                with conn() as c:
                    snap = self._load(c)
            else:
                snap = self._load(conn)
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
            if sim_id in snap.usage or (sim_id in snap.sims and snap.sims[sim_id].limited):
                snap.usage.setdefault(sim_id, Usage()).add(segments)

    def choose(self, conn, segments: int) -> Sim:
        snap = self.snapshot(conn)
        if not snap.sims:
            raise ApiError("No available SIM cards! Add or activate a SIM card first.", 503, "no_sim_available")
        with self._lock:
            candidates = [s for s in snap.sims.values()
                          if has_capacity(s, snap.usage.get(s.id, Usage()), segments)]
            if not candidates:
                raise ApiError("every active SIM card has reached its sending limit; try again later",
                               429, "sim_limits_reached", headers={"Retry-After": "60"})
            # Online first; then SIMs whose modem is known (a worker will
            # come back for them); SIMs never seen by a worker last.
            return min(candidates, key=lambda s: (
                0 if s.online else 1 if s.modem_id else 2, snap.queued.get(s.id, 0), s.id))

    def pinned(self, conn, sim_card_id: int, segments: int, on_unavailable: str) -> Sim:
        if on_unavailable == "wait" and self.cache_seconds > 0:
            # An active SIM in the snapshot needs no query: waiting is allowed.
            snap = self.snapshot(conn)
            if sim_card_id in snap.sims:
                return snap.sims[sim_card_id]
        if callable(conn):
            with conn() as c:
                row = c.execute(_PINNED_SQL, {"id": sim_card_id}).first()
                return self._check_pinned(c, row, sim_card_id, segments, on_unavailable)
        row = conn.execute(_PINNED_SQL, {"id": sim_card_id}).first()
        return self._check_pinned(conn, row, sim_card_id, segments, on_unavailable)

    def _check_pinned(self, conn, row, sim_card_id: int, segments: int, on_unavailable: str) -> Sim:
        if row is None:
            raise ValidationError({"sim_card_id": f"no SIM card with id {sim_card_id}"},
                                  message="Invalid SIM card ID!")
        sim = Sim(**row._mapping)
        if sim.status != "active":
            raise Conflict(f"SIM card {sim.id} is {sim.status}; activate it or let the gateway choose",
                           code="sim_inactive")
        if on_unavailable == "fail":
            if not sim.online:
                raise ApiError(f"SIM card {sim.id} is offline (on_unavailable=fail)", 503, "sim_unavailable")
            usage = usage_of(conn, [sim.id]).get(sim.id, Usage()) if sim.limited else Usage()
            if not has_capacity(sim, usage, segments):
                raise ApiError(f"SIM card {sim.id} has reached its sending limit (on_unavailable=fail)", 429,
                               "sim_limit_reached", headers={"Retry-After": "60"})
        return sim


def init_app(app: Flask) -> None:
    app.extensions["smsgw_router"] = Router(app.config["SMSGW_SETTINGS"].routing_cache_seconds)


def router() -> Router:
    return current_app.extensions["smsgw_router"]
