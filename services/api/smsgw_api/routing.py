"""Which SIM sends an outbound message, and the SIMs' sending limits.

A pinned SIM (`sim_card_id`) is used if it is active; when it is offline or
out of capacity the client chose with `on_unavailable` whether to wait in the
queue or to be told now. Otherwise the router takes an active SIM, online
ones first, with capacity left under its per-minute/day/month limits (counted
in segments), and the fewest queued segments.

Queue depth (which SIM is least loaded) comes from a snapshot per process,
refreshed at most every ROUTING_CACHE_SECONDS plus what the process routed
since: a stale depth only spreads load a little less evenly (the sweeper
evens the queues out).

Usage under the limits is counted in Redis, shared by every gunicorn worker
and replica, and checked and reserved atomically by one Lua script (RESERVE):
given the candidate SIMs in preference order and the segment count, it takes
the first SIM whose counters + n stay within its limits and increments them.
Two processes can therefore never together overshoot a limit. The counters
have the definition of USAGE_SQL (segments of non-cancelled outbound messages
routed to the SIM, by the time they were accepted):

- minute: a rolling window, kept as one hash per SIM of per-second buckets
  (`<prefix>limits{sim}:<id>:minute`, field = epoch second); the buckets of
  the last 60 s count (older ones are trimmed on the next reservation), so the window is 60-61 s and never shorter than a
  minute. A rolling window, not a fixed clock minute, so that a SIM can never
  send 2x its limit across a minute boundary.
- day / month: the UTC calendar (`...:<id>:day:YYYYMMDD`, `...:<id>:month:YYYYMM`).

Every key has a TTL (the minute hash an hour after its last write, day and
month keys just after their period ends), so nothing needs cleaning up. The
keys carry the deployment's prefix (MQTT_PREFIX, as every Redis key of the
API) and the hash tag `{sim}`, so that a script's keys share one slot.

A missing key (Redis restarted or flushed, a quiet SIM's minute hash expired,
a limit just set) is seeded from Postgres with the same definition before
reserving (SET NX inside the script, so concurrent processes agree on one
value); the steady state is one Redis round trip per send and no query. SIMs
without limits are not counted at all: routing to them costs no Redis call.
Cancelling a queued message gives its segments back to the windows it was
counted in if they are still current; a message whose commit fails gives its
reservation back. What the seeding cannot see is a reservation whose commit
is still in flight at that moment (microseconds to milliseconds).

If Redis is down the router logs it once and counts from a Postgres snapshot
as before (USAGE_SQL, refreshed with the queue-depth snapshot), so sends are
never refused for that reason alone; it retries Redis after
REDIS_RETRY_SECONDS and then drops the counters of the limited SIMs, which
are reseeded from Postgres (sends accepted meanwhile were not counted there).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import redis as redis_lib
from flask import Flask, current_app
from sqlalchemy import text

from .errors import ApiError, Conflict, ValidationError

log = logging.getLogger(__name__)

MINUTE = 60
MINUTE_TTL = 3600  # buckets are trimmed as they age; the hash goes an hour after its last write
GRACE = 120  # day and month keys outlive their period a little (cancels at midnight)
REDIS_RETRY_SECONDS = 5.0


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

    @property
    def rank(self) -> int:
        # Online first; then SIMs whose modem is known (a worker will come
        # back for them); SIMs never seen by a worker last.
        return 0 if self.online else 1 if self.modem_id else 2


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
    usage: dict[int, Usage] | None = field(default=None)  # only while Redis is down


@dataclass(frozen=True)
class Hold:
    """Segments counted in Redis for one message: given back if it is not queued after all."""
    sim_id: int
    segments: int
    second: int


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
# The same definition, with the windows of the Redis keys being seeded: the
# minute per second (the hash's buckets), day and month as totals.
_SEED_SQL = text(
    "SELECT sim_card_id, NULL::bigint AS second, "
    "coalesce(sum(segments) FILTER (WHERE timestamp >= :day_start), 0) AS day, "
    "coalesce(sum(segments), 0) AS month "
    "FROM messages WHERE direction = 'outbound' AND sim_card_id = ANY(:ids) AND status <> 'cancelled' "
    "AND timestamp >= :month_start GROUP BY sim_card_id "
    "UNION ALL "
    "SELECT sim_card_id, floor(extract(epoch FROM timestamp))::bigint, sum(segments), NULL "
    "FROM messages WHERE direction = 'outbound' AND sim_card_id = ANY(:ids) AND status <> 'cancelled' "
    "AND timestamp >= :minute_start GROUP BY 1, 2"
)
_PINNED_SQL = text(
    "SELECT s.id, s.number, s.status, s.modem_id, coalesce(m.online, false) AS online, "
    "s.limit_per_minute, s.limit_per_day, s.limit_per_month "
    "FROM sim_cards s LEFT JOIN modems m ON m.id = s.modem_id WHERE s.id = :id"
)

# KEYS: three per limited SIM (minute hash, day counter, month counter).
# ARGV[1]: JSON {now, dttl, mttl, sims: [{id, rank, q, k, lim?: [m, d, mo] (-1 = none),
#   seed?: {m: [[second, n], ...], d, mo}, auto}], items: [{n, pin (sim index or 0), force}]}
# `k` is the SIM's key triple (0: no limits, not counted). Auto-routed items
# take the fitting SIM with the lowest (rank, q, id); a pinned item its SIM if
# it fits, or whatever its counters say with `force` (on_unavailable=wait: it
# is queued there anyway). All items fit or nothing is written.
# Returns {'ok', sim index per item} | {'full', item index} | {'seed', k...}.
RESERVE = """
local a = cjson.decode(ARGV[1])
local now, sims = a.now, a.sims
local missing = {}
for _, s in ipairs(sims) do
  local k = s.k
  if k > 0 then
    local km, kd, kmo = KEYS[3*k-2], KEYS[3*k-1], KEYS[3*k]
    if s.seed then
      if redis.call('EXISTS', km) == 0 then
        local args = {'HSET', km, 'seeded', 1}
        for _, p in ipairs(s.seed.m) do args[#args+1] = p[1]; args[#args+1] = p[2] end
        redis.call(unpack(args))
        redis.call('EXPIRE', km, a.minute_ttl)
      end
      redis.call('SET', kd, s.seed.d, 'NX', 'EX', a.dttl)
      redis.call('SET', kmo, s.seed.mo, 'NX', 'EX', a.mttl)
    elseif redis.call('EXISTS', km, kd, kmo) < 3 then
      missing[#missing+1] = k
    end
  end
end
if #missing > 0 then
  table.insert(missing, 1, 'seed')
  return missing
end
local used = {}
for i, s in ipairs(sims) do
  local k = s.k
  if k > 0 then
    local km = KEYS[3*k-2]
    local flat = redis.call('HGETALL', km)
    local m, old = 0, {}
    for j = 1, #flat, 2 do
      local f = flat[j]
      if f ~= 'seeded' then
        if tonumber(f) >= now - 60 then m = m + tonumber(flat[j+1]) else old[#old+1] = f end
      end
    end
    if #old > 0 then redis.call('HDEL', km, unpack(old)) end
    used[i] = {m, tonumber(redis.call('GET', KEYS[3*k-1])), tonumber(redis.call('GET', KEYS[3*k]))}
  end
end
local function fits(i, n)
  local u = used[i]
  if not u then return true end
  local lim = sims[i].lim
  for w = 1, 3 do
    if lim[w] >= 0 and u[w] + n > lim[w] then return false end
  end
  return true
end
local picks, add = {'ok'}, {}
for j, it in ipairs(a.items) do
  local best = nil
  if it.pin > 0 then
    if it.force == 1 or fits(it.pin, it.n) then best = it.pin end
  else
    for i, s in ipairs(sims) do
      if s.auto == 1 and fits(i, it.n) then
        local b = best and sims[best]
        if not b or s.rank < b.rank or (s.rank == b.rank and (s.q < b.q or (s.q == b.q and s.id < b.id))) then
          best = i
        end
      end
    end
  end
  if not best then return {'full', j} end
  picks[#picks+1] = best
  sims[best].q = sims[best].q + it.n
  if used[best] then
    for w = 1, 3 do used[best][w] = used[best][w] + it.n end
    add[best] = (add[best] or 0) + it.n
  end
end
for i, n in pairs(add) do
  local k = sims[i].k
  redis.call('HINCRBY', KEYS[3*k-2], now, n)
  redis.call('EXPIRE', KEYS[3*k-2], a.minute_ttl)
  redis.call('INCRBY', KEYS[3*k-1], n)
  redis.call('INCRBY', KEYS[3*k], n)
end
return picks
"""

# Adjust counters that exist (a missing one is seeded from Postgres, which
# already reflects the change). KEYS: the keys; ARGV[1]: JSON {now, ops:
# [[key index, second or -1 for a plain counter, delta]]}. A minute bucket
# not (or no longer fully) there is taken from its neighbours: the bucket was
# chosen by the API's clock, a cancel knows Postgres' timestamp.
ADJUST = """
local a = cjson.decode(ARGV[1])
for _, op in ipairs(a.ops) do
  local k, sec, d = KEYS[op[1]], op[2], op[3]
  if redis.call('EXISTS', k) == 1 then
    if sec < 0 then
      if redis.call('INCRBY', k, d) < 0 then redis.call('SET', k, 0, 'KEEPTTL') end
    elseif d > 0 then
      redis.call('HINCRBY', k, sec, d)
    else
      local left = -d
      for _, s in ipairs({sec, sec - 1, sec + 1, sec - 2, sec + 2}) do
        if left <= 0 then break end
        if s >= a.now - 60 then
          local v = tonumber(redis.call('HGET', k, s) or '0')
          local take = math.min(v, left)
          if take > 0 then
            left = left - take
            if v - take <= 0 then redis.call('HDEL', k, s) else redis.call('HINCRBY', k, s, -take) end
          end
        end
      end
    end
  end
end
return 1
"""


def usage_of(conn, sim_ids: list[int]) -> dict[int, Usage]:
    """Usage from Postgres (the truth the counters are seeded from)."""
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


@dataclass(frozen=True)
class Windows:
    now: int  # epoch second
    day: str
    month: str
    minute_start: datetime
    day_start: datetime
    month_start: datetime
    day_ttl: int
    month_ttl: int


def windows(now: float | None = None) -> Windows:
    sec = int(time.time() if now is None else now)
    at = datetime.fromtimestamp(sec, timezone.utc)
    day_start = at.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    return Windows(sec, f"{at:%Y%m%d}", f"{at:%Y%m}", at - timedelta(seconds=MINUTE), day_start, month_start,
                   int((day_start + timedelta(days=1) - at).total_seconds()) + GRACE,
                   int((next_month - at).total_seconds()) + GRACE)


def _limits(sim: Sim) -> list[int]:
    return [-1 if v is None else int(v) for v in (sim.limit_per_minute, sim.limit_per_day, sim.limit_per_month)]


def _connected(conn, fn):
    """Run fn(connection); `conn` is a connection or a factory of one."""
    if callable(conn):
        with conn() as c:
            return fn(c)
    return fn(conn)


class LimitsUnavailable(Exception):
    pass


class Counters:
    """The per-SIM usage counters in Redis (see the module docstring)."""

    def __init__(self, get_redis, prefix: str):
        self._get_redis = get_redis
        self.base = f"{prefix}limits{{sim}}:"
        self._scripts: dict = {}

    def keys(self, sim_id: int, w: Windows) -> tuple[str, str, str]:
        return (f"{self.base}{sim_id}:minute", f"{self.base}{sim_id}:day:{w.day}",
                f"{self.base}{sim_id}:month:{w.month}")

    def _script(self, name: str, source: str):
        r = self._get_redis()
        cached = self._scripts.get(name)
        if cached is None or cached[0] is not r:
            cached = self._scripts[name] = (r, r.register_script(source))
        return cached[1]

    def reserve(self, conn, sims: list[tuple[Sim, int, bool]], items: list[tuple[int, int, bool]]):
        """sims: (sim, queued segments, auto-routable); items: (segments,
        pinned sim index or -1, force). Returns (the sim index per item, or
        ('full', item index); the epoch second counted in). One round trip
        unless a key must be seeded."""
        w = windows()
        keys: list[str] = []
        entries = []
        for sim, queued, auto in sims:
            entry = {"id": sim.id, "rank": sim.rank, "q": queued, "k": 0, "auto": 1 if auto else 0}
            if sim.limited:
                keys.extend(self.keys(sim.id, w))
                entry["k"] = len(keys) // 3
                entry["lim"] = _limits(sim)
            entries.append(entry)
        payload = {"now": w.now, "dttl": w.day_ttl, "mttl": w.month_ttl, "minute_ttl": MINUTE_TTL, "sims": entries,
                   "items": [{"n": n, "pin": pin + 1, "force": 1 if force else 0} for n, pin, force in items]}
        script = self._script("reserve", RESERVE)
        for _ in range(3):
            try:
                out = script(keys=keys, args=[json.dumps(payload, separators=(",", ":"))])
            except redis_lib.RedisError as exc:
                raise LimitsUnavailable(exc) from exc
            tag = out[0].decode() if isinstance(out[0], bytes) else out[0]
            if tag == "ok":
                return [int(i) - 1 for i in out[1:]], w.now
            if tag == "full":
                return ("full", int(out[1]) - 1), w.now
            need = {int(k) for k in out[1:]}
            seeded = [e for e in entries if e["k"] in need]
            seeds = _connected(conn, lambda c: self._seed_values(c, [e["id"] for e in seeded], w))
            for e in seeded:
                e["seed"] = seeds[e["id"]]
        raise LimitsUnavailable("counters could not be seeded")

    @staticmethod
    def _seed_values(conn, sim_ids: list[int], w: Windows) -> dict[int, dict]:
        out = {i: {"m": [], "d": 0, "mo": 0} for i in sim_ids}
        rows = conn.execute(_SEED_SQL, {"ids": sim_ids, "minute_start": w.minute_start,
                                        "day_start": w.day_start, "month_start": w.month_start}).all()
        for r in rows:
            if r.second is None:
                out[r.sim_card_id]["d"], out[r.sim_card_id]["mo"] = int(r.day), int(r.month)
            else:
                out[r.sim_card_id]["m"].append([int(r.second), int(r.day)])
        return out

    def adjust(self, changes: list[tuple[int, int, float, int]]) -> None:
        """changes: (sim id, segments, epoch time it was counted at, +1/-1).
        Only windows still current are touched, only keys that exist."""
        w = windows()
        keys: list[str] = []
        ops = []
        for sim_id, segments, at, sign in changes:
            counted = windows(at)
            km, kd, kmo = self.keys(sim_id, counted)
            delta = sign * segments
            if counted.now >= w.now - MINUTE:
                keys.append(km)
                ops.append([len(keys), counted.now, delta])
            if counted.day == w.day:
                keys.append(kd)
                ops.append([len(keys), -1, delta])
            if counted.month == w.month:
                keys.append(kmo)
                ops.append([len(keys), -1, delta])
        if not ops:
            return
        try:
            self._script("adjust", ADJUST)(keys=keys, args=[json.dumps({"now": w.now, "ops": ops})])
        except redis_lib.RedisError as exc:
            raise LimitsUnavailable(exc) from exc

    def read(self, sims: list[Sim]) -> dict[int, Usage | None]:
        """Current counters (None where a key is missing: not seeded yet)."""
        w = windows()
        pipe = self._get_redis().pipeline(transaction=False)
        for sim in sims:
            km, kd, kmo = self.keys(sim.id, w)
            pipe.hgetall(km)
            pipe.get(kd)
            pipe.get(kmo)
        try:
            values = pipe.execute()
        except redis_lib.RedisError as exc:
            raise LimitsUnavailable(exc) from exc
        out: dict[int, Usage | None] = {}
        for i, sim in enumerate(sims):
            minute, day, month = values[3 * i: 3 * i + 3]
            if not minute or day is None or month is None:
                out[sim.id] = None
                continue
            m = sum(int(v) for f, v in minute.items() if f != b"seeded" and int(f) >= w.now - MINUTE)
            out[sim.id] = Usage(m, int(day), int(month))
        return out

    def forget(self, sim_ids: list[int]) -> None:
        """Drop the counters (they are reseeded from Postgres on next use)."""
        if not sim_ids:
            return
        w = windows()
        try:
            self._get_redis().delete(*[k for i in sim_ids for k in self.keys(i, w)])
        except redis_lib.RedisError as exc:
            raise LimitsUnavailable(exc) from exc


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
            log.warning("routing: Redis unavailable (%s); counting limits from a Postgres snapshot until it is back",
                        exc)
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
        return Snapshot(time.monotonic(), sims, queued, usage)

    def snapshot(self, conn) -> Snapshot:
        """`conn` is a connection, or a context manager factory giving one
        (so that a cached snapshot costs no pool checkout at all)."""
        snap = self._snapshot
        fresh_enough = snap is not None and (snap.usage is not None or not self._redis_down)
        if fresh_enough and time.monotonic() - snap.at < self.cache_seconds:
            return snap
        # One request reloads an expired snapshot; the requests arriving
        # meanwhile route on the old one instead of each running the same
        # queries at once.
        single = fresh_enough and self.cache_seconds > 0
        if single and not self._reloading.acquire(blocking=False):
            return snap
        try:
            snap = _connected(conn, self._load)
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

    def route(self, conn, items: list[tuple[int, int | None, str]]) -> list[tuple[Sim, Hold | None]]:
        """Route messages (segments, pinned SIM id or None, on_unavailable),
        all or nothing: every one gets a SIM and its counters, or an ApiError
        (with `extra["index"]` of the message refused) and nothing is counted."""
        snap = self.snapshot(conn)

        def at(index: int, exc: ApiError) -> ApiError:
            # A batch says which message was refused.
            if len(items) > 1:
                exc.extra = {**(exc.extra or {}), "index": index}
            return exc

        pins: dict[int, Sim] = {}
        for index, (segments, pin, on_unavailable) in enumerate(items):
            if pin is None:
                if not snap.sims:
                    raise at(index, ApiError("No available SIM cards! Add or activate a SIM card first.", 503,
                                              "no_sim_available"))
            elif pin not in pins:
                try:
                    pins[pin] = self._pinned_sim(conn, snap, pin, on_unavailable)
                except ApiError as exc:
                    raise at(index, exc) from None
            elif on_unavailable == "fail" and not pins[pin].online:
                raise at(index, _offline(pins[pin]))
        single = len(items) == 1
        # Candidates in preference order. One message needs no SIM after the
        # first unlimited one (it always fits), and none at all if that is the first.
        order = self._order(snap) if any(pin is None for _, pin, _ in items) else []
        if single and items[0][1] is None:
            cut = next((i for i, s in enumerate(order) if not s.limited), None)
            if cut is not None:
                order = order[:cut + 1]
        cands: list[tuple[Sim, int, bool]] = [(s, snap.queued.get(s.id, 0), True) for s in order]
        index_of = {s.id: i for i, (s, _, _) in enumerate(cands)}
        for pin, sim in pins.items():
            if pin not in index_of:
                index_of[pin] = len(cands)
                cands.append((sim, snap.queued.get(pin, 0), False))
        plan = [(segments, -1 if pin is None else index_of[pin], on_unavailable == "wait")
                for segments, pin, on_unavailable in items]
        if not any(s.limited for s, _, _ in cands):
            return [(cands[i][0], None) for i in _pick_unlimited(cands, plan)]
        if self._use_redis():
            try:
                picks, second = self.counters.reserve(conn, cands, plan)
            except LimitsUnavailable as exc:
                self._redis_failed(exc)
                snap = self.snapshot(conn)
            else:
                if isinstance(picks, tuple):
                    raise at(picks[1], _full(items[picks[1]], pins))
                return [(cands[i][0], Hold(cands[i][0].id, segments, second) if cands[i][0].limited else None)
                        for i, (segments, _, _) in zip(picks, plan)]
        return self._route_from_snapshot(conn, snap, cands, plan, items, pins, at)

    def _route_from_snapshot(self, conn, snap, cands, plan, items, pins, at) -> list[tuple[Sim, None]]:
        """Redis is down: usage from Postgres (the snapshot, plus what this
        process routed since; a pinned `fail` asks Postgres)."""
        known = snap.usage or {}
        usage = {}
        for sim, _, _ in cands:
            u = known.get(sim.id, Usage())
            usage[sim.id] = Usage(u.minute, u.day, u.month)
        fresh = [pin for pin, sim in pins.items() if sim.limited and any(
            p == pin and how == "fail" for _, p, how in items)]
        if fresh:
            usage.update(_connected(conn, lambda c: usage_of(c, fresh)))
            for pin in fresh:
                usage.setdefault(pin, Usage())
        queued = [q for _, q, _ in cands]
        out = []
        for index, (segments, pin, force) in enumerate(plan):
            if pin >= 0:
                sim = cands[pin][0]
                if not force and not has_capacity(sim, usage[sim.id], segments):
                    raise at(index, _full(items[index], pins))
                best = pin
            else:
                fitting = [i for i, (s, _, auto) in enumerate(cands)
                           if auto and has_capacity(s, usage[s.id], segments)]
                if not fitting:
                    raise at(index, _full(items[index], pins))
                best = min(fitting, key=lambda i: (cands[i][0].rank, queued[i], cands[i][0].id))
            queued[best] += segments
            usage[cands[best][0].id].add(segments)
            out.append((cands[best][0], None))
        return out

    def _pinned_sim(self, conn, snap: Snapshot, sim_card_id: int, on_unavailable: str) -> Sim:
        if on_unavailable == "wait" and self.cache_seconds > 0 and sim_card_id in snap.sims:
            return snap.sims[sim_card_id]  # active: waiting is allowed, no query needed
        row = _connected(conn, lambda c: c.execute(_PINNED_SQL, {"id": sim_card_id}).first())
        if row is None:
            raise ValidationError({"sim_card_id": f"no SIM card with id {sim_card_id}"},
                                  message="Invalid SIM card ID!")
        sim = Sim(**row._mapping)
        if sim.status != "active":
            raise Conflict(f"SIM card {sim.id} is {sim.status}; activate it or let the gateway choose",
                           code="sim_inactive")
        if on_unavailable == "fail" and not sim.online:
            raise _offline(sim)
        return sim

    # --- counters kept in step with the database

    def release(self, holds) -> None:
        """Give back reservations of messages that were not queued after all."""
        self._adjust([(h.sim_id, h.segments, h.second, -1) for h in holds if h is not None])

    def give_back(self, sim_id: int | None, segments: int | None, at: datetime | None) -> None:
        """A queued message was cancelled: its segments no longer count."""
        if sim_id is not None and segments and at is not None:
            self._adjust([(sim_id, segments, at.timestamp(), -1)])

    def moved(self, moves: list[tuple[int, int, int, datetime]]) -> None:
        """Messages (segments, from SIM, to SIM, accepted at) were rerouted:
        their segments count for the new SIM now, as in Postgres."""
        changes = []
        for segments, old, new, at in moves:
            changes += [(old, segments, at.timestamp(), -1), (new, segments, at.timestamp(), 1)]
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
        out.update(_connected(conn, lambda c: usage_of(c, rest)))
        return out


def _pick_unlimited(cands, plan) -> list[int]:
    queued = [q for _, q, _ in cands]
    out = []
    for segments, pin, _ in plan:
        best = pin if pin >= 0 else min((i for i, c in enumerate(cands) if c[2]),
                                        key=lambda i: (cands[i][0].rank, queued[i], cands[i][0].id))
        queued[best] += segments
        out.append(best)
    return out


def _offline(sim: Sim) -> ApiError:
    return ApiError(f"SIM card {sim.id} is offline (on_unavailable=fail)", 503, "sim_unavailable")


def _full(item, pins) -> ApiError:
    segments, pin, _ = item
    if pin is not None:
        return ApiError(f"SIM card {pin} has reached its sending limit (on_unavailable=fail)", 429,
                        "sim_limit_reached", headers={"Retry-After": "60"})
    return ApiError("every active SIM card has reached its sending limit; try again later",
                    429, "sim_limits_reached", headers={"Retry-After": "60"})


def sim_of(row) -> Sim:
    """A routing Sim from a SimCard row and its modem's online flag."""
    sim, online = row
    return Sim(id=sim.id, number=sim.number, status=sim.status, modem_id=sim.modem_id, online=bool(online),
               limit_per_minute=sim.limit_per_minute, limit_per_day=sim.limit_per_day,
               limit_per_month=sim.limit_per_month)


def init_app(app: Flask) -> None:
    from .extensions import redis_client

    counters = Counters(lambda: redis_client.get(app), app.config["SMSGW_SETTINGS"].common.mqtt.prefix)
    app.extensions["smsgw_router"] = Router(app.config["SMSGW_SETTINGS"].routing_cache_seconds, counters)


def router(app: Flask | None = None) -> Router:
    return (app or current_app).extensions["smsgw_router"]
