"""Users (admin only): GET|POST /api/users, PUT|DELETE /api/users/<id>."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from smsgw_api.core.errors import ApiError, Conflict, NotFound, ValidationError
from smsgw_api.core.extensions import db
from smsgw_api.core.openapi import INT, STR, array, obj, ok, register
from smsgw_api.core.security import current_principal, forget_credentials, require_role
from smsgw_api.core.web import audit, body
from smsgw_api.domain.accounts import check_new_password, end_sessions, hash_password
from smsgw_api.domain.requests import CreateUser, UpdateUser
from smsgw_api.routes.auth import USER_SCHEMA, user_dict
from smsgw_common.models import User

bp = Blueprint("users", __name__)


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
    new = body(CreateUser)
    username, password, role = new.username, check_new_password(new.password), new.role
    user = create_user(db.session, username, password, role)
    audit("create_user", f"created user {username} with role {role}")
    db.session.commit()
    return jsonify({"message": "User created", "id": user.id, "user": user_dict(user)}), 201


@bp.put("/api/users/<int:user_id>")
@require_role("admin")
def update_user(user_id: int):
    # Every field is checked before anything else is decided: an invalid
    # role is a 400 whoever the user is, not a 409 for the last admin.
    change = body(UpdateUser)
    session = db.session
    new: dict = {name: getattr(change, name) for name in change.model_fields_set}
    for name, value in list(new.items()):
        if value is None:
            raise ValidationError({name: "must not be null"})
    new_hash = None
    if "password" in new:
        new["password"] = check_new_password(new["password"])
        session.rollback()  # no connection held while hashing; the user is read below
        new_hash = hash_password(new["password"])
    user = _get(user_id)
    demoting = new.get("role", "admin") != "admin" or new.get("is_active") is False
    if user.role == "admin" and demoting and _other_active_admins(session, user.id) == 0:
        raise Conflict("this is the last active admin; promote another user first", code="last_admin")
    changes = []
    if "username" in new:
        user.username = new["username"]
        changes.append("username")
    role_changed = "role" in new and new["role"] != user.role
    if "role" in new:
        user.role = new["role"]
        changes.append(f"role={user.role}")
    if "is_active" in new:
        user.is_active = new["is_active"]
        changes.append(f"is_active={user.is_active}")
    if new_hash is not None:
        user.password_hash = new_hash
        changes.append("password")
    if not changes:
        raise ApiError("nothing to update; send role, password, is_active or username", 400, "empty_update")
    # A reset password, another role or a deactivation ends the user's
    # sessions at once (JWTs and login keys); named keys stay, see docs/security.md.
    if new_hash is not None or role_changed or new.get("is_active") is False:
        end_sessions(session, user.id)
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


register(
    "/api/users",
    "GET",
    {
        "summary": "List users (admin)",
        "tags": ["users"],
        "responses": {"200": ok({"users": array(obj(USER_SCHEMA)), "count": INT})},
    },
)
register(
    "/api/users",
    "POST",
    {
        "summary": "Create a user (admin)",
        "tags": ["users"],
        "responses": {
            "201": ok({"message": STR, "id": INT, "user": obj(USER_SCHEMA)}, "Created"),
            "409": {"description": "username taken"},
        },
    },
    body=CreateUser,
)
register(
    "/api/users/<int:user_id>",
    "PUT",
    {
        "summary": "Change a user's username, role, password or state (admin)",
        "tags": ["users"],
        "responses": {
            "200": ok({"message": STR, "user": obj(USER_SCHEMA)}),
            "409": {"description": "last admin, or taken"},
        },
    },
    body=UpdateUser,
)
register(
    "/api/users/<int:user_id>",
    "DELETE",
    {
        "summary": "Delete a user (admin)",
        "tags": ["users"],
        "responses": {"200": ok({"message": STR}), "409": {"description": "yourself, or the last admin"}},
    },
)
