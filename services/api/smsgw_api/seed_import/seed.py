"""The seed's SQLite file: its schema, reading it (read-only), its values
(times, numbers, ids) and its Werkzeug password hashes."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import uuid
from datetime import UTC, datetime

from werkzeug.security import check_password_hash

from smsgw_api.domain.accounts import verify_werkzeug_pbkdf2

# The seed's schema (Flask-SQLAlchemy's default table names), in import order.
SEED_SCHEMA = {
    "user": ("id", "username", "password_hash", "role", "api_key"),
    "sim_card": ("id", "number", "status"),
    "message": ("id", "sender", "recipient", "message", "timestamp", "status", "direction", "sender_sim"),
    "log": ("id", "timestamp", "action", "details", "status", "sender_sim"),
    "sms_status": ("id", "sender_number", "receiver_number", "message", "status", "timestamp"),
}

# Passwords the seed shipped or that its README/tutorials suggested; an
# account still using one was open to anyone who read them.
PUBLISHED_DEFAULTS = ("admin123", "admin", "password", "changeme")
# Never produced by any hash function, so it never verifies: the password
# must be set again (PUT /api/users/<id>).
UNUSABLE_PASSWORD = "!reset-required:seed-default-password"


class SeedError(Exception):
    """The file is not a seed database; nothing was written."""


# --- the seed's password hashes (verified by domain/accounts.py) ----------------


def checkable(stored) -> bool:
    """A hash that login (Werkzeug's check_password_hash) can verify: pbkdf2
    or scrypt. Older Werkzeug forms (`sha256$...`) make it raise."""
    if not isinstance(stored, str) or len(stored) > 255 or stored.count("$") != 2:
        return False
    method = stored.split("$", 1)[0].split(":")
    if method[0] == "pbkdf2":
        return len(method) == 1 or method[1] in hashlib.algorithms_guaranteed
    return method[0] == "scrypt"


def uses_published_default(stored: str, username: str) -> bool:
    for candidate in (*PUBLISHED_DEFAULTS, username):
        ok = verify_werkzeug_pbkdf2(stored, candidate)
        if ok is None:
            # scrypt, as Werkzeug 3 writes
            try:
                ok = check_password_hash(stored, candidate)
            except ValueError:  # parameters it cannot use: nobody can log in with it either
                ok = False
        if ok:
            return True
    return False


# --- reading the seed ----------------------------------------------------------


def open_seed(path: str) -> sqlite3.Connection:
    try:
        with open(path, "rb") as fh:
            header = fh.read(16)
    except OSError as exc:
        raise SeedError(f"cannot read {path}: {exc.strerror}") from None
    if header != b"SQLite format 3\x00":
        raise SeedError(f"{path} is not an SQLite database, so not the seed's sms_gateway.db")
    # mode=ro: the seed's file is evidence and the way back; never written.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = []
        for table, columns in SEED_SCHEMA.items():
            if table not in tables:
                missing.append(f"table {table!r}")
                continue
            have = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
            missing += [f"column {table}.{c}" for c in columns if c not in have]
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise SeedError(f"{path} cannot be read as SQLite: {exc}") from None
    if missing:
        conn.close()
        raise SeedError(f"{path} is not a seed database: missing {', '.join(missing)}")
    return conn


def seed_rows(conn: sqlite3.Connection, table: str) -> list[dict]:
    columns = ", ".join(f'"{c}"' for c in SEED_SCHEMA[table])
    order = ' ORDER BY "timestamp", rowid' if "timestamp" in SEED_SCHEMA[table] else " ORDER BY rowid"
    return [dict(r) for r in conn.execute(f'SELECT {columns} FROM "{table}"{order}')]


def utc(value) -> datetime | None:
    """The seed wrote naive UTC (datetime.utcnow) as SQLite text."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    try:
        parsed = datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def sim_number(value) -> str | None:
    """A SIM's number in the form the API stores (E.164 with +), if it is one."""
    if not isinstance(value, str):
        return None
    number = re.sub(r"[\s\-().]", "", value.strip())
    if number.startswith("00"):
        number = "+" + number[2:]
    if not number.startswith("+"):
        number = "+" + number
    return number if re.fullmatch(r"\+[1-9]\d{2,14}", number) else None


def canonical_id(value) -> str:
    """A seed id as `seed_rows` keeps it: a UUID in its usual lower-case
    form, however the seed wrote it, so that clients' copies match."""
    raw = str(value).strip()
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return raw


def clip(value, length: int) -> str | None:
    return None if value is None else str(value)[:length]
