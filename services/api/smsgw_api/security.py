"""Authentication and roles.

Every protected route takes `X-API-Key: <key>` or `Authorization: Bearer <jwt>`.
Use the decorator with the weakest role allowed:

    @require_role("viewer")   # read
    @require_role("user")     # read + send
    @require_role("admin")    # users, others' keys, SIMs, opt-outs

then `current_principal()` inside the view. The role is read from the
database (cached per process for AUTH_CACHE_SECONDS, 2 s by default), so
demoting or deactivating a user takes effect within seconds, whatever token
they hold.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import wraps

import jwt
from flask import current_app, g, request
from sqlalchemy import text

from smsgw_common.models import ROLES

from .errors import Forbidden, Unauthorized
from .extensions import db

KEY_PREFIX = "sgw_"
PREFIX_LENGTH = 12  # "sgw_" + 8 random characters: shown in listings, used to find the row


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
    send. A key revoked (or a user changed) through this process is
    forgotten at once; other worker processes notice within the TTL.
    """

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, ident: str) -> Principal | None:
        if self.ttl <= 0:
            return None
        entry = self._entries.get(ident)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, ident: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) > 10000:
            self._entries.clear()
        self._entries[ident] = (time.monotonic() + self.ttl, principal)

    def clear(self) -> None:
        self._entries.clear()


def init_app(app) -> None:
    app.extensions["smsgw_auth_cache"] = AuthCache(app.config["SMSGW_SETTINGS"].auth_cache_seconds)


def auth_cache() -> AuthCache:
    return current_app.extensions["smsgw_auth_cache"]


def forget_credentials() -> None:
    """Call after revoking a key or changing a user: no cached identity survives."""
    auth_cache().clear()


def _principal_from_key(key: str) -> Principal:
    if not key.startswith(KEY_PREFIX) or len(key) < PREFIX_LENGTH + 8 or len(key) > 128:
        raise Unauthorized("Invalid API key!", code="invalid_api_key")
    digest = hash_key(key)
    cache = auth_cache()
    cached = cache.get(digest)
    if cached is not None:
        return cached
    settings = current_app.config["SMSGW_SETTINGS"]
    session = db.session
    row = session.execute(_KEY_SQL, {"prefix": key[:PREFIX_LENGTH]}).mappings().first()
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        raise Unauthorized("Invalid API key!", code="invalid_api_key")
    last = row["last_used_at"]
    # Writing on every request would turn each read into a write; a
    # minute's precision is what an operator needs to spot unused keys.
    if last is None or datetime.now(timezone.utc) - last > timedelta(seconds=settings.api_key_touch_seconds):
        session.execute(_TOUCH_SQL, {"id": row["key_id"]})
        session.commit()
    else:
        # Give the connection back now: a request holding one connection
        # while it waits for a second one can starve the pool under load.
        session.rollback()
    principal = Principal(row["user_id"], row["username"], row["role"], row["key_id"], "api_key")
    cache.put(digest, principal)
    return principal


# --- JWT ------------------------------------------------------------------

def issue_token(user_id: int, username: str) -> tuple[str, datetime]:
    settings = current_app.config["SMSGW_SETTINGS"]
    now = datetime.now(timezone.utc)
    expires = now + timedelta(hours=settings.jwt_ttl_hours)
    token = jwt.encode(
        {"sub": str(user_id), "username": username, "iat": now, "exp": expires},
        settings.jwt_secret,
        algorithm="HS256",
    )
    return token, expires


_USER_SQL = text("SELECT id, username, role FROM users WHERE id = :id AND is_active")


def _principal_from_token(token: str) -> Principal:
    settings = current_app.config["SMSGW_SETTINGS"]
    try:
        # Only HS256 is accepted: a token signed with `none` or any other
        # algorithm fails here, whatever its header claims.
        claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"],
                            options={"require": ["exp", "sub"]})
        user_id = int(claims["sub"])
    except jwt.ExpiredSignatureError:
        raise Unauthorized("Token has expired!", code="token_expired") from None
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise Unauthorized("Invalid token!", code="invalid_token") from None
    cache = auth_cache()
    cached = cache.get(f"user:{user_id}")
    if cached is not None:
        return cached
    row = db.session.execute(_USER_SQL, {"id": user_id}).mappings().first()
    db.session.rollback()  # release the connection (see _principal_from_key)
    if row is None:
        raise Unauthorized("Invalid token!", code="invalid_token")
    principal = Principal(row["id"], row["username"], row["role"], None, "jwt")
    cache.put(f"user:{user_id}", principal)
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
        principal = _principal_from_key(key.strip())
    elif auth[:7].lower() == "bearer " and auth[7:].strip():
        principal = _principal_from_token(auth[7:].strip())
    else:
        raise Unauthorized(
            "API key is missing! Send X-API-Key or Authorization: Bearer <token>", code="auth_required",
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
                raise Unauthorized("Token is missing! This endpoint needs Authorization: Bearer <token>",
                                   code="jwt_required")
            if not principal.has_role(role):
                raise Forbidden(f"this action needs the {role} role; you are {principal.role}")
            return view(*args, **kwargs)

        wrapped.smsgw_min_role = role
        return wrapped

    return decorator
