"""db-setup: the short-lived job that runs before the API at every `up`.

1. As the superuser (POSTGRES_SUPERUSER / POSTGRES_SUPERUSER_PASSWORD, the
   postgres container's POSTGRES_USER): create or refresh one login role per
   service (roles.sql), none of them a superuser, and hand every object in
   the public schema to the owner role (a volume from before this step has
   them owned by the superuser).
2. As the owner role: `alembic upgrade head` (python -m smsgw_api.migrate).
3. As the owner role: the table-level grants of every service (grants.sql),
   re-applied from scratch in one transaction, so tables that a new migration
   added get their grants on the same `up`.

Idempotent: a fresh volume and an existing one take the same path. Only this
job (and the postgres container) ever sees the superuser password.
Runs in the API's image (Python, psycopg2, the migrations); see docs/security.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
from psycopg2 import sql

HERE = Path(__file__).resolve().parent
ROLES = {  # role -> the variable holding its password
    "smsgw_owner": "POSTGRES_OWNER_PASSWORD",
    "smsgw_api": "POSTGRES_API_PASSWORD",
    "smsgw_worker": "POSTGRES_WORKER_PASSWORD",
    "smsgw_collector": "POSTGRES_COLLECTOR_PASSWORD",
}


def log(msg: str) -> None:
    print(f"db-setup: {msg}", file=sys.stderr, flush=True)


def need(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        log(f"{name} is not set; run scripts/setup-secrets.sh")
        sys.exit(2)
    return value


def connect(user: str, password: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = psycopg2.connect(
                host=os.environ.get("POSTGRES_HOST", "postgres"),
                port=int(os.environ.get("POSTGRES_PORT", "5432")),
                dbname=os.environ.get("POSTGRES_DB", "smsgw"),
                user=user,
                password=password,
                connect_timeout=5,
            )
            return conn
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                log(f"database not reachable as {user} after {timeout:.0f}s: {exc}")
                sys.exit(1)
            time.sleep(1)


def run_file(conn, name: str, params: dict) -> None:
    """Execute a .sql file in one transaction; psql-style :'name' / :"name"
    placeholders become a literal / an identifier."""
    text = (HERE / name).read_text()
    for key, value in params.items():
        text = text.replace(f":'{key}'", sql.Literal(value).as_string(conn))
        text = text.replace(f':"{key}"', sql.Identifier(value).as_string(conn))
    with conn, conn.cursor() as cur:
        cur.execute(text)


def main() -> int:
    superuser = need("POSTGRES_SUPERUSER")
    passwords = {role: need(var) for role, var in ROLES.items()}
    db = os.environ.get("POSTGRES_DB", "smsgw")

    conn = connect(superuser, need("POSTGRES_SUPERUSER_PASSWORD"))
    params = {"db": db, **{f"{role}_password": pw for role, pw in passwords.items()}}
    run_file(conn, "roles.sql", params)
    conn.close()
    log("roles refreshed: " + ", ".join(ROLES))

    # The migrations, as the owner (never the superuser): what they create is its.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("POSTGRES_") or k in ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB")
    }
    env.update(POSTGRES_USER="smsgw_owner", POSTGRES_PASSWORD=passwords["smsgw_owner"])
    done = subprocess.run([sys.executable, "-m", "smsgw_api.migrate"], env=env)
    if done.returncode != 0:
        log(f"migrations failed (exit {done.returncode})")
        return done.returncode

    conn = connect("smsgw_owner", passwords["smsgw_owner"])
    run_file(conn, "grants.sql", {"db": db})
    conn.close()
    log("grants applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
