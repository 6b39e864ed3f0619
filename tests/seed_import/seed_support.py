"""A seed database as the seed's Flask-SQLAlchemy models left it, and the
importer run the way an operator runs it (a subprocess)."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import text

SEED_DDL = """
CREATE TABLE user (
    id INTEGER NOT NULL PRIMARY KEY,
    username VARCHAR(80) NOT NULL UNIQUE,
    password_hash VARCHAR(256),
    role VARCHAR(20),
    api_key VARCHAR(64) UNIQUE
);
CREATE TABLE sim_card (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    number VARCHAR(20) NOT NULL UNIQUE,
    status VARCHAR(20),
    last_used DATETIME
);
CREATE TABLE message (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    sender VARCHAR(20),
    recipient VARCHAR(20),
    message TEXT,
    timestamp DATETIME,
    status VARCHAR(20),
    direction VARCHAR(10),
    sender_sim VARCHAR(36) REFERENCES sim_card (id)
);
CREATE TABLE log (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    timestamp DATETIME,
    action VARCHAR(50),
    details TEXT,
    status VARCHAR(20),
    sender_sim VARCHAR(36)
);
CREATE TABLE sms_status (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    sender_number VARCHAR(20),
    receiver_number VARCHAR(20),
    message TEXT,
    status VARCHAR(20),
    timestamp DATETIME
);
"""

MARIA_PASSWORD = "maria's old passphrase"
# 64 hex characters, as the seed's secrets.token_hex(32) made them.
MARIA_KEY = hashlib.sha256(b"maria's seed key").hexdigest()
ADMIN_KEY = hashlib.sha256(b"admin's seed key").hexdigest()
OLGA_KEY = hashlib.sha256(b"olga's seed key").hexdigest()
SIM_A = "6f1c2b7e-2d43-4a8e-9d3b-1f2e3d4c5b6a"  # routes the test sends
SIM_B = "0b7d9e4a-5c21-4f6e-8a9b-3c2d1e0f9a8b"
SIM_A_NUMBER, SIM_B_NUMBER = "+255700000001", "255700000002"  # the seed did not insist on +
PENDING_ID = "11111111-1111-4111-8111-111111111111"
PENDING_2_ID = "22222222-2222-4222-8222-222222222222"
REPORTED_ID = "33333333-3333-4333-8333-333333333333"
INCOMING_ID = "44444444-4444-4444-8444-444444444444"
PENDING_TIME = "2025-03-01 08:15:30.123456"  # naive UTC, as datetime.utcnow wrote it


def werkzeug_pbkdf2(password: str, salt: str, iterations: int = 600000) -> str:
    """The hash Werkzeug's generate_password_hash wrote for the seed."""
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex()
    return f"pbkdf2:sha256:{iterations}${salt}${digest}"


def build_seed(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(SEED_DDL)
    conn.executemany(
        "INSERT INTO user VALUES (?, ?, ?, ?, ?)",
        [
            (1, "admin", werkzeug_pbkdf2("admin123", "Qx7pL2vN9sR4tW8y"), "admin", ADMIN_KEY),
            (2, "maria", werkzeug_pbkdf2(MARIA_PASSWORD, "hG5kD3mZ1cV6bN0a"), "user", MARIA_KEY),
            (3, "olga", werkzeug_pbkdf2("olga's long secret", "pA9sD8fG7hJ6kL5z"), "supervisor", OLGA_KEY),
            # Werkzeug before 2.3 could write salted SHA-256, which Werkzeug 3 refuses to check.
            (4, "petr", "sha256$x1y2z3$" + hashlib.sha256(b"x1y2z3petr's password").hexdigest(), "viewer", None),
        ],
    )
    conn.executemany(
        "INSERT INTO sim_card VALUES (?, ?, ?, ?)",
        [
            (SIM_A, SIM_A_NUMBER, "active", "2025-03-01 08:15:31"),
            (SIM_B, SIM_B_NUMBER, "inactive", None),
        ],
    )
    conn.executemany(
        "INSERT INTO message VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                PENDING_ID,
                SIM_A_NUMBER,
                "+255711111111",
                "Your code is 4711",
                PENDING_TIME,
                "pending",
                "outgoing",
                SIM_A,
            ),
            (
                PENDING_2_ID,
                SIM_A_NUMBER,
                "+255722222222",
                "Meeting at 10",
                "2025-03-02 09:00:00",
                "pending",
                "outgoing",
                SIM_A,
            ),
            (
                REPORTED_ID,
                SIM_A_NUMBER,
                "+255733333333",
                "Delivered, says the board",
                "2025-03-03 10:00:00",
                "pending",
                "outgoing",
                SIM_A,
            ),
            (
                INCOMING_ID,
                "+255744444444",
                SIM_B_NUMBER,
                "Hello gateway",
                "2025-03-04 11:00:00",
                "received",
                "incoming",
                SIM_B,
            ),
            (
                "55555555-5555-4555-8555-555555555555",
                "+255755555555",
                "+255766666666",
                "sideways",
                "2025-03-05 12:00:00",
                "pending",
                "sideways",
                SIM_A,
            ),
        ],
    )
    conn.executemany(
        "INSERT INTO log VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                "66666666-6666-4666-8666-666666666666",
                "2025-03-01 08:15:30",
                "send_sms",
                '{"recipient": "+255711111111", "message": "Your code is 4711"}',
                "pending",
                SIM_A,
            ),
            (
                "77777777-7777-4777-8777-777777777777",
                "2025-03-01 07:00:00",
                "add_sim_card",
                '{"number": "+255700000001"}',
                "success",
                None,
            ),
        ],
    )
    conn.executemany(
        "INSERT INTO sms_status VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                "88888888-8888-4888-8888-888888888888",
                SIM_A_NUMBER,
                "+255733333333",
                "Delivered, says the board",
                "delivered",
                "2025-03-03 10:00:05",
            ),
        ],
    )
    conn.commit()
    conn.close()


def run_import(python: str, env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-m", "smsgw_api", "import-seed", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


TABLES = ("users", "api_keys", "sim_cards", "messages", "message_events", "logs", "seed_rows")


def snapshot(engine) -> dict:
    """Every row of the tables an import may write, as text: equal
    snapshots mean nothing was written."""
    with engine.connect() as conn:
        return {t: sorted(map(str, conn.execute(text(f"SELECT * FROM {t}")).all())) for t in TABLES}
