"""Users (admin only): GET|POST /api/users, PUT|DELETE /api/users/<id>."""
from __future__ import annotations

import re

from flask import Blueprint, jsonify
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from smsgw_common.models import ROLES, User

from .auth import check_new_password, hash_password, user_dict
from .errors import ApiError, Conflict, NotFound, ValidationError
from .extensions import db
from .openapi import json_body as body_spec
from .openapi import register
from .security import current_principal, forget_credentials, require_role
from .web import audit, json_body

bp = Blueprint("users", __name__)

_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{3,64}$")


def check_username(value) -> str:
    if not isinstance(value, str) or not _USERNAME.match(value.strip()):
        raise ValidationError({"username": "3-64 characters: letters, digits, _ . @ -"})
    return value.strip()


def check_role(value) -> str:
    if not isinstance(value, str) or value not in ROLES:
        raise ValidationError({"role": f"must be one of {', '.join(ROLES)}"})
    return value


def _check_active(value) -> bool:
    if not isinstance(value, bool):
        raise ValidationError({"is_active": "must be true or false"})
    return value


def create_user(session, username: str, password: str, role: str) -> User:
    user = User(username=username, password_hash=hash_password(password), role=role)
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"user {username!r} already exists", code="username_taken") from None
    return user


def _get(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def _other_active_admins(session, user_id: int) -> int:
    return session.scalar(
        select(func.count()).select_from(User).where(User.role == "admin", User.is_active, User.id != user_id)
    )


@bp.get("/api/users")
@require_role("admin")
def list_users():
    users = db.session.scalars(select(User).order_by(User.id)).all()
    return jsonify({"users": [user_dict(u) for u in users], "count": len(users)})


@bp.post("/api/users")
@require_role("admin")
def add_user():
    data = json_body()
    fields = {}
    try:
        username = check_username(data.get("username"))
    except ValidationError as exc:
        fields.update(exc.fields)
    try:
        password = check_new_password(data.get("password"))
    except ValidationError as exc:
        fields.update(exc.fields)
    role = data.get("role", "user")
    if not isinstance(role, str) or role not in ROLES:
        fields["role"] = f"must be one of {', '.join(ROLES)}"
    if fields:
        raise ValidationError(fields)
    user = create_user(db.session, username, password, role)
    audit("create_user", f"created user {username} with role {role}")
    db.session.commit()
    return jsonify({"message": "User created", "id": user.id, "user": user_dict(user)}), 201


@bp.put("/api/users/<int:user_id>")
@require_role("admin")
def update_user(user_id: int):
    data = json_body()
    session = db.session
    user = _get(user_id)
    unknown = set(data) - {"role", "password", "is_active", "username"}
    if unknown:
        raise ValidationError({k: "unknown field" for k in sorted(unknown)})
    # Every field is checked before anything else is decided: an invalid
    # role is a 400 whoever the user is, not a 409 for the last admin.
    fields: dict[str, str] = {}
    new: dict = {}
    for name, check in (("username", check_username), ("role", check_role), ("is_active", _check_active),
                        ("password", check_new_password)):
        if name in data:
            try:
                new[name] = check(data[name])
            except ValidationError as exc:
                fields.update(exc.fields or {name: exc.message})
    if fields:
        raise ValidationError(fields)
    demoting = new.get("role", "admin") != "admin" or new.get("is_active") is False
    if user.role == "admin" and demoting and _other_active_admins(session, user.id) == 0:
        raise Conflict("this is the last active admin; promote another user first", code="last_admin")
    changes = []
    if "username" in new:
        user.username = new["username"]
        changes.append("username")
    if "role" in new:
        user.role = new["role"]
        changes.append(f"role={user.role}")
    if "is_active" in new:
        user.is_active = new["is_active"]
        changes.append(f"is_active={user.is_active}")
    if "password" in new:
        user.password_hash = hash_password(new["password"])
        changes.append("password")
    if not changes:
        raise ApiError("nothing to update; send role, password, is_active or username", 400, "empty_update")
    audit("update_user", f"updated user {user.username}: {', '.join(changes)}")
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict("that username is taken", code="username_taken") from None
    forget_credentials()
    return jsonify({"message": "User updated", "user": user_dict(user)})


@bp.delete("/api/users/<int:user_id>")
@require_role("admin")
def delete_user(user_id: int):
    session = db.session
    user = _get(user_id)
    if user.id == current_principal().user_id:
        raise Conflict("you cannot delete yourself", code="self_delete")
    if user.role == "admin" and _other_active_admins(session, user.id) == 0:
        raise Conflict("this is the last active admin", code="last_admin")
    audit("delete_user", f"deleted user {user.username}")
    session.delete(user)
    session.commit()
    forget_credentials()
    return jsonify({"message": "User deleted"})


_USER_BODY = {"type": "object", "properties": {
    "username": {"type": "string"}, "password": {"type": "string"},
    "role": {"type": "string", "enum": list(ROLES)}, "is_active": {"type": "boolean"}}}
register("/api/users", "GET", {"summary": "List users (admin)", "tags": ["users"]})
register("/api/users", "POST", {"summary": "Create a user (admin)", "tags": ["users"],
                                "requestBody": body_spec({**_USER_BODY, "required": ["username", "password"]}),
                                "responses": {"201": {"description": "Created"}}})
register("/api/users/<int:user_id>", "PUT", {"summary": "Change a user's role, password or state (admin)",
                                             "tags": ["users"], "requestBody": body_spec(_USER_BODY)})
register("/api/users/<int:user_id>", "DELETE", {"summary": "Delete a user (admin)", "tags": ["users"]})
