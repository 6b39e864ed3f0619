"""Webhook events: their types, ids and payloads, and the pending
`webhook_deliveries` rows they become (docs/webhooks.md).

The event id is derived from the event itself (message, state, time of the
history row), so a receiver can de-duplicate retries and replays by
`X-SMSGW-Event-Id`. Inserting deliveries is idempotent per (hook, event).
"""

from __future__ import annotations

import uuid
from datetime import UTC

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from smsgw_common.models import DELIVERED, EXPIRED, FAILED, RECEIVED, SENT, User, Webhook, WebhookDelivery
from smsgw_common.schemas import ModemState

STATE_EVENTS = {
    RECEIVED: "message.received",
    SENT: "message.sent",
    DELIVERED: "message.delivered",
    FAILED: "message.failed",
    EXPIRED: "message.expired",
}
EVENT_TYPES = (
    "message.received",
    "message.sent",
    "message.delivered",
    "message.failed",
    "message.expired",
    "modem.offline",
    "modem.online",
)
TEST_EVENT = "webhook.test"
EVENT_NS = uuid.UUID("5b0d7a52-64c1-4b7e-9a43-5e0f1d8e2c11")


def event_id_for(*parts) -> str:
    return str(uuid.uuid5(EVENT_NS, "|".join(str(p) for p in parts)))


def message_event_id(message_id: int, state: str, at) -> str:
    """The id receivers de-duplicate by: the history row's message, state and
    time (normalised to UTC, so it does not depend on a session's time zone)."""
    return event_id_for("message", message_id, state, at.astimezone(UTC).isoformat())


def active_hooks(session) -> list:
    return session.execute(
        select(Webhook.id, Webhook.user_id, User.role, Webhook.events)
        .join(User, User.id == Webhook.user_id)
        .where(Webhook.is_active, User.is_active)
    ).all()


def _delivery_values(hooks, event_type: str, event_id: str, data: dict, at, owner_id: int | None) -> list[dict]:
    """One pending delivery per hook subscribed to `event_type`; `owner_id`
    limits non-admin hooks to the owner's own messages."""
    body = {"id": event_id, "type": event_type, "created_at": at.isoformat(), "data": data}
    return [
        {"webhook_id": hook_id, "event_id": event_id, "event_type": event_type, "payload": body}
        for hook_id, user_id, role, events in hooks
        if event_type in (events or []) and (owner_id is None or role == "admin" or user_id == owner_id)
    ]


def insert_deliveries(session, values: list[dict]) -> int:
    """Idempotent: (hook, event) is unique, so a replay inserts nothing."""
    if not values:
        return 0
    inserted = session.execute(
        insert(WebhookDelivery)
        .values(values)
        .on_conflict_do_nothing(index_elements=["webhook_id", "event_id"])
        .returning(WebhookDelivery.id)
    ).all()
    return len(inserted)


def _enqueue(session, event_type: str, event_id: str, data: dict, at, owner_id: int | None) -> int:
    values = _delivery_values(active_hooks(session), event_type, event_id, data, at, owner_id)
    return insert_deliveries(session, values)


def message_event_data(row) -> dict:
    """The `data` of a message.* delivery, from a history row joined with its message."""
    outbound = row.direction == "outbound"
    return {
        "message_id": row.message_id,
        "status": row.state,
        "direction": row.direction,
        "sender": (row.sender_sim or row.sender) if outbound else row.sender,
        "recipient": row.recipient,
        "message": row.message,
        "sim_card_id": row.sim_card_id,
        "modem_id": row.modem_id,
        "segments": row.segments,
        "error_code": row.error_code,
        "error_text": row.error_text,
        "at": row.at.astimezone(UTC).isoformat(),
    }


def message_event_deliveries(hooks, row) -> list[dict]:
    event_type = STATE_EVENTS.get(row.state)
    if event_type is None or row.direction is None:
        return []
    owner = row.user_id if row.direction == "outbound" else None
    at = row.at.astimezone(UTC)
    return _delivery_values(
        hooks, event_type, message_event_id(row.message_id, row.state, row.at), message_event_data(row), at, owner
    )


def modem_status_payload(modem_id: str, st: ModemState) -> dict:
    """A modem's state as dashboards (`modem_status`) and webhooks see it."""
    return {
        "modem_id": modem_id,
        "online": st.online,
        "signal_quality": st.signal_quality,
        "signal_dbm": st.signal_dbm,
        "registration": st.registration,
        "operator": st.operator,
        "sim_card_id": st.sim_card_id,
        "number": st.number,
        "last_error": st.last_error,
        "queue_depth": st.queue_depth,
        "reason": st.reason,
        "node": st.node,
        "site": st.site,
        "journal_backlog": st.journal_backlog,
        "timestamp": st.ts.isoformat(),
    }


def enqueue_modem_event(session, modem_id: str, st, status: dict) -> int:
    event_type = "modem.online" if st.online else "modem.offline"
    # A worker's last will carries the time it connected, so two deaths of one
    # worker can share a timestamp; repeats are already filtered by the
    # consumer's previous-state check, so each change gets a fresh id.
    event_id = str(uuid.uuid4())
    return _enqueue(session, event_type, event_id, status, st.ts, None)
