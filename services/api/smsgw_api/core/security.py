"""Authentication and roles.

Every protected route takes `X-API-Key: <key>` or `Authorization: Bearer <jwt>`.
Use the decorator with the weakest role allowed:

    @require_role("viewer")   # read
    @require_role("user")     # read + send
    @require_role("admin")    # users, others' keys, SIMs, opt-outs

then `current_principal()` inside the view. The role is read from the
database (cached per process for AUTH_CACHE_SECONDS, 2 s by default). A JWT
carries the user's `token_version` (`tv`) and is refused once the user's
differs: a password change or reset, a role change or a deactivation raises
it and so ends every session at once. Every process drops its cache the
moment any process changes a credential (`forget_credentials`, heard through
core/revocations.py; docs/security.md, "Revocation across processes").
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import wraps

import jwt
import redis as redis_lib
from flask import current_app, g, has_app_context, request
from gevent import monkey
from gevent.threadpool import ThreadPool
from sqlalchemy import text

from smsgw_api.core.errors import Forbidden, Unauthorized
from smsgw_api.core.extensions import db, runtime
from smsgw_api.core.revocations import RevocationFeed
from smsgw_common.models import ROLES

KEY_PREFIX = "sgw_"
PREFIX_LENGTH = 12  # "sgw_" + 8 random characters: shown in listings, used to find the row
SEED_KEY = re.compile(r"[0-9a-fA-F]{64}")  # the seed's plain keys, imported hashed (seed_import/)
AUTH_GENERATION_KEY = "auth:generation"
AUTH_CHANNEL = "auth:changes"
AUTH_CACHE_KEY = "smsgw_auth_cache"  # app.extensions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: str
    api_key_id: int | None = None
    via: str = "jwt"  # "jwt" | "api_key"

    def has_role(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> str:
        return f"{self.username} ({'key ' + str(self.api_key_id) if self.via == 'api_key' else 'jwt'})"


# --- API keys -------------------------------------------------------------


def new_api_key() -> tuple[str, str, str]:
    """Return (key, prefix, sha256 hex). 256 random bits, so SHA-256 is enough:
    a slow password hash protects guessable secrets, and these are not."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[:PREFIX_LENGTH], hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_KEY_SQL = text(
    "SELECT k.id AS key_id, k.key_hash, k.last_used_at, u.id AS user_id, u.username, u.role "
    "FROM api_keys k JOIN users u ON u.id = k.user_id "
    "WHERE k.prefix = :prefix AND k.revoked_at IS NULL AND u.is_active "
    "AND (k.expires_at IS NULL OR k.expires_at > now())"
)
_TOUCH_SQL = text("UPDATE api_keys SET last_used_at = now() WHERE id = :id")


class AuthCache:
    """Who a key or token belongs to, remembered for AUTH_CACHE_SECONDS.

    Looking the caller up costs a query on every request, a large share of a
    send. Every entry remembers the epoch of this process's credentials feed
    (core/revocations.py) it was read under; any process that revokes a key
    or changes a user publishes it, every process's epoch moves on at once,
    and nothing read before is trusted again. Asking costs no round trip.
    While the feed cannot vouch for the epoch (Redis down, resubscribing)
    nothing is cached: every request asks Postgres.
    """

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._entries: dict[str, tuple[float, int, Principal]] = {}
        self._refreshing: dict[str, float] = {}  # ident -> when a request began looking it up again
        self._feed: RevocationFeed | None = None
        self._feed_pid: int | None = None

    def generation(self) -> int | None:
        """The epoch to read a credential under, None if nothing may be
        cached now. Read it BEFORE looking a credential up, so a change
        committed during the lookup makes the entry stale rather than trusted."""
        if self.ttl <= 0:
            return None
        if self._feed_pid != os.getpid():  # first use in this (forked) process
            rt = runtime()
            self._feed = RevocationFeed(rt.settings.common.redis.url, rt.key(AUTH_CHANNEL))
            self._feed_pid = os.getpid()
            self._entries.clear()
        assert self._feed is not None
        return self._feed.current()

    def get(self, ident: str, generation: int | None) -> Principal | None:
        if generation is None:
            return None
        entry = self._entries.get(ident)
        if entry is None or entry[1] != generation:
            return None
        expires, _, principal = entry
        now = time.monotonic()
        if now < expires:
            return principal
        # Expired, but no change was announced: one request looks it up
        # again, and the requests arriving meanwhile keep the answer (for at
        # most one more ttl) instead of all asking Postgres at once, which
        # under load every ttl was a burst of one query per open connection.
        started = self._refreshing.get(ident)
        if started is not None and now - started < self.ttl:
            return principal
        self._refreshing[ident] = now
        return None

    def put(self, ident: str, principal: Principal, generation: int | None) -> None:
        self._refreshing.pop(ident, None)
        if generation is None:
            return
        if len(self._entries) > 10000:
            self._entries.clear()
            self._refreshing.clear()
        self._entries[ident] = (time.monotonic() + self.ttl, generation, principal)

    def forget(self, ident: str) -> None:
        """The lookup found no such caller (any more): forget the old answer."""
        self._entries.pop(ident, None)
        self._refreshing.pop(ident, None)

    def clear(self) -> None:
        self._entries.clear()
        self._refreshing.clear()

    def stop(self) -> None:
        if self._feed is not None:
            self._feed.stop()


