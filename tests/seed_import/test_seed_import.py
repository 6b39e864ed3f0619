"""`python -m smsgw_api import-seed`: the seed's users, SIMs, messages, logs
and board reports come across once, and its clients keep working."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from smsgw_api.seed_import import NEVER_CONFIRMED

from .seed_support import (
    ADMIN_KEY,
    INCOMING_ID,
    MARIA_KEY,
    MARIA_PASSWORD,
    OLGA_KEY,
    PENDING_2_ID,
    PENDING_ID,
    PENDING_TIME,
    REPORTED_ID,
    SIM_A,
    SIM_A_NUMBER,
    SIM_B,
    run_import,
    snapshot,
)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _seed_target(engine, table: str, seed_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT target_id FROM seed_rows WHERE seed_table = :t AND seed_id = :i"), {"t": table, "i": seed_id}
        ).scalar_one()


@dataclass
class FirstImport:
    dry_run: str  # the report of a dry run just before it
    dry_run_wrote: bool
    report: str


@pytest.fixture(scope="package")
def first_import(python, service_env, seed_db, engine, stack_admin) -> FirstImport:
    """A dry run, then the first real import, on the tier's database."""
    before = snapshot(engine)
    dry = run_import(python, service_env, seed_db, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    wrote = snapshot(engine) != before
    result = run_import(python, service_env, seed_db)
    assert result.returncode == 0, result.stderr
    return FirstImport(dry.stdout, wrote, result.stdout)


@pytest.fixture(scope="package")
def imported(first_import) -> str:
    return first_import.report


# --- refusing what is not a seed, dry run, idempotence ------------------------------


def test_a_file_that_is_not_sqlite_is_refused_and_nothing_is_written(
    python, service_env, engine, stack_admin, tmp_path
):
    bogus = tmp_path / "sms_gateway.db"
    bogus.write_text("id,number\n1,+255700000001\n")
    before = snapshot(engine)
    result = run_import(python, service_env, bogus)
    assert result.returncode == 2
    assert "not an SQLite database" in result.stderr and "nothing was written" in result.stderr
    assert snapshot(engine) == before


def test_an_sqlite_file_without_the_seed_schema_is_refused_naming_what_is_missing(
    python, service_env, engine, stack_admin, tmp_path
):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.executescript(
        "CREATE TABLE user (id INTEGER PRIMARY KEY, username TEXT, role TEXT, api_key TEXT);"
        "CREATE TABLE sim_card (id TEXT PRIMARY KEY, number TEXT, status TEXT);"
    )
    conn.close()
    before = snapshot(engine)
    result = run_import(python, service_env, other)
    assert result.returncode == 2
    for missing in ("column user.password_hash", "table 'message'", "table 'log'", "table 'sms_status'"):
        assert missing in result.stderr
    assert snapshot(engine) == before


def test_a_dry_run_reports_what_the_import_does_and_writes_nothing(first_import):
    assert not first_import.dry_run_wrote
    dry = first_import.dry_run.splitlines()
    assert dry[0].endswith("(DRY RUN: nothing was written)")
    assert "total: 13 would be new, 0 already present, 1 skipped" in dry
    # Line for line what the real run then did, but for the words saying so.
    real = first_import.report.splitlines()
    assert dry[1:] == [line.replace("13 new", "13 would be new") for line in real[1:]]


def test_the_import_reports_per_table_and_a_second_run_changes_nothing(python, service_env, seed_db, engine, imported):
    lines = imported.splitlines()
    assert "user                 4                0        0" in lines
    assert "sim_card             2                0        0" in lines
    assert "message              4                0        1" in lines
    assert "log                  2                0        0" in lines
    assert "sms_status           1                0        0" in lines
    assert "total: 13 new, 0 already present, 1 skipped" in lines
    assert any("55555555-5555-4555-8555-555555555555: direction 'sideways'" in line for line in lines)
    assert any("'admin': the name exists on this gateway; imported as 'admin-seed'" in line for line in lines)
    assert any("'admin-seed': the seed's password is a published default; imported DISABLED" in line for line in lines)
    assert any("'olga': unknown seed role 'supervisor', imported as 'user'" in line for line in lines)
    assert any(
        "'petr': the seed's password hash is missing or in a form this gateway cannot check" in line for line in lines
    )

    seed_before = _digest(seed_db)
    before = snapshot(engine)
    again = run_import(python, service_env, seed_db)
    assert again.returncode == 0, again.stderr
    assert "total: 0 new, 13 already present, 1 skipped" in again.stdout
    assert snapshot(engine) == before
    assert _digest(seed_db) == seed_before  # only ever read


def test_users_keep_their_roles_and_the_stack_admin_is_untouched(engine, imported, stack_admin):
    with engine.connect() as conn:
        rows = {r.username: r for r in conn.execute(text("SELECT * FROM users"))}
    assert rows["maria"].role == "user" and rows["maria"].is_active
    assert rows["olga"].role == "user"
    assert rows["petr"].role == "viewer" and rows["petr"].is_active
    assert rows["admin-seed"].role == "admin" and not rows["admin-seed"].is_active
    assert rows["admin"].id == stack_admin.id and rows["admin"].password_hash.startswith("scrypt:")


# --- the seed's clients against the new API ------------------------------------------


def test_a_seed_user_logs_in_with_the_old_password_which_is_then_rehashed(client, engine, imported):
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT password_hash FROM users WHERE username = 'maria'"))
            .scalar()
            .startswith("pbkdf2:sha256:600000$")
        )
    first = client.post("/api/auth", json={"username": "maria", "password": MARIA_PASSWORD})
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["role"] == "user"
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT password_hash FROM users WHERE username = 'maria'")).scalar()
    assert not stored.startswith("pbkdf2:")  # the seed's hash is gone
    again = client.post("/api/auth", json={"username": "maria", "password": MARIA_PASSWORD})
    assert again.status_code == 200
    wrong = client.post("/api/auth", json={"username": "maria", "password": "not maria's password"})
    assert wrong.status_code == 401


