"""What a valid username, role and password are, how passwords are stored
and checked, and how a user's sessions and keys end."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime

from sqlalchemy import select, text, update
from werkzeug.security import check_password_hash, generate_password_hash

from smsgw_api.core.errors import ValidationError
from smsgw_api.core.security import run_hash
from smsgw_common.models import ROLES, ApiKey, User

MIN_PASSWORD_LENGTH = 10
MAX_USERNAME_LENGTH = 64
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{3,64}$")
_USERNAME = USERNAME_PATTERN


def check_username(value) -> str:
    if not isinstance(value, str) or not _USERNAME.match(value.strip()):
        raise ValidationError({"username": "3-64 characters: letters, digits, _ . @ -"})
    return value.strip()


def check_role(value) -> str:
    if not isinstance(value, str) or value not in ROLES:
        raise ValidationError({"role": f"must be one of {', '.join(ROLES)}"})
    return value


def hash_password(password: str) -> str:
    """Slow on purpose: never call it holding a database connection."""
    return run_hash(generate_password_hash, password)


def _verify(stored: str, password: str) -> bool:
    if stored.startswith("pbkdf2:"):  # the seed's Werkzeug hashes (seed_import/)
        return verify_werkzeug_pbkdf2(stored, password) is True
    return check_password_hash(stored, password)


def verify_password(stored: str, password: str) -> bool:
    """Slow on purpose: load the hash, give the connection back, then call this."""
    return run_hash(_verify, stored, password)


def audit_username(username: str) -> str:
    """A username as it may appear in an audit row: what no account can
    exceed, so a huge one in a failed login makes no huge row."""
    if len(username) <= MAX_USERNAME_LENGTH:
        return repr(username)
    return f"{username[:MAX_USERNAME_LENGTH]!r}... ({len(username)} characters)"


# Every key below the given ones, parents first; a key's parent is always
# older than the key, so the walk ends.
_KEY_TREE_SQL = text(
    "WITH RECURSIVE tree(id) AS ("
    "  SELECT id FROM api_keys WHERE id = ANY(:roots)"
    "  UNION SELECT k.id FROM api_keys k JOIN tree t ON k.parent_key_id = t.id"
    ") SELECT id FROM tree"
)


def revoke_keys(session, root_ids: list[int]) -> int:
    """Revoke these keys and every key made with them (at any depth), in the
    caller's transaction. The whole tree is locked before it is revoked, and
    a key is only made under a parent row it has locked (`lock_parent_key`),
    so no child can be made under a key while it is being revoked."""
    if not root_ids:
        return 0
    locked: set[int] = set()
    for _ in range(64):  # each round goes one level deeper; keys made by keys are never that deep
        tree = set(session.scalars(_KEY_TREE_SQL, {"roots": list(root_ids)}))
        if tree <= locked:
            break
        session.execute(text("SELECT id FROM api_keys WHERE id = ANY(:ids) FOR UPDATE"), {"ids": sorted(tree - locked)})
        locked |= tree
    result = session.execute(
        text("UPDATE api_keys SET revoked_at = :now WHERE id = ANY(:ids) AND revoked_at IS NULL"),
        {"ids": sorted(locked), "now": datetime.now(UTC)},
    )
    return result.rowcount


def lock_parent_key(session, key_id: int):
    """The parent key's row, locked against revocation until the caller
    commits; None if it has been revoked or has expired meanwhile."""
    return session.execute(
        text(
            "SELECT id, expires_at FROM api_keys WHERE id = :id AND revoked_at IS NULL "
            "AND (expires_at IS NULL OR expires_at > now()) FOR SHARE"
        ),
        {"id": key_id},
    ).first()


def login_key_ids(session, user_id: int) -> list[int]:
    return list(
        session.scalars(
            select(ApiKey.id).where(ApiKey.user_id == user_id, ApiKey.is_login_key, ApiKey.revoked_at.is_(None))
        )
    )


def end_sessions(session, user_id: int) -> None:
    """End every session of the user, in the caller's transaction: JWTs
    (the token version moves on) and login keys with the keys made from them.
    Named keys stay: they belong to integrations, not to a session. Call
    `forget_credentials()` after the commit."""
    session.execute(update(User).where(User.id == user_id).values(token_version=User.token_version + 1))
    revoke_keys(session, login_key_ids(session, user_id))


def check_new_password(password, field: str = "password") -> str:
    if not isinstance(password, str) or not password:
        raise ValidationError({field: "is required"})
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError({field: f"must be at least {MIN_PASSWORD_LENGTH} characters"})
    if len(password) > 256:
        raise ValidationError({field: "must be at most 256 characters"})
    return password


def verify_werkzeug_pbkdf2(stored: str, password: str) -> bool | None:
    """Check a Werkzeug (the seed's) `pbkdf2:<hash>[:<iterations>]$<salt>$<hex>` hash.
    None when `stored` is not in that form."""
    try:
        method, salt, hexdigest = stored.split("$", 2)
    except (AttributeError, ValueError):
        return None
    parts = method.split(":")
    if parts[0] != "pbkdf2" or len(parts) > 3:
        return None
    name = parts[1] if len(parts) > 1 else "sha256"
    try:
        # Werkzeug 2.x wrote no iteration count for its then default.
        iterations = int(parts[2]) if len(parts) > 2 else 260000
        digest = hashlib.pbkdf2_hmac(name, password.encode(), salt.encode(), iterations).hex()
    except ValueError:
        return None
    return hmac.compare_digest(digest, hexdigest)
