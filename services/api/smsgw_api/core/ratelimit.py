"""Attempt limits: fixed-window counters in Redis, shared by every worker and replica.

An attempt is reserved BEFORE the work it guards (a password check) starts:
one Lua script looks at every counter the attempt counts against and, only
if all are under their limits, increments them all. Checking and counting as
two steps let 100 parallel logins do 83 password checks against a limit of
50; reserved atomically, N parallel attempts get at most the limit's worth of
checks, the rest 429. A success gives its reservation back (`release`), so
only failures (and attempts still running) use up a window.

Counter names carry the deployment's prefix and never the raw input: a
username is hashed into its key (`ident`), so a 250 KB username makes a key
of the usual size.

If Redis is down each process counts alone (same limits, per process) and
logs it: refusing every login because a cache is down would lock everyone
out, and letting every attempt through would unlimit the attacker.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

import redis as redis_lib

from smsgw_api.core.errors import ApiError
from smsgw_api.core.extensions import redis_client, runtime

log = logging.getLogger(__name__)


class RateLimited(ApiError):
    status = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


@dataclass(frozen=True)
class Limit:
    """One counter an attempt counts against: `name` from `ident()`s."""

    name: str
    limit: int


def ident(kind: str, value: str) -> str:
    """A bounded, key-safe name for untrusted input (usernames, addresses)."""
    return f"{kind}:{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}"


# KEYS: the counters; ARGV[1]: the window in seconds, ARGV[1 + i]: the limit of KEYS[i].
# Returns 0 when reserved, else the seconds until the first full counter resets.
_RESERVE = """
for i, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  if n >= tonumber(ARGV[i + 1]) then
    local ttl = redis.call('TTL', key)
    if ttl < 1 then
      redis.call('EXPIRE', key, ARGV[1])
      ttl = tonumber(ARGV[1])
    end
    return ttl
  end
end
for i, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then
    redis.call('EXPIRE', key, ARGV[1])
  end
end
return 0
"""

# KEYS: counters to give one attempt back to; ARGV: counters (by name) to empty.
_RELEASE = """
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then
    redis.call('DECR', key)
  end
end
for _, key in ipairs(ARGV) do
  redis.call('DEL', key)
end
return 0
"""


class _LocalCounters:
    """The same windows in this process alone, while Redis is unreachable."""

    MAX_ENTRIES = 100_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}

    def reserve(self, keys: list[str], limits: list[int], window: int) -> int:
        now = time.monotonic()
        with self._lock:
            if len(self._counts) > self.MAX_ENTRIES:
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
            for key, limit in zip(keys, limits, strict=True):
                count, ends = self._counts.get(key, (0, now + window))
                if ends > now and count >= limit:
                    return max(1, int(ends - now))
            for key in keys:
                count, ends = self._counts.get(key, (0, now + window))
                self._counts[key] = (count + 1, ends) if ends > now else (1, now + window)
        return 0

    def release(self, give_back: list[str], empty: list[str]) -> None:
        with self._lock:
            for key in give_back:
                if key in self._counts:
                    count, ends = self._counts[key]
                    self._counts[key] = (max(0, count - 1), ends)
            for key in empty:
                self._counts.pop(key, None)


_local = _LocalCounters()


def _key(scope: str, name: str) -> str:
    return runtime().key(f"rl:{scope}:{name}")


def reserve(scope: str, limits: list[Limit], window: int) -> None:
    """Count one attempt against every limit, or raise RateLimited (and count
    nothing) if any of them is used up."""
    keys = [_key(scope, lim.name) for lim in limits]
    numbers = [lim.limit for lim in limits]
    try:
        retry_after = int(redis_client.eval(_RESERVE, len(keys), *keys, window, *numbers))
    except redis_lib.RedisError as exc:
        log.warning("rate limiter: Redis unavailable (%s); counting in this process", exc)
        retry_after = _local.reserve(keys, numbers, window)
    if retry_after > 0:
        raise RateLimited(f"too many attempts; try again in {retry_after} seconds", retry_after=retry_after)


def release(scope: str, limits: list[Limit], reset: tuple[Limit, ...] | list[Limit] = ()) -> None:
    """Give back the attempt `reserve` counted (it succeeded); empty `reset`."""
    give_back = [_key(scope, lim.name) for lim in limits if lim not in reset]
    empty = [_key(scope, lim.name) for lim in reset]
    try:
        redis_client.eval(_RELEASE, len(give_back), *give_back, *empty)
    except redis_lib.RedisError as exc:
        log.warning("rate limiter: Redis unavailable (%s)", exc)
    _local.release(give_back, empty)
