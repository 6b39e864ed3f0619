"""Named API keys: GET|POST /api/api-keys, DELETE /api/api-keys/<id>, and the
seed's POST /api/generate-api-key (JWT only).

A key is shown once, in the response that creates it; the database keeps its
SHA-256 and a short prefix (to find the row and to tell keys apart in lists).
Everyone manages their own keys; an admin can list, create and revoke anyone's.

A key may make keys (scripts rotate their own credentials), within what it
is itself: a key made with a key records it as `parent_key_id`, never
expires after it and is revoked with it, at any depth (docs/security.md,
"Sessions and keys").
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from smsgw_api.core.errors import Forbidden, NotFound, Unauthorized, ValidationError
from smsgw_api.core.extensions import db
from smsgw_api.core.openapi import BOOL, INT, STR, TIME, array, nullable, obj, ok, register, stored_row
from smsgw_api.core.rowjson import flag_unreadable, safe_iso, serialise_rows
from smsgw_api.core.security import current_principal, forget_credentials, new_api_key, require_role
from smsgw_api.core.web import audit, body, query
from smsgw_api.domain.accounts import lock_parent_key, revoke_keys
from smsgw_api.domain.requests import ApiKeyQuery, CreateApiKey
from smsgw_common.models import ApiKey, User

bp = Blueprint("apikeys", __name__)


_KEY_TIMES = ("created_at", "last_used_at", "expires_at", "revoked_at")


def key_dict(key: ApiKey, username: str | None = None) -> dict:
    # A date beyond Python's range reads clamped (smsgw_common.rowsafety), so
    # `active` compares it as Postgres does when the key is used.
    out = {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "user_id": key.user_id,
        "username": username,
        "created_at": safe_iso(key.created_at),
        "last_used_at": safe_iso(key.last_used_at),
        "expires_at": safe_iso(key.expires_at),
        "revoked_at": safe_iso(key.revoked_at),
        "parent_key_id": key.parent_key_id,
        "active": key.revoked_at is None and (key.expires_at is None or key.expires_at > datetime.now(UTC)),
    }
    return flag_unreadable(out, key, _KEY_TIMES)


def _create(data: CreateApiKey, default_name: str, status: int = 201):
    p = current_principal()
    session = db.session
    name = data.name if data.name is not None else default_name
    if not name.strip():
        raise ValidationError({"name": "must be a non-empty string of at most 100 characters"})
    owner_id = p.user_id
    if data.user_id is not None:
        owner_id = data.user_id
        if owner_id != p.user_id and not p.is_admin:
            raise Forbidden("only an admin can create keys for other users")
        if session.get(User, owner_id) is None:
            raise NotFound(f"user {owner_id} not found")
    expires_at = data.expires_at
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise ValidationError({"expires_at": "must be in the future"})
    parent_id = p.api_key_id if p.via == "api_key" else None
    for _ in range(3):  # a prefix collision is astronomically rare; retry anyway
        if parent_id is not None:
            # Locked until the commit, so the parent cannot be revoked between
            # this check and the child's insert (revoke_keys locks the tree).
            parent = lock_parent_key(session, parent_id)
            if parent is None:
                raise Unauthorized("Invalid API key!", code="invalid_api_key")
            if parent.expires_at is not None and (expires_at is None or expires_at > parent.expires_at):
                expires_at = parent.expires_at
        key, prefix, digest = new_api_key()
        row = ApiKey(
            user_id=owner_id,
            name=name.strip(),
            prefix=prefix,
            key_hash=digest,
            expires_at=expires_at,
            parent_key_id=parent_id,
        )
        session.add(row)
        try:
            session.flush()
            break
        except IntegrityError:
            session.rollback()
    audit("create_api_key", f"created API key {row.name!r} ({row.prefix}) for user {owner_id}")
    session.commit()
    out = {
        "api_key": key,
        "message": "API key generated successfully",
        "id": row.id,
        "prefix": row.prefix,
        "name": row.name,
        "key": key_dict(row),
    }
    return jsonify(out), status


@bp.post("/api/generate-api-key")
@require_role("viewer", jwt_only=True)
def generate_api_key():
    data = body(CreateApiKey) if request.get_data(cache=True).strip() else CreateApiKey()
    return _create(data, "generated", status=200)  # the seed's status code


@bp.post("/api/api-keys")
@require_role("viewer")
def create_key():
    return _create(body(CreateApiKey), "")


@bp.get("/api/api-keys")
@require_role("viewer")
def list_keys():
    p = current_principal()
    params = query(ApiKeyQuery)
    stmt = select(ApiKey, User.username).join(User, User.id == ApiKey.user_id).order_by(ApiKey.id.desc())
    if params.user_id is not None:
        if params.user_id != p.user_id and not p.is_admin:
            raise Forbidden("only an admin can list other users' keys")
        stmt = stmt.where(ApiKey.user_id == params.user_id)
    elif params.all and p.is_admin:
        pass
    else:
        stmt = stmt.where(ApiKey.user_id == p.user_id)
    if not params.include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    rows = db.session.execute(stmt.limit(1000)).all()
    keys = serialise_rows(rows, lambda row: key_dict(row[0], row[1]), lambda row: row[0].id)
    return jsonify({"api_keys": keys, "count": len(rows)})


@bp.delete("/api/api-keys/<int:key_id>")
@require_role("viewer")
def revoke_key(key_id: int):
    p = current_principal()
    session = db.session
    key = session.get(ApiKey, key_id)
    # Someone else's key is "not found" to a non-admin: ids are not a secret,
    # but there is no reason to confirm they exist.
    if key is None or (key.user_id != p.user_id and not p.is_admin):
        raise NotFound(f"API key {key_id} not found")
    if key.revoked_at is None:
        revoked = revoke_keys(session, [key.id])
        audit(
            "revoke_api_key",
            f"revoked API key {key.name!r} ({key.prefix}) of user {key.user_id}"
            + (f" and {revoked - 1} key(s) made with it" if revoked > 1 else ""),
        )
        session.commit()
        forget_credentials()
        session.refresh(key)
    return jsonify({"message": "API key revoked", "key": key_dict(key)})


_KEY = {
    "id": INT,
    "name": STR,
    "prefix": STR,
    "user_id": INT,
    "username": nullable(STR),
    "created_at": TIME,
    "last_used_at": TIME,
    "expires_at": TIME,
    "revoked_at": TIME,
    "active": BOOL,
}
_CREATED = {"api_key": STR, "message": STR, "id": INT, "prefix": STR, "name": STR, "key": obj(_KEY)}
register(
    "/api/generate-api-key",
    "POST",
    {
        "summary": "Generate an API key (seed; JWT only). The key is shown once.",
        "tags": ["api-keys"],
        "security": [{"Bearer": []}],
        "responses": {"200": ok(_CREATED, "Created (200, the seed's status code)")},
    },
    body=CreateApiKey,
    body_required=False,
)
register(
    "/api/api-keys",
    "POST",
    {
        "summary": "Create a named API key (shown once)",
        "tags": ["api-keys"],
        "responses": {"201": ok(_CREATED, "Created")},
    },
    body=CreateApiKey,
)
register(
    "/api/api-keys",
    "GET",
    {
        "summary": "List API keys (own; admin: ?user_id= or ?all=1)",
        "tags": ["api-keys"],
        "responses": {"200": ok({"api_keys": array(stored_row(_KEY)), "count": INT})},
    },
    query=ApiKeyQuery,
)
register(
    "/api/api-keys/<int:key_id>",
    "DELETE",
    {
        "summary": "Revoke an API key",
        "tags": ["api-keys"],
        "responses": {"200": ok({"message": STR, "key": obj(_KEY)})},
    },
)