def test_a_wrong_password_against_a_seed_hash_is_refused_and_the_hash_kept(client, engine, imported):
    wrong = client.post("/api/auth", json={"username": "olga", "password": "olga's long secreT"})
    assert wrong.status_code == 401
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT password_hash FROM users WHERE username = 'olga'")).scalar()
    assert stored.startswith("pbkdf2:sha256:600000$")


def test_the_seed_api_key_authenticates_as_its_user_and_is_stored_hashed(client, engine, imported):
    outbox = client.get("/api/sms/outbox", headers={"X-API-Key": MARIA_KEY})
    assert outbox.status_code == 200, outbox.get_json()
    me = client.get("/api/me", headers={"X-API-Key": MARIA_KEY}).get_json()
    assert me["username"] == "maria" and me["auth"] == "api_key"
    assert client.get("/api/me", headers={"X-API-Key": OLGA_KEY}).get_json()["username"] == "olga"
    with engine.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT k.prefix, k.key_hash FROM api_keys k JOIN users u ON u.id = k.user_id "
                "WHERE u.username = 'maria' AND k.name = 'seed'"
            )
        ).one()
    assert stored.key_hash == hashlib.sha256(MARIA_KEY.encode()).hexdigest() and stored.key_hash != MARIA_KEY
    tampered = MARIA_KEY[:-1] + ("0" if MARIA_KEY[-1] != "0" else "1")
    assert client.get("/api/me", headers={"X-API-Key": tampered}).status_code == 401


def test_the_published_default_password_and_its_key_do_not_survive(client, imported):
    for username in ("admin-seed", "admin"):
        answer = client.post("/api/auth", json={"username": username, "password": "admin123"})
        assert answer.status_code == 401, username
    assert client.get("/api/me", headers={"X-API-Key": ADMIN_KEY}).status_code == 401


def test_a_password_hash_login_cannot_check_is_refused_not_an_error(client, imported):
    answer = client.post("/api/auth", json={"username": "petr", "password": "petr's password"})
    assert answer.status_code == 401


