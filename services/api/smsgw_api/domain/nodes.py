"""Edge nodes' credentials (docs/deployment.md, "Several sites").

An admin creates a node with a one-time enrolment token; the node trades it
(`POST /api/nodes/enrol`) for a broker user per modem (written to the file
mosquitto/entrypoint.sh reads, NODES_BROKER_FILE) and a database role of its
own, created by the
`smsgw_node_login` function that db-setup installs (postgres/roles.sql): the
API's role cannot create or alter roles itself, and the function can only
make `smsgw_node_<id>` roles that are members of the workers' role.

Only digests are kept: the token's SHA-256 (256 random bits, as an API key),
the role's SCRAM-SHA-256 verifier (RFC 5802/7677, what Postgres stores for
a password) and the broker users' PBKDF2 hashes, so no password of a node
appears in a statement, log line, file or backup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tempfile
from datetime import timedelta

from sqlalchemy import text

TOKEN_PREFIX = "smsgw_enrol_"
TOKEN_TTL = timedelta(hours=24)
MAX_MODEMS = 16
SCRAM_ITERATIONS = 4096  # Postgres' own default (scram_iterations)


def new_token() -> tuple[str, str]:
    """(token, its SHA-256 hex)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def role_name(node_id: int) -> str:
    return f"smsgw_node_{node_id}"


def modem_ids(name: str, modems: int) -> list[str]:
    """The node's modem ids (each worker's MODEM_ID, and its broker user)."""
    return [f"{name}-{k}" for k in range(1, modems + 1)]


def node_and_number(modem_id: str) -> tuple[str, int] | None:
    """The inverse of modem_ids: ("berlin-1", 2) for "berlin-1-2", None for an
    id no node's modem can have."""
    name, _, number = modem_id.rpartition("-")
    if not name or not number.isdigit():
        return None
    return name, int(number)


def keepalive_for(unreachable_seconds: int) -> int:
    """The MQTT keepalive a node's workers use: the broker gives up on a
    client, and publishes its last will, after 1.5 times it without a word."""
    return unreachable_seconds * 2 // 3


def revoked_error(name: str) -> str:
    """What a revoked node's modems show as their last error."""
    return f"node {name} revoked"


def new_password() -> str:
    return secrets.token_urlsafe(32)


MOSQUITTO_ITERATIONS = 101  # mosquitto_passwd's own default for $7$ (as scripts/board-user.py)


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """A password file entry's hash, as `mosquitto_passwd` writes it: PBKDF2-SHA512."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, MOSQUITTO_ITERATIONS)
    return f"$7${MOSQUITTO_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """What Postgres keeps for a password: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


_BROKER_LOCK = 727276  # postgres/roles.sql and grants.sql hold 727274 and 727275
_BROKER_USERS_SQL = text(
    "SELECT broker_hashes FROM nodes WHERE revoked_at IS NULL AND broker_hashes IS NOT NULL ORDER BY id"
)


def write_broker_file(conn, path: str) -> int:
    """Write every enrolled node's modem users (hashes) for the broker, which
    reloads them within seconds (mosquitto/entrypoint.sh). Call it in the
    transaction that changed them, before its commit: the lock, held until
    then, makes the last file written the one with the last committed state,
    and a file that cannot be written undoes the change. Returns the count."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _BROKER_LOCK})
    users: dict[str, str] = {}
    for (hashes,) in conn.execute(_BROKER_USERS_SQL):
        users.update(hashes)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".passwd-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"{modem_id}:{hashed}\n" for modem_id, hashed in sorted(users.items()))
        os.replace(tmp, path)  # the broker never reads half a file
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(users)
