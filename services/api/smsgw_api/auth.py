"""POST /api/auth (the seed's login), GET /api/me, PUT /api/me/password.

The seed returned the user's one stored API key on login. Keys are stored
hashed here, so no stored key can be returned: each successful login revokes
the user's previous key named "login" and returns a fresh one, once. Clients
that keep an API key for long should create a named key (POST /api/api-keys).
"""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, g, jsonify
from sqlalchemy import select, update
from werkzeug.security import check_password_hash, generate_password_hash

from smsgw_common.models import ApiKey, User

from . import ratelimit
from .errors import ApiError, Unauthorized, ValidationError
from .extensions import db
from .openapi import json_body as body_spec
from .openapi import register
from .security import Principal, current_principal, forget_credentials, issue_token, new_api_key, require_role
from .web import audit, client_ip, iso, json_body, settings

bp = Blueprint("auth", __name__)

LOGIN_KEY_NAME = "login"
MIN_PASSWORD_LENGTH = 10
# Compared against when the user does not exist, so that a wrong username
# takes as long as a wrong password (no user enumeration by timing).
_DUMMY_HASH = generate_password_hash("not-a-real-password-only-for-timing")


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def check_new_password(password, field: str = "password") -> str:
    if not isinstance(password, str) or not password:
        raise ValidationError({field: "is required"})
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError({field: f"must be at least {MIN_PASSWORD_LENGTH} characters"})
    if len(password) > 256:
        raise ValidationError({field: "must be at most 256 characters"})
    return password


def rotate_login_key(session, user: User) -> str:
    now = datetime.now(timezone.utc)
    session.execute(
        update(ApiKey)
        .where(ApiKey.user_id == user.id, ApiKey.name == LOGIN_KEY_NAME, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    key, prefix, digest = new_api_key()
    session.add(ApiKey(user_id=user.id, name=LOGIN_KEY_NAME, prefix=prefix, key_hash=digest))
    return key


@bp.post("/api/auth")
def login():
    data = json_body()
    username, password = data.get("username"), data.get("password")
    if not isinstance(username, str) or not username.strip() or not isinstance(password, str) or not password:
        raise ApiError("Username and password are required!", 400, "credentials_required",
                       fields={k: "is required" for k in ("username", "password")
                               if not isinstance(data.get(k), str) or not data.get(k)})
    username = username.strip()
    s = settings()
    ip = client_ip() or "unknown"
    user_ident = [f"user:{username.lower()}"]
    ip_ident = [f"ip:{ip}"]
    ratelimit.check("login", user_ident, s.login_max_attempts, s.login_window_seconds)
    ratelimit.check("login", ip_ident, s.login_max_attempts * 5, s.login_window_seconds)

    session = db.session
    user = session.scalar(select(User).where(User.username == username))
    valid = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
    if not user or not valid or not user.is_active:
        ratelimit.hit("login", user_ident + ip_ident, s.login_window_seconds)
        audit("authentication", f"failed login for {username!r}", status="failed")
        session.commit()
        raise Unauthorized("Invalid credentials!", code="invalid_credentials")

    ratelimit.reset("login", user_ident)
    api_key = rotate_login_key(session, user)
    user.last_login_at = datetime.now(timezone.utc)
    token, expires = issue_token(user.id, user.username)
    g.smsgw_principal = Principal(user.id, user.username, user.role, None, "jwt")
    audit("authentication", f"{user.username} logged in")
    session.commit()
    forget_credentials()  # the previous login key is revoked
    return jsonify({
        "token": token,
        "username": user.username,
        "role": user.role,
        "api_key": api_key,
        "expires_at": iso(expires),
        "user_id": user.id,
    })


def user_dict(user: User) -> dict:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "is_active": user.is_active,
        "created_at": iso(user.created_at),
        "last_login_at": iso(user.last_login_at),
    }


@bp.get("/api/me")
@require_role("viewer")
def me():
    p = current_principal()
    user = db.session.get(User, p.user_id)
    out = user_dict(user)
    out["auth"] = p.via
    out["api_key_id"] = p.api_key_id
    return jsonify(out)


@bp.put("/api/me/password")
@require_role("viewer")
def change_password():
    data = json_body()
    p = current_principal()
    user = db.session.get(User, p.user_id)
    current = data.get("current_password")
    if not isinstance(current, str) or not check_password_hash(user.password_hash, current):
        raise ValidationError({"current_password": "does not match"}, status=403, code="wrong_password")
    user.password_hash = hash_password(check_new_password(data.get("new_password"), "new_password"))
    audit("change_password", f"{user.username} changed their password")
    db.session.commit()
    return jsonify({"message": "Password changed"})


register("/api/auth", "POST", {
    "summary": "Log in (seed): returns a JWT and a fresh API key named 'login'",
    "tags": ["auth"], "security": [],
    "requestBody": body_spec({"type": "object", "required": ["username", "password"],
                              "properties": {"username": {"type": "string"}, "password": {"type": "string"}}}),
    "responses": {"200": {"description": "token, username, role, api_key, expires_at"},
                  "401": {"description": "Invalid credentials"}, "429": {"description": "Too many attempts"}},
})
register("/api/me", "GET", {"summary": "The caller's user", "tags": ["auth"]})
register("/api/me/password", "PUT", {
    "summary": "Change the caller's password", "tags": ["auth"],
    "requestBody": body_spec({"type": "object", "required": ["current_password", "new_password"],
                              "properties": {"current_password": {"type": "string"},
                                             "new_password": {"type": "string", "minLength": MIN_PASSWORD_LENGTH}}}),
})