def test_pending_seed_sends_are_unknown_never_queued_and_a_board_report_is_kept(client, engine, imported):
    headers = {"X-API-Key": MARIA_KEY}
    pending = _seed_target(engine, "message", PENDING_ID)
    detail = client.get(f"/api/sms/{pending}", headers=headers).get_json()["message"]
    assert detail["status"] == "unknown" and detail["error_text"] == NEVER_CONFIRMED
    assert detail["direction"] == "outbound" and detail["message"] == "Your code is 4711"
    assert detail["recipient"] == "+255711111111" and detail["sender_sim"] == SIM_A_NUMBER
    seed_time = datetime(2025, 3, 1, 8, 15, 30, 123456, tzinfo=UTC)
    assert datetime.fromisoformat(detail["created_at"]) == seed_time, PENDING_TIME
    assert detail["timestamp"] == int(seed_time.timestamp())
    assert detail["queued_at"] is None and detail["events"] == []

    unknown = client.get("/api/sms/outbox?status=unknown", headers=headers).get_json()["messages"]
    assert {m["id"] for m in unknown} == {pending, _seed_target(engine, "message", PENDING_2_ID)}
    assert all(m["error_text"] == NEVER_CONFIRMED for m in unknown)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM messages WHERE status IN ('queued', 'sending')")).scalar() == 0

    reported = client.get(f"/api/sms/{_seed_target(engine, 'message', REPORTED_ID)}", headers=headers)
    assert reported.get_json()["message"]["status"] == "delivered"
    inbound = client.get(f"/api/sms/{_seed_target(engine, 'message', INCOMING_ID)}", headers=headers)
    inbound = inbound.get_json()["message"]
    assert inbound["direction"] == "inbound" and inbound["status"] == "received"
    assert inbound["sim_card_id"] == _seed_target(engine, "sim_card", SIM_B)
    assert inbound["sender_sim"] == "+255700000002"  # the seed's number, with its +


def test_logs_and_board_reports_are_in_the_audit_trail(client, imported, stack_admin):
    logs = client.get("/api/logs?per_page=200", headers=stack_admin.headers).get_json()["logs"]
    mine = [entry for entry in logs if entry["actor"] == "seed import"]
    assert {entry["action"] for entry in mine} == {"send_sms", "add_sim_card", "sms_status"}
    send = next(entry for entry in mine if entry["action"] == "send_sms")
    assert send["sender_sim"] == SIM_A_NUMBER and '"message": "Your code is 4711"' in send["details"]
    report = next(entry for entry in mine if entry["action"] == "sms_status")
    assert report["status"] == "delivered" and '"receiver_number": "+255733333333"' in report["details"]


def test_a_send_with_the_seeds_sim_uuid_goes_to_the_imported_sim(client, engine, imported):
    sim_id = _seed_target(engine, "sim_card", SIM_A)
    with engine.begin() as conn:  # a worker has registered the SIM's modem
        conn.execute(text("INSERT INTO modems (id, online) VALUES ('seed-board-1', true)"))
        conn.execute(text("UPDATE sim_cards SET modem_id = 'seed-board-1' WHERE id = :id"), {"id": sim_id})
    sent = client.post(
        "/api/sms",
        headers={"X-API-Key": MARIA_KEY},
        json={"recipient": "+255788888888", "message": "hello again", "sim_card_id": SIM_A},
    )
    assert sent.status_code == 200, sent.get_json()
    assert sent.get_json()["sim_card_id"] == sim_id and sent.get_json()["sender_sim"] == SIM_A_NUMBER
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, sim_card_id, pinned FROM messages WHERE id = :id"),
            {"id": sent.get_json()["message_id"]},
        ).one()
    assert (row.status, row.sim_card_id, row.pinned) == ("queued", sim_id, True)

    stranger = client.post(
        "/api/sms",
        headers={"X-API-Key": MARIA_KEY},
        json={"recipient": "+255788888888", "message": "x", "sim_card_id": "9e2f4c1a-0000-4000-8000-000000000000"},
    )
    assert stranger.status_code == 400 and "sim_card_id" in stranger.get_json()["fields"]


def test_sim_cards_are_changed_and_deleted_by_their_seed_uuid(client, engine, imported, stack_admin):
    sim_b = _seed_target(engine, "sim_card", SIM_B)
    updated = client.put(f"/api/sim-cards/{SIM_B}", headers=stack_admin.headers, json={"label": "roof board"})
    assert updated.status_code == 200, updated.get_json()
    assert updated.get_json()["sim_card"]["id"] == sim_b
    assert updated.get_json()["sim_card"]["label"] == "roof board"
    assert (
        client.put(f"/api/sim-cards/{SIM_B}", headers={"X-API-Key": MARIA_KEY}, json={"label": "x"}).status_code == 403
    )
    assert (
        client.delete("/api/sim-cards/9e2f4c1a-0000-4000-8000-000000000000", headers=stack_admin.headers).status_code
        == 404
    )
    assert client.delete(f"/api/sim-cards/{SIM_B}", headers=stack_admin.headers).status_code == 200
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sim_cards WHERE id = :id"), {"id": sim_b}).scalar() == 0
