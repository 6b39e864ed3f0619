"""POST /api/auth (the seed's login), GET /api/me, PUT /api/me/password.

The seed returned the user's one stored API key on login. Keys are stored
hashed here, so no stored key can be returned: each successful login revokes
the user's previous login key and returns a fresh one, once. Clients that
keep an API key for long should create a named key (POST /api/api-keys).

Limits and session ending: docs/security.md, "Sessions and keys".
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, g, jsonify
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from smsgw_api.core import ratelimit
from smsgw_api.core.contract import validate
from smsgw_api.core.errors import ApiError, Conflict, Unauthorized, ValidationError
from smsgw_api.core.extensions import db
from smsgw_api.core.openapi import BOOL, INT, NO_BODY, STR, TIME, nullable, ok, register
from smsgw_api.core.ratelimit import Limit
from smsgw_api.core.security import (
    Principal,
    current_principal,
    forget_credentials,
    issue_token,
    new_api_key,
    require_role,
)
from smsgw_api.core.web import audit, body, client_ip, iso, json_body, settings
from smsgw_api.domain.accounts import (
    MAX_USERNAME_LENGTH,
    audit_username,
    check_new_password,
    end_sessions,
    hash_password,
    login_key_ids,
    revoke_keys,
    verify_password,
)
from smsgw_api.domain.requests import ChangePassword, Login
from smsgw_common.models import ApiKey, User

bp = Blueprint("auth", __name__)

LOGIN_KEY_NAME = "login"
# Compared against when the user does not exist, so that a wrong username
# takes as long as a wrong password (no user enumeration by timing).
_DUMMY_HASH = generate_password_hash("not-a-real-password-only-for-timing")


def rotate_login_key(session, user: User) -> str:
    revoke_keys(session, login_key_ids(session, user.id))
    key, prefix, digest = new_api_key()
    session.add(ApiKey(user_id=user.id, name=LOGIN_KEY_NAME, prefix=prefix, key_hash=digest, is_login_key=True))
    return key


def login_limits(username: str, address: str) -> tuple[Limit, Limit]:
    """Per client address (any usernames) and per username from that
    address. Never per username alone: that would let anyone lock anyone out
    by failing on purpose; this slows the attacker and not the account."""
    s = settings()
    return (
        Limit(ratelimit.ident("ip", address), s.login_max_attempts_per_address),
        Limit(
            ratelimit.ident("user", username.casefold()) + ":" + ratelimit.ident("ip", address), s.login_max_attempts
        ),
    )


def _load_credentials(session, username: str):
    """The user's id, hash and state, and the connection given back before
    the slow hash: a flood of logins must not hold the pool."""
    row = None
    if len(username) <= MAX_USERNAME_LENGTH:  # no account has a longer name
        row = session.execute(
            select(User.id, User.password_hash, User.is_active).where(User.username == username)
        ).first()
    session.rollback()
    return row


@bp.post("/api/auth")
def login():
    data = json_body()
    missing = {
        k: "is required" for k in ("username", "password") if not isinstance(data.get(k), str) or not data[k].strip()
    }
    if missing:
        raise ApiError("Username and password are required!", 400, "credentials_required", fields=missing)
    # Bounded and clean before the name reaches the rate limiter, the query or the audit trail.
    creds = validate(Login, data)
    username, password = creds.username.strip(), creds.password
    s = settings()
    limits = login_limits(username, client_ip() or "unknown")
    # Reserved before the password is checked: parallel attempts cannot
    # together check more passwords than the limits allow.
    ratelimit.reserve("login", list(limits), s.login_window_seconds)

    session = db.session
    row = _load_credentials(session, username)
    stored = row.password_hash if row else _DUMMY_HASH
    valid = verify_password(stored, password)
    user = None
    if row is not None and valid and row.is_active:
        # The hash checked must still be the user's: a password changed
        # while this login was hashing does not let the old one in.
        user = session.scalar(
            select(User).where(User.id == row.id, User.password_hash == stored, User.is_active).with_for_update()
        )
    if user is None:
        session.rollback()
        audit("authentication", f"failed login for {audit_username(username)}", status="failed")
        session.commit()
        raise Unauthorized("Invalid credentials!", code="invalid_credentials")

    if stored.startswith("pbkdf2:"):  # the seed's hash, replaced so that it leaves the database
        session.rollback()  # (hashing: no connection held)
        new_hash = hash_password(password)
        user = session.scalar(
            select(User).where(User.id == row.id, User.password_hash == stored, User.is_active).with_for_update()
        )
        if user is None:
            raise Unauthorized("Invalid credentials!", code="invalid_credentials")
        user.password_hash = new_hash
    api_key = rotate_login_key(session, user)
    user.last_login_at = datetime.now(UTC)
    token, expires = issue_token(user.id, user.username, user.token_version)
    g.smsgw_principal = Principal(user.id, user.username, user.role, None, "jwt")
    audit("authentication", f"{user.username} logged in")
    session.commit()
    forget_credentials()  # the previous login key is revoked
    # Only failures use up the window; this user's from this address start afresh.
    ratelimit.release("login", list(limits), reset=[limits[1]])
    return jsonify(
        {
            "token": token,
            "username": user.username,
            "role": user.role,
            "api_key": api_key,
            "expires_at": iso(expires),
            "user_id": user.id,
        }
    )


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
    change = body(ChangePassword)
    p = current_principal()
    current = change.current_password
    new_password = change.new_password
    s = settings()
    # Guesses at the current password are limited like logins, per user: the
    # caller is signed in already, maybe with a stolen session.
    limits = [Limit(f"user-id:{p.user_id}", s.login_max_attempts)]
    ratelimit.reserve("password", limits, s.login_window_seconds)
    session = db.session
    stored = session.scalar(select(User.password_hash).where(User.id == p.user_id))
    session.rollback()  # no connection held while hashing
    if not isinstance(current, str) or stored is None or not verify_password(stored, current):
        audit("change_password", f"{p.username}: wrong current password", status="failed")
        session.commit()
        raise ValidationError({"current_password": "does not match"}, status=403, code="wrong_password")
    ratelimit.release("password", limits, reset=limits)
    new_hash = hash_password(check_new_password(new_password, "new_password"))
    user = session.scalar(select(User).where(User.id == p.user_id, User.password_hash == stored).with_for_update())
    if user is None:
        raise Conflict("the password was changed meanwhile; try again", code="password_changed")
    user.password_hash = new_hash
    end_sessions(session, user.id)
    audit("change_password", f"{user.username} changed their password")
    session.commit()
    forget_credentials()
    session.refresh(user)
    # Every session of the user ended, this one too: the caller gets a new one.
    token, expires = issue_token(user.id, user.username, user.token_version)
    return jsonify({"message": "Password changed", "token": token, "expires_at": iso(expires)})


@bp.post("/api/me/sessions/end")
@require_role("viewer")
def end_my_sessions():
    """Sign out everywhere: every JWT and login key of the caller's (this one
    too) stops working at once; keys made for clients stay."""
    p = current_principal()
    end_sessions(db.session, p.user_id)
    audit("end_sessions", f"{p.username} signed out everywhere")
    db.session.commit()
    forget_credentials()
    return jsonify({"message": "Signed out everywhere"})


# What user_dict returns, for the OpenAPI document (users.py uses it too).
USER_SCHEMA = {
    "id": INT,
    "username": STR,
    "role": STR,
    "is_active": BOOL,
    "created_at": TIME,
    "last_login_at": TIME,
}
register(
    "/api/auth",
    "POST",
    {
        "summary": "Log in (seed): returns a JWT and a fresh API key named 'login'",
        "tags": ["auth"],
        "security": [],
        "responses": {
            "200": ok({"token": STR, "username": STR, "role": STR, "api_key": STR, "expires_at": STR, "user_id": INT}),
            "401": {"description": "Invalid credentials"},
            "429": {"description": "Too many attempts"},
        },
    },
    body=Login,
)
register(
    "/api/me",
    "GET",
    {
        "summary": "The caller's user",
        "tags": ["auth"],
        "responses": {"200": ok({**USER_SCHEMA, "auth": STR, "api_key_id": nullable(INT)})},
    },
)
register(
    "/api/me/password",
    "PUT",
    {
        "summary": "Change the caller's password",
        "tags": ["auth"],
        "responses": {
            "200": ok({"message": STR, "token": STR, "expires_at": TIME}),
            "403": {"description": "current_password does not match"},
            "409": {"description": "the password was changed meanwhile"},
            "429": {"description": "Too many wrong current passwords"},
        },
    },
    body=ChangePassword,
)
register(
    "/api/me/sessions/end",
    "POST",
    {
        "summary": "Sign out everywhere: end every session (JWTs and login keys) of the caller",
        "tags": ["auth"],
        "responses": {"200": ok({"message": STR})},
    },
    body=NO_BODY,
)
