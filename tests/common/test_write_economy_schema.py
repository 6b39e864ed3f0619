"""Migration 0008 (fewer bytes written per SMS) against the real Postgres: it
keeps every row both ways, leaves the schema the models describe, and the
queries the gateway runs all the time still find their rows through an index
on a database of realistic size (bench/wal_per_sms.py measures the bytes)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import create_engine, select, text
from support.services import create_database, drop_database

from smsgw_api.migrate import alembic_config
from smsgw_common import queue
from smsgw_common.models import Base, Message, utcnow

BEFORE, AFTER = "0007_raw_inbound_pdus", "0008_fewer_writes_per_sms"
TABLES = ("messages", "message_parts", "logs")


@pytest.fixture
def scratch(package_id):
    """An empty database of its own (dropped after) and its URL."""
    name = f"smsgw_test_wal_{package_id}"
    url = create_database(name)
    engine = create_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        drop_database(name)


def indexes(engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(:t)"), {"t": list(TABLES)}
        ).all()
    return dict(rows)


def table_options(engine) -> dict[str, list[str] | None]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(:t)"), {"t": list(TABLES)}
        )
        return dict(rows.all())


def fill_a_little(engine) -> dict[str, list]:
    """One row in every state a message can be in, its parts, history and audit."""
    with engine.begin() as conn:
        sim = conn.execute(
            text("INSERT INTO sim_cards (number, status) VALUES ('+15550000001', 'active') RETURNING id")
        )
        sim_id = sim.scalar_one()
        for n, state in enumerate(("queued", "sending", "sent", "delivered", "failed", "expired", "received")):
            direction = "inbound" if state == "received" else "outbound"
            mid = conn.execute(
                text(
                    "INSERT INTO messages (direction, sender, recipient, message, status, encoding, segments, "
                    "sim_card_id, batch_id, lease_until, sent_at) VALUES (:d, '+15550000001', :r, :m, :s, 'GSM-7', "
                    "1, :sim, :b, now(), now()) RETURNING id"
                ),
                {
                    "d": direction,
                    "r": f"+1555000100{n}",
                    "m": f"text {n}",
                    "s": state,
                    "sim": sim_id,
                    "b": "b-1" if n % 2 else None,
                },
            ).scalar_one()
            conn.execute(
                text("INSERT INTO message_events (message_id, state, source) VALUES (:m, :s, 'test')"),
                {"m": mid, "s": state},
            )
            if state in ("sent", "delivered"):
                conn.execute(
                    text(
                        "INSERT INTO message_parts (message_id, seq, sim_card_id, reference, status, sent_at) "
                        "VALUES (:m, 1, :sim, :ref, 'sent', now())"
                    ),
                    {"m": mid, "sim": sim_id, "ref": n},
                )
            conn.execute(
                text("INSERT INTO logs (action, details, status) VALUES ('send_sms', :d, 'queued')"),
                {"d": f"SMS {mid}"},
            )
    return snapshot(engine)


def snapshot(engine) -> dict[str, list]:
    with engine.connect() as conn:
        return {
            table: [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))]
            for table in ("messages", "message_parts", "message_events", "logs")
        }


def test_the_migration_keeps_every_row_on_upgrade_and_downgrade(scratch):
    url, engine = scratch
    cfg = alembic_config(url)
    command.upgrade(cfg, BEFORE)
    old_indexes = indexes(engine)
    rows = fill_a_little(engine)

    command.upgrade(cfg, AFTER)
    assert snapshot(engine) == rows
    new_indexes = indexes(engine)
    assert "ix_messages_direction_status_id" not in new_indexes
    assert "ix_messages_direction_id" not in new_indexes
    assert "WHERE ((status)::text <> ALL" in new_indexes["ix_messages_settled_status_id"]
    assert "USING brin" in new_indexes["ix_messages_timestamp"]
    assert "USING brin" in new_indexes["ix_logs_timestamp"]
    assert table_options(engine)["message_parts"] == ["fillfactor=90"]

    command.downgrade(cfg, BEFORE)
    assert snapshot(engine) == rows
    assert indexes(engine) == old_indexes
    assert table_options(engine)["message_parts"] is None

    command.upgrade(cfg, "head")
    # Later migrations may add columns; every value that was there is kept.
    assert {
        t: [{k: r[k] for k in old[0]} for r in now] for (t, now), old in zip(snapshot(engine).items(), rows.values())
    } == rows


def test_the_migrations_leave_the_schema_the_models_describe(scratch):
    """Same indexes (names and definitions) and table options as the models
    create: the models are what the code's queries are written against."""
    url, engine = scratch
    command.upgrade(alembic_config(url), "head")
    migrated, options = indexes(engine), table_options(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    Base.metadata.create_all(engine)
    assert indexes(engine) == migrated
    assert table_options(engine) == options


# -- the hot queries on a realistic database ------------------------------------------------

HISTORY = 60_000


@pytest.fixture(scope="module")
def realistic(database_url):
    """The package's migrated database with a gateway's history: mostly
    delivered outbound messages, some inbound, a few of every other state,
    a short queue on two SIMs; analysed, as autovacuum would have."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM messages"))
        sims = (
            conn.execute(
                text(
                    "INSERT INTO sim_cards (number, status) VALUES ('+15550000101', 'active'), "
                    "('+15550000102', 'active') RETURNING id"
                )
            )
            .scalars()
            .all()
        )
        conn.execute(
            text(
                """
                INSERT INTO messages (direction, sender, recipient, message, status, encoding, segments,
                                      sim_card_id, timestamp, sent_at, lease_until, idempotency_key, user_id)
                SELECT CASE WHEN i % 10 = 0 THEN 'inbound' ELSE 'outbound' END,
                       CASE WHEN i % 10 = 0 THEN '+4917' || lpad((i * 7919 % 100000)::text, 8, '0')
                            ELSE '+15550000101' END,
                       CASE WHEN i % 10 = 0 THEN '+15550000101'
                            ELSE '+4917' || lpad((i * 7919 % 100000)::text, 8, '0') END,
                       'history ' || i,
                       CASE WHEN i % 10 = 0 THEN 'received'
                            WHEN i > :n - 40 THEN 'queued'
                            WHEN i > :n - 50 THEN 'sending'
                            WHEN i > :n - 150 THEN 'sent'
                            WHEN i % 97 = 0 THEN 'failed'
                            WHEN i % 89 = 0 THEN 'expired'
                            ELSE 'delivered' END,
                       'GSM-7', 1, CASE WHEN i % 2 = 0 THEN :a ELSE :b END,
                       now() - make_interval(secs => (:n - i) * 30), now() - make_interval(secs => (:n - i) * 30),
                       CASE WHEN i > :n - 50 THEN now() + interval '5 minutes' END,
                       CASE WHEN i % 3 = 0 THEN 'key-' || i END, NULL
                FROM generate_series(1, :n) AS i
                """
            ),
            {"n": HISTORY, "a": sims[0], "b": sims[1]},
        )
        conn.execute(
            text(
                "INSERT INTO message_parts (message_id, seq, sim_card_id, reference, status, sent_at) "
                "SELECT id, 1, sim_card_id, id % 256, 'delivered', sent_at FROM messages "
                "WHERE direction = 'outbound' AND status NOT IN ('queued', 'sending')"
            )
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE messages"))
        conn.execute(text("VACUUM ANALYZE message_parts"))
    yield engine, sims
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM messages"))
        conn.execute(text("DELETE FROM sim_cards WHERE id = ANY(:s)"), {"s": sims})
    engine.dispose()


def plan(engine, sql) -> str:
    """EXPLAIN's plan as JSON text: the nodes and the indexes they use."""
    with engine.connect() as conn:
        return json.dumps(conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}")).scalar())


def compiled(engine, stmt) -> str:
    return str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))


