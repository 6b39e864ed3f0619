"""Fixed-window counters in Redis (shared by every worker and replica).

Login attempts are limited per username and per client address, so a
password cannot be brute-forced from one place nor one account be guessed at
from many. If Redis is down the limiter lets requests through and logs it:
refusing every login because a cache is down would lock everyone out.
"""
from __future__ import annotations

import logging

import redis as redis_lib

from .errors import ApiError
from .extensions import redis_client

log = logging.getLogger(__name__)


class RateLimited(ApiError):
    status = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


def _key(scope: str, ident: str) -> str:
    return f"smsgw:rl:{scope}:{ident}"


def check(scope: str, idents: list[str], limit: int, window: int) -> None:
    """Raise RateLimited if any identity already used up its attempts."""
    try:
        pipe = redis_client.pipeline()
        for ident in idents:
            pipe.get(_key(scope, ident))
            pipe.ttl(_key(scope, ident))
        values = pipe.execute()
    except redis_lib.RedisError as exc:
        log.warning("rate limiter unavailable (%s); allowing the request", exc)
        return
    for i in range(0, len(values), 2):
        count, ttl = values[i], values[i + 1]
        if count is not None and int(count) >= limit:
            raise RateLimited(
                f"too many attempts; try again in {max(1, ttl)} seconds", retry_after=ttl if ttl > 0 else window
            )


def hit(scope: str, idents: list[str], window: int) -> None:
    try:
        pipe = redis_client.pipeline()
        for ident in idents:
            pipe.incr(_key(scope, ident))
            pipe.expire(_key(scope, ident), window, nx=True)
        pipe.execute()
    except redis_lib.RedisError as exc:
        log.warning("rate limiter unavailable (%s)", exc)


def reset(scope: str, idents: list[str]) -> None:
    try:
        redis_client.delete(*[_key(scope, ident) for ident in idents])
    except redis_lib.RedisError as exc:
        log.warning("rate limiter unavailable (%s)", exc)
