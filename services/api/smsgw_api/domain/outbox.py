"""Queueing outbound messages: any number in one round trip, each with its
first history event and its audit entry, none to an opted-out recipient."""

from __future__ import annotations

from sqlalchemy import text

from smsgw_api.core.errors import ApiError

# Columns of one queued message, in the order of the arrays below.
_COLUMNS = (
    ("sender", "text"),
    ("recipient", "text"),
    ("message", "text"),
    ("encoding", "text"),
    ("segments", "smallint"),
    ("sim_card_id", "int"),
    ("pinned", "boolean"),
    ("priority", "smallint"),
    ("send_at", "timestamptz"),
    ("expires_at", "timestamptz"),
    ("idem_key", "text"),
    ("req_hash", "text"),
    ("batch_id", "text"),
    ("user_id", "int"),
    ("api_key_id", "int"),
    ("event_detail", "text"),
    ("actor", "text"),
    ("ip", "text"),
    ("request_id", "text"),
    ("on_unavailable", "text"),
    ("site", "text"),
)
# Any number of messages in one round trip: each row with its first history
# event and its audit entry. A recipient on the opt-out list gets no row
# (its `id` comes back NULL). Ids are drawn up front so that every result
# finds its request again through `ord`.
_INSERT_SQL = text(f"""
WITH v AS (
    SELECT nextval(pg_get_serial_sequence('messages', 'id')) AS id, u.*
    FROM unnest({", ".join(f"CAST(:{name} AS {type_}[])" for name, type_ in _COLUMNS)})
         WITH ORDINALITY AS u({", ".join(name for name, _ in _COLUMNS)}, ord)
), m AS (
    INSERT INTO messages (id, direction, sender, recipient, message, status, encoding, segments, sim_card_id,
                          sender_sim, pinned, priority, send_at, expires_at, idempotency_key, request_hash,
                          batch_id, user_id, api_key_id, on_unavailable, site, timestamp, queued_at, updated_at)
    SELECT id, 'outbound', sender, recipient, message, 'queued', encoding, segments, sim_card_id,
           sender, pinned, priority, send_at, expires_at, idem_key, req_hash,
           batch_id, user_id, api_key_id, on_unavailable, site, now(), now(), now()
    FROM v WHERE NOT EXISTS (SELECT 1 FROM opt_outs o WHERE o.number = v.recipient)
    ORDER BY ord
    RETURNING id, timestamp
), e AS (
    INSERT INTO message_events (message_id, state, at, source, detail)
    SELECT m.id, 'queued', m.timestamp, 'api', v.event_detail FROM m JOIN v ON v.id = m.id
), l AS (
    INSERT INTO logs (action, details, status, timestamp, sender_sim, user_id, actor, ip, request_id)
    SELECT 'send_sms', 'SMS ' || m.id || ' to ' || v.recipient || ' queued on SIM ' || v.sim_card_id, 'queued',
           now(), v.sender, v.user_id, v.actor, v.ip, v.request_id
    FROM m JOIN v ON v.id = m.id
)
SELECT v.ord, m.id, m.timestamp FROM v LEFT JOIN m ON m.id = v.id ORDER BY v.ord
""")


def insert_messages(conn, rows: list[dict]) -> list:
    """Insert queued messages (dicts of _COLUMNS); one result row each, in
    order, with `id` None where the recipient opted out."""
    params = {name: [row[name] for row in rows] for name, _ in _COLUMNS}
    return conn.execute(_INSERT_SQL, params).all()


_OPTED_OUT_SQL = text("SELECT number FROM opt_outs WHERE number = ANY(:numbers)")


def opted_out_error(numbers: list[str]) -> ApiError:
    return ApiError(
        f"recipient has opted out of messages: {', '.join(numbers)}",
        422,
        "recipient_opted_out",
        fields={"recipient": "opted out (STOP); remove the opt-out to send again"},
        extra={"opted_out": numbers},
    )


def opted_out(conn, numbers: list[str]):
    found = sorted({r.number for r in conn.execute(_OPTED_OUT_SQL, {"numbers": numbers})})
    if found:
        raise opted_out_error(found)
