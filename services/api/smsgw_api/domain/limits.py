"""The SIMs' sending limits, counted in Redis.

Usage under the limits is counted in Redis, shared by every gunicorn worker
and replica, and checked and reserved atomically by one Lua script (RESERVE):
given the candidate SIMs in preference order and the segment count, it takes
the first SIM whose counters + n stay within its limits and increments them.
Two processes can therefore never together overshoot a limit. The counters
have the definition of USAGE_SQL (segments of non-cancelled outbound messages
have the definition of USAGE_SQL (domain/capacity.py):
- minute: a rolling window, kept as one hash per SIM of per-second buckets
  (`<prefix>limits{sim}:<id>:minute`, field = epoch second); the buckets of
  the last 60 s count (older ones are trimmed on the next reservation), so
  the window is 60-61 s and never shorter than a minute. A rolling window,
  not a fixed clock minute, so that a SIM can never send 2x its limit across
  a minute boundary.
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
reservation back. A message the sweeper moves to another SIM takes its room
there with the same script (Router.hold), in the current second. What the
seeding cannot see is a reservation whose commit is still in flight at that
moment (microseconds to milliseconds).

"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import redis as redis_lib
from sqlalchemy import text

from smsgw_api.domain.capacity import Candidate, CounterChange, PlanItem, Sim, Usage

MINUTE = 60
MINUTE_TTL = 3600  # buckets are trimmed as they age; the hash goes an hour after its last write
GRACE = 120  # day and month keys outlive their period a little (cancels at midnight)

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

# KEYS: three per limited SIM (minute hash, day counter, month counter).
# ARGV[1]: JSON {now, dttl, mttl, sims: [{id, rank, q, k, lim?: [m, d, mo] (-1 = none),
#   seed?: {m: [[second, n], ...], d, mo}, auto, site ('' = none)}],
#   items: [{n, pin (sim index or 0), force, site ('' = none), strict}]}
# `k` is the SIM's key triple (0: no limits, not counted). Auto-routed items
# take the fitting SIM with the lowest (rank, site miss, q, id), only SIMs of
# their site if `strict` (capacity.preference); a pinned item its SIM if it
# fits, or whatever its counters say with `force` (on_unavailable=wait: it
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
local function preference(s, it)
  if s.auto ~= 1 or (it.strict == 1 and s.site ~= it.site) then return nil end
  local miss = 0
  if it.site ~= '' and s.site ~= it.site then miss = 1 end
  return {s.rank, miss, s.q, s.id}
end
local function better(x, y)
  for w = 1, 4 do
    if x[w] ~= y[w] then return x[w] < y[w] end
  end
  return false
end
local picks, add = {'ok'}, {}
for j, it in ipairs(a.items) do
  local best = nil
  if it.pin > 0 then
    if it.force == 1 or fits(it.pin, it.n) then best = it.pin end
  else
    local best_key = nil
    for i, s in ipairs(sims) do
      local key = preference(s, it)
      if key and fits(i, it.n) and (not best_key or better(key, best_key)) then
        best, best_key = i, key
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
    at = datetime.fromtimestamp(sec, UTC)
    day_start = at.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    return Windows(
        sec,
        f"{at:%Y%m%d}",
        f"{at:%Y%m}",
        at - timedelta(seconds=MINUTE),
        day_start,
        month_start,
        int((day_start + timedelta(days=1) - at).total_seconds()) + GRACE,
        int((next_month - at).total_seconds()) + GRACE,
    )


def _limits(sim: Sim) -> list[int]:
    return [-1 if v is None else int(v) for v in (sim.limit_per_minute, sim.limit_per_day, sim.limit_per_month)]


def connected(conn, fn):
    """Run fn(connection); `conn` is a connection or a factory of one."""
    if callable(conn):
        with conn() as c:
            return fn(c)
    return fn(conn)


class LimitsUnavailable(Exception):
    pass


class Reservation(NamedTuple):
    picks: list[int] | None  # the candidate index per item; None: nothing was counted
    full_item: int | None  # the index of the item that fit nowhere
    second: int  # the epoch second the segments were counted in


class Counters:
    """The per-SIM usage counters in Redis (see the module docstring)."""

    def __init__(self, get_redis, prefix: str):
        self._get_redis = get_redis
        self.base = f"{prefix}limits{{sim}}:"
        self._scripts: dict = {}

    def keys(self, sim_id: int, w: Windows) -> tuple[str, str, str]:
        return (
            f"{self.base}{sim_id}:minute",
            f"{self.base}{sim_id}:day:{w.day}",
            f"{self.base}{sim_id}:month:{w.month}",
        )

    def _script(self, name: str, source: str):
        r = self._get_redis()
        cached = self._scripts.get(name)
        if cached is None or cached[0] is not r:
            cached = self._scripts[name] = (r, r.register_script(source))
        return cached[1]

    def reserve(self, conn, sims: list[Candidate], items: list[PlanItem]) -> Reservation:
        """All items counted, or none (`full_item` says which did not fit).
        One round trip unless a key must be seeded."""
        w = windows()
        keys: list[str] = []
        entries: list[dict[str, Any]] = []
        for sim, queued, auto in sims:
            entry: dict[str, Any] = {
                "id": sim.id,
                "rank": sim.rank,
                "q": queued,
                "k": 0,
                "auto": 1 if auto else 0,
                "site": sim.site or "",
            }
            if sim.limited:
                keys.extend(self.keys(sim.id, w))
                entry["k"] = len(keys) // 3
                entry["lim"] = _limits(sim)
            entries.append(entry)
        payload = {
            "now": w.now,
            "dttl": w.day_ttl,
            "mttl": w.month_ttl,
            "minute_ttl": MINUTE_TTL,
            "sims": entries,
            "items": [
                {
                    "n": it.segments,
                    "pin": it.pin + 1,
                    "force": 1 if it.force else 0,
                    "site": it.site or "",
                    "strict": 1 if it.strict else 0,
                }
                for it in items
            ],
        }
        script = self._script("reserve", RESERVE)
        for _ in range(3):
            try:
                out = script(keys=keys, args=[json.dumps(payload, separators=(",", ":"))])
            except redis_lib.RedisError as exc:
                raise LimitsUnavailable(exc) from exc
            tag = out[0].decode() if isinstance(out[0], bytes) else out[0]
            if tag == "ok":
                return Reservation([int(i) - 1 for i in out[1:]], None, w.now)
            if tag == "full":
                return Reservation(None, int(out[1]) - 1, w.now)
            need = {int(k) for k in out[1:]}
            seeded = [e for e in entries if e["k"] in need]
            seeds = connected(conn, functools.partial(self._seed_values, sim_ids=[e["id"] for e in seeded], w=w))
            for e in seeded:
                e["seed"] = seeds[e["id"]]
        raise LimitsUnavailable("counters could not be seeded")

    @staticmethod
    def _seed_values(conn, sim_ids: list[int], w: Windows) -> dict[int, dict]:
        out: dict[int, dict[str, Any]] = {i: {"m": [], "d": 0, "mo": 0} for i in sim_ids}
        rows = conn.execute(
            _SEED_SQL,
            {"ids": sim_ids, "minute_start": w.minute_start, "day_start": w.day_start, "month_start": w.month_start},
        ).all()
        for r in rows:
            if r.second is None:
                out[r.sim_card_id]["d"], out[r.sim_card_id]["mo"] = int(r.day), int(r.month)
            else:
                out[r.sim_card_id]["m"].append([int(r.second), int(r.day)])
        return out

    def adjust(self, changes: list[CounterChange]) -> None:
        """Only windows still current are touched, only keys that exist."""
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
            minute, day, month = values[3 * i : 3 * i + 3]
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
