"""Named API keys: GET|POST /api/api-keys, DELETE /api/api-keys/<id>, and the
seed's POST /api/generate-api-key (JWT only).

A key is shown once, in the response that creates it; the database keeps its
SHA-256 and a short prefix (to find the row and to tell keys apart in lists).
Everyone manages their own keys; an admin can list, create and revoke anyone's.
"""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from smsgw_common.models import ApiKey, User

from .errors import Forbidden, NotFound, ValidationError
from .extensions import db
from .openapi import json_body as body_spec
from .openapi import query, register
from .security import current_principal, forget_credentials, new_api_key, require_role
from .web import audit, iso, json_body, parse_int, parse_time

bp = Blueprint("apikeys", __name__)


def key_dict(key: ApiKey, username: str | None = None) -> dict:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "user_id": key.user_id,
        "username": username,
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
        "expires_at": iso(key.expires_at),
        "revoked_at": iso(key.revoked_at),
        "active": key.revoked_at is None and (key.expires_at is None or key.expires_at > datetime.now(timezone.utc)),
    }


def _create(data: dict, default_name: str, status: int = 201):
    p = current_principal()
    session = db.session
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 100:
        raise ValidationError({"name": "must be a non-empty string of at most 100 characters"})
    owner_id = p.user_id
    if data.get("user_id") is not None:
        owner_id = parse_int(data["user_id"], "user_id", 1)
        if owner_id != p.user_id and not p.is_admin:
            raise Forbidden("only an admin can create keys for other users")
        if session.get(User, owner_id) is None:
            raise NotFound(f"user {owner_id} not found")
    expires_at = None
    if data.get("expires_at") is not None:
        expires_at = parse_time(data["expires_at"], "expires_at")
        if expires_at <= datetime.now(timezone.utc):
            raise ValidationError({"expires_at": "must be in the future"})
    for _ in range(3):  # a prefix collision is astronomically rare; retry anyway
        key, prefix, digest = new_api_key()
        row = ApiKey(user_id=owner_id, name=name.strip(), prefix=prefix, key_hash=digest, expires_at=expires_at)
        session.add(row)
        try:
            session.flush()
            break
        except IntegrityError:
            session.rollback()
    audit("create_api_key", f"created API key {row.name!r} ({row.prefix}) for user {owner_id}")
    session.commit()
    out = {"api_key": key, "message": "API key generated successfully", "id": row.id, "prefix": row.prefix,
           "name": row.name, "key": key_dict(row)}
    return jsonify(out), status


@bp.post("/api/generate-api-key")
@require_role("viewer", jwt_only=True)
def generate_api_key():
    data = json_body() if request.get_data(cache=True).strip() else {}
    return _create(data, "generated", status=200)  # the seed's status code


@bp.post("/api/api-keys")
@require_role("viewer")
def create_key():
    return _create(json_body(), "")


@bp.get("/api/api-keys")
@require_role("viewer")
def list_keys():
    p = current_principal()
    stmt = select(ApiKey, User.username).join(User, User.id == ApiKey.user_id).order_by(ApiKey.id.desc())
    if request.args.get("user_id"):
        user_id = parse_int(request.args["user_id"], "user_id", 1)
        if user_id != p.user_id and not p.is_admin:
            raise Forbidden("only an admin can list other users' keys")
        stmt = stmt.where(ApiKey.user_id == user_id)
    elif request.args.get("all") in ("1", "true") and p.is_admin:
        pass
    else:
        stmt = stmt.where(ApiKey.user_id == p.user_id)
    if request.args.get("include_revoked") not in ("1", "true"):
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    rows = db.session.execute(stmt.limit(1000)).all()
    return jsonify({"api_keys": [key_dict(k, u) for k, u in rows], "count": len(rows)})


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
        key.revoked_at = datetime.now(timezone.utc)
        audit("revoke_api_key", f"revoked API key {key.name!r} ({key.prefix}) of user {key.user_id}")
        session.commit()
        forget_credentials()
    return jsonify({"message": "API key revoked", "key": key_dict(key)})


_KEY_BODY = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 100}, "user_id": {"type": "integer", "description": "admin only"},
    "expires_at": {"type": "string", "format": "date-time"}}}
register("/api/generate-api-key", "POST", {
    "summary": "Generate an API key (seed; JWT only). The key is shown once.", "tags": ["api-keys"],
    "security": [{"Bearer": []}], "requestBody": body_spec(_KEY_BODY, required=False),
    "responses": {"200": {"description": "api_key, message, id, prefix, name"}}})
register("/api/api-keys", "POST", {"summary": "Create a named API key (shown once)", "tags": ["api-keys"],
                                   "requestBody": body_spec({**_KEY_BODY, "required": ["name"]}),
                                   "responses": {"201": {"description": "Created"}}})
register("/api/api-keys", "GET", {"summary": "List API keys (own; admin: ?user_id= or ?all=1)", "tags": ["api-keys"],
                                  "parameters": [query("user_id", "integer"), query("all", "boolean"),
                                                 query("include_revoked", "boolean")]})
register("/api/api-keys/<int:key_id>", "DELETE", {"summary": "Revoke an API key", "tags": ["api-keys"]})