def listing(direction: str, where: str = "") -> str:
    return (
        f"SELECT id, status, recipient FROM messages WHERE direction = '{direction}' {where} ORDER BY id DESC LIMIT 51"
    )


@pytest.mark.parametrize(
    ("what", "sql", "index"),
    [
        ("outbox, newest first", listing("outbound"), "messages_pkey"),
        ("inbox, newest first", listing("inbound"), "ix_messages_inbound_id"),
        ("outbox by a settled state", listing("outbound", "AND status = 'failed'"), "ix_messages_settled_status_id"),
        ("outbox, delivered", listing("outbound", "AND status = 'delivered'"), None),
        ("outbox, queued", listing("outbound", "AND status = 'queued'"), "ix_messages_queue"),
        ("outbox, sending", listing("outbound", "AND status = 'sending'"), "ix_messages_sending_lease"),
        ("outbox, sent", listing("outbound", "AND status = 'sent'"), "ix_messages_sent_at"),
        ("outbox by number", listing("outbound", "AND recipient = '+491700007919'"), "ix_messages_recipient_id"),
        ("inbox by number", listing("inbound", "AND sender = '+491700007919'"), "ix_messages_sender_id"),
        (
            "the last hour by state (statistics)",
            (
                "SELECT status, count(*) FROM messages WHERE direction = 'outbound' "
                "AND timestamp >= now() - interval '1 hour' GROUP BY 1"
            ),
            "ix_messages_timestamp",
        ),
        (
            "an idempotency key",
            "SELECT id FROM messages WHERE user_id = 1 AND idempotency_key = 'key-300'",
            "uq_messages_idempotency",
        ),
        (
            "a delivery report's part",
            (
                "SELECT p.id FROM message_parts p JOIN messages m ON m.id = p.message_id "
                "WHERE p.sim_card_id = {sim} AND p.reference = 17 ORDER BY p.sent_at DESC NULLS LAST, p.id DESC LIMIT 1"
            ),
            "ix_message_parts_sim_ref",
        ),
        (
            "leases to reclaim",
            "SELECT id FROM messages WHERE status = 'sending' AND lease_until < now()",
            "ix_messages_sending_lease",
        ),
        (
            "reports overdue",
            "SELECT id FROM messages WHERE status = 'sent' AND sent_at < now() - interval '1 day'",
            "ix_messages_sent_at",
        ),
    ],
)
def test_a_hot_query_finds_its_rows_through_an_index(realistic, what, sql, index):
    engine, sims = realistic
    found = plan(engine, sql.format(sim=sims[0]))
    assert '"Seq Scan"' not in found, f"{what}: {found}"
    assert index is None or f'"Index Name": "{index}"' in found, f"{what}: {found}"


def test_a_claim_finds_the_due_messages_of_its_sim_through_the_queue_index(realistic):
    engine, sims = realistic
    stmt = (
        select(Message.id)
        .where(*queue.claimable(sims[0], utcnow() + timedelta(seconds=1)))
        .order_by(Message.priority.desc(), Message.id)
        .limit(8)
        .with_for_update(skip_locked=True)
    )
    found = plan(engine, compiled(engine, stmt))
    assert '"Index Name": "ix_messages_queue"' in found, found
    assert '"Seq Scan"' not in found, found