def init_app(app) -> None:
    app.extensions[AUTH_CACHE_KEY] = AuthCache(app.config["SMSGW_SETTINGS"].auth_cache_seconds)


def auth_cache() -> AuthCache:
    return current_app.extensions[AUTH_CACHE_KEY]


def credentials_generation() -> int | None:
    return auth_cache().generation()


def forget_credentials() -> None:
    """Call after revoking a key or changing a user (after the commit): no
    process trusts a cached identity any more."""
    auth_cache().clear()
    rt = runtime()
    try:
        # The counter is what open sockets poll (live/socketio.py); the
        # message is what every process's cache hears at once.
        with rt.redis.pipeline(transaction=True) as pipe:
            pipe.incr(rt.key(AUTH_GENERATION_KEY))
            pipe.publish(rt.key(AUTH_CHANNEL), b"1")
            pipe.execute()
    except redis_lib.RedisError as exc:
        # Processes whose subscription is alive keep their cache at most
        # AUTH_CACHE_SECONDS more (docs/security.md).
        log.warning("could not announce a credentials change (%s)", exc)


# --- CPU-bound password hashing --------------------------------------------

_hash_slots: dict[int, object] = {}


def _gevent_patched() -> bool:
    return bool(monkey.is_module_patched("threading"))


def run_hash(fn, *args):
    """Run a password hash (scrypt: about 0.1-0.5 s of CPU and 32 MB) with at
    most PASSWORD_HASH_CONCURRENCY at once in this process, waiting for a
    slot. Under gevent it runs on a real thread (hashlib releases the GIL), so
    the worker's other requests go on meanwhile instead of stalling behind
    every hash of a login flood."""
    size = current_app.config["SMSGW_SETTINGS"].password_hash_concurrency if has_app_context() else 2
    pid = os.getpid()
    if _gevent_patched():
        pool = _hash_slots.get(pid)
        if pool is None:
            pool = _hash_slots[pid] = ThreadPool(size)
        return pool.apply(fn, args)
    semaphore = _hash_slots.get(pid)
    if semaphore is None:
        semaphore = _hash_slots[pid] = threading.BoundedSemaphore(size)
    with semaphore:
        return fn(*args)


def principal_from_key(key: str) -> Principal:
    if not (key.startswith(KEY_PREFIX) or SEED_KEY.fullmatch(key)) or len(key) < PREFIX_LENGTH + 8 or len(key) > 128:
        raise Unauthorized("Invalid API key!", code="invalid_api_key")
    digest = hash_key(key)
    cache = auth_cache()
    generation = credentials_generation()
    cached = cache.get(digest, generation)
    if cached is not None:
        return cached
    settings = current_app.config["SMSGW_SETTINGS"]
    session = db.session
    row = session.execute(_KEY_SQL, {"prefix": key[:PREFIX_LENGTH]}).mappings().first()
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        cache.forget(digest)
        raise Unauthorized("Invalid API key!", code="invalid_api_key")
    last = row["last_used_at"]
    # Writing on every request would turn each read into a write; a
    # minute's precision is what an operator needs to spot unused keys.
    if last is None or datetime.now(UTC) - last > timedelta(seconds=settings.api_key_touch_seconds):
        session.execute(_TOUCH_SQL, {"id": row["key_id"]})
        session.commit()
    else:
        # Give the connection back now: a request holding one connection
        # while it waits for a second one can starve the pool under load.
        session.rollback()
    principal = Principal(row["user_id"], row["username"], row["role"], row["key_id"], "api_key")
    cache.put(digest, principal, generation)
    return principal


# --- JWT ------------------------------------------------------------------


def issue_token(user_id: int, username: str, token_version: int = 0) -> tuple[str, datetime]:
    settings = current_app.config["SMSGW_SETTINGS"]
    now = datetime.now(UTC)
    expires = now + timedelta(hours=settings.jwt_ttl_hours)
    token = jwt.encode(
        {"sub": str(user_id), "username": username, "tv": token_version, "iat": now, "exp": expires},
        settings.jwt_secret,
        algorithm="HS256",
    )
    return token, expires


_USER_SQL = text("SELECT id, username, role, token_version FROM users WHERE id = :id AND is_active")


def principal_from_token(token: str) -> Principal:
    settings = current_app.config["SMSGW_SETTINGS"]
    try:
        # Only HS256 is accepted: a token signed with `none` or any other
        # algorithm fails here, whatever its header claims.
        claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
        user_id = int(claims["sub"])
        # Tokens from before token versions existed count as version 0.
        version = int(claims.get("tv", 0))
    except jwt.ExpiredSignatureError:
        raise Unauthorized("Token has expired!", code="token_expired") from None
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise Unauthorized("Invalid token!", code="invalid_token") from None
    cache = auth_cache()
    generation = credentials_generation()
    cache_key = f"user:{user_id}:{version}"
    cached = cache.get(cache_key, generation)
    if cached is not None:
        return cached
    row = db.session.execute(_USER_SQL, {"id": user_id}).mappings().first()
    db.session.rollback()  # release the connection (see principal_from_key)
    if row is None or row["token_version"] != version:
        cache.forget(cache_key)
    if row is None:
        raise Unauthorized("Invalid token!", code="invalid_token")
    if row["token_version"] != version:
        raise Unauthorized("Token has been revoked!", code="token_revoked")
    principal = Principal(row["id"], row["username"], row["role"], None, "jwt")
    cache.put(cache_key, principal, generation)
    return principal


# --- request hooks ----------------------------------------------------------


def authenticate() -> Principal:
    """The caller of this request, or 401."""
    if "smsgw_principal" in g:
        return g.smsgw_principal
    key = request.headers.get("X-API-Key")
    auth = request.headers.get("Authorization", "")
    if not key and not auth and request.is_json and request.method in ("POST", "PUT", "DELETE"):
        # The seed also took the key in the JSON body; its clients may rely on it.
        body = request.get_json(silent=True)
        if isinstance(body, dict) and isinstance(body.get("api_key"), str):
            key = body["api_key"]
    if key:
        principal = principal_from_key(key.strip())
    elif auth[:7].lower() == "bearer " and auth[7:].strip():
        principal = principal_from_token(auth[7:].strip())
    else:
        raise Unauthorized(
            "API key is missing! Send X-API-Key or Authorization: Bearer <token>",
            code="auth_required",
            headers={"WWW-Authenticate": 'Bearer realm="smsgw"'},
        )
    g.smsgw_principal = principal
    return principal


def current_principal() -> Principal:
    return authenticate()


def require_role(role: str, *, jwt_only: bool = False):
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            principal = authenticate()
            if jwt_only and principal.via != "jwt":
                raise Unauthorized(
                    "Token is missing! This endpoint needs Authorization: Bearer <token>", code="jwt_required"
                )
            if not principal.has_role(role):
                raise Forbidden(f"this action needs the {role} role; you are {principal.role}")
            return view(*args, **kwargs)

        wrapped.smsgw_min_role = role
        return wrapped

    return decorator
