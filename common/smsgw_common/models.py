"""SQLAlchemy models: the database contract between the services.

The API service owns the schema (Alembic, `services/api/migrations`); workers
and the stats collector read and write these tables through the same classes.
Field names of the seed (`number`, `status`, `sender`, `recipient`, `message`,
`direction`, `timestamp`, `sender_sim`, ...) are kept where the seed had them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True), dict: JSONB}
    # Every model here maps one Table (SQLAlchemy types it as any FromClause).
    __table__: ClassVar[Table]


# Roles, weakest first.
ROLES = ("viewer", "user", "admin")

# Outbound states (docs/architecture.md); `unknown` is a send interrupted between writing
# AT+CMGS and reading +CMGS: the gateway cannot tell whether it left.
QUEUED, SENDING, SENT, DELIVERED = "queued", "sending", "sent", "delivered"
FAILED, EXPIRED, CANCELLED, UNKNOWN = "failed", "expired", "cancelled", "unknown"
RECEIVED = "received"  # inbound
OUTBOUND_STATES = (QUEUED, SENDING, SENT, DELIVERED, FAILED, EXPIRED, CANCELLED, UNKNOWN)
FINAL_STATES = (DELIVERED, FAILED, EXPIRED, CANCELLED, UNKNOWN)
CANCELLABLE_STATES = (QUEUED,)
# Outbound states on the way to a final one; each has a partial index of its own.
IN_FLIGHT_STATES = (QUEUED, SENDING, SENT)
IN_FLIGHT_SQL = "(" + ", ".join(f"'{state}'" for state in IN_FLIGHT_STATES) + ")"

PRIORITIES = {"low": -10, "normal": 0, "high": 10}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))
    last_login_at: Mapped[datetime | None]
    # Raised by a password change or reset, a role change and a deactivation:
    # a JWT carries the version it was issued under and is refused once it
    # differs, so those changes end every session at once.
    token_version: Mapped[int] = mapped_column(default=0, server_default=text("0"))

    # The database deletes a user's keys (ON DELETE CASCADE), keys made by keys
    # included; the ORM deleting them one by one would race those cascades.
    api_keys: Mapped[list[ApiKey]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class ApiKey(Base):
    """A named API key. Only a SHA-256 of the key is kept (keys are 256-bit
    random, so a slow hash adds nothing); `prefix` finds the row and shows
    which key is which without revealing it."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    # The key that created this one (None: made with a password session or by
    # an admin tool); revoking a key revokes every key below it.
    parent_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    # Returned by a login: a session credential, revoked with the user's sessions.
    is_login_key: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))

    user: Mapped[User] = relationship(back_populates="api_keys")


class Modem(Base):
    """A modem as a worker sees it; `id` is the worker's modem id (topic key)."""

    __tablename__ = "modems"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    imei: Mapped[str | None] = mapped_column(String(32), index=True)
    device_path: Mapped[str | None] = mapped_column(String(255))
    manufacturer: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(100))
    firmware: Mapped[str | None] = mapped_column(String(100))
    online: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    signal_rssi: Mapped[int | None] = mapped_column(SmallInteger)  # dBm
    signal_quality: Mapped[int | None] = mapped_column(SmallInteger)  # +CSQ 0..31, 99 unknown
    registration: Mapped[str | None] = mapped_column(String(32))
    operator: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_seen_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))
    # Where it is (docs/deployment.md, "Several sites"): None on the centre.
    node: Mapped[str | None] = mapped_column(String(64))
    site: Mapped[str | None] = mapped_column(String(64))
    # Facts its worker holds in its journal, not yet in Postgres, at its last refresh.
    journal_backlog: Mapped[int | None] = mapped_column(Integer)


class SimCard(Base):
    __tablename__ = "sim_cards"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(String(32), index=True)
    # active: usable for sending; inactive: kept but never routed to.
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    iccid: Mapped[str | None] = mapped_column(String(32), unique=True)
    imsi: Mapped[str | None] = mapped_column(String(32))
    operator: Mapped[str | None] = mapped_column(String(100))
    modem_id: Mapped[str | None] = mapped_column(ForeignKey("modems.id", ondelete="SET NULL"), index=True)
    label: Mapped[str | None] = mapped_column(String(100))
    limit_per_minute: Mapped[int | None]
    limit_per_day: Mapped[int | None]
    limit_per_month: Mapped[int | None]
    last_seen_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=text("now()"))

    modem: Mapped[Modem | None] = relationship()


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    direction: Mapped[str] = mapped_column(String(8))  # outbound | inbound
    sender: Mapped[str | None] = mapped_column(String(64))
    recipient: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    encoding: Mapped[str] = mapped_column(String(8), default="GSM-7")
    segments: Mapped[int] = mapped_column(SmallInteger, default=1)
    sim_card_id: Mapped[int | None] = mapped_column(ForeignKey("sim_cards.id", ondelete="SET NULL"))
    # The SIM's number when the message was routed or received (seed field).
    sender_sim: Mapped[str | None] = mapped_column(String(32))
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # For a pinned SIM (or site) that goes offline or runs out: "wait" for it, or "fail".
    on_unavailable: Mapped[str] = mapped_column(String(8), default="wait", server_default="wait")
    # Bound by the client to SIMs of this site (modems.site); None: any site.
    site: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    send_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    batch_id: Mapped[str | None] = mapped_column(String(36))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    # Claim by a worker: who holds it and until when (DESIGN: lease).
    worker_id: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None]
    error_code: Mapped[int | None]
    error_text: Mapped[str | None] = mapped_column(Text)
    # `timestamp` is the seed's name for creation time.
    timestamp: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))
    queued_at: Mapped[datetime | None]
    sending_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    received_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=text("now()"))

    sim_card: Mapped[SimCard | None] = relationship()
    events: Mapped[list[MessageEvent]] = relationship(
        back_populates="message_row", order_by="MessageEvent.id", cascade="all, delete-orphan"
    )
    parts: Mapped[list[MessagePart]] = relationship(
        back_populates="message_row", order_by="MessagePart.seq", cascade="all, delete-orphan"
    )

    # Every status change adds an entry to every index here whose WHERE the
    # new row meets: status is indexed (a partial index's WHERE counts), so
    # the update cannot be heap-only. A full index on `messages` costs four
    # WAL records per lifecycle; only what a query needs for every row is
    # indexed in full (migration 0008, bench/wal_per_sms.py).
    __table_args__ = (
        # Listings: inbox/outbox newest first, filtered by state or SIM, read
        # backwards. The outbox (nearly every row) pages through the primary
        # key; the inbox has an index of its own rows, which are written once.
        # Not `id DESC`: that puts each new row at the front of its key,
        # splitting a mid-index page on every insert (migration 0009).
        Index("ix_messages_inbound_id", "id", postgresql_where=text("direction = 'inbound'")),
        # By state: a row gets its entry once, when it settles; the states
        # on the way (queued, sending, sent) are listed through the queue's
        # own partial indexes below.
        Index(
            "ix_messages_settled_status_id",
            "direction",
            "status",
            "id",
            postgresql_where=text(f"status NOT IN {IN_FLIGHT_SQL}"),
        ),
        Index("ix_messages_sim_id", "sim_card_id", "id"),
        Index("ix_messages_recipient_id", "recipient", "id"),
        Index("ix_messages_sender_id", "sender", "id"),
        # Rows are written in time order and read by time range: BRIN is
        # written per range of pages, not per row.
        Index("ix_messages_timestamp", "timestamp", postgresql_using="brin"),
        Index("ix_messages_batch_id", "batch_id", postgresql_where=text("batch_id IS NOT NULL")),
        # Work queue: only queued rows, in the order workers take them (and
        # the listing of queued messages).
        Index(
            "ix_messages_queue",
            "sim_card_id",
            text("priority DESC"),
            "id",
            postgresql_where=text("status = 'queued'"),
        ),
        # Leases to reclaim and sent messages awaiting reports (and the
        # listings of those two states).
        Index("ix_messages_sending_lease", "lease_until", postgresql_where=text("status = 'sending'")),
        Index("ix_messages_sent_at", "sent_at", postgresql_where=text("status = 'sent'")),
        Index(
            "uq_messages_idempotency",
            "user_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )


class MessageEvent(Base):
    """Every state change of a message, with its time (message detail timeline)."""

    __tablename__ = "message_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))
    source: Mapped[str | None] = mapped_column(String(64))  # "api", a worker id, "sweeper"
    error_code: Mapped[int | None]
    error_text: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)

    message_row: Mapped[Message] = relationship(back_populates="events")


class MessagePart(Base):
    """One outbound segment: its message reference matches delivery reports."""

    __tablename__ = "message_parts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(SmallInteger)  # 1-based
    sim_card_id: Mapped[int | None] = mapped_column(ForeignKey("sim_cards.id", ondelete="SET NULL"))
    reference: Mapped[int | None] = mapped_column(SmallInteger)  # TP-MR 0..255
    status: Mapped[str] = mapped_column(String(16), default=SENT)
    sent_at: Mapped[datetime | None]
    report_at: Mapped[datetime | None]
    report_status: Mapped[int | None] = mapped_column(SmallInteger)  # TP-ST

    message_row: Mapped[Message] = relationship(back_populates="parts")

    __table_args__ = (
        UniqueConstraint("message_id", "seq"),
        Index("ix_message_parts_sim_ref", "sim_card_id", "reference", "id"),
        # Room for the delivery report's update to stay on the page (heap-only).
        {"postgresql_with": {"fillfactor": 90}},
    )


class InboundPart(Base):
    """A part of a concatenated inbound SMS, kept until all parts are in."""

    __tablename__ = "inbound_parts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sim_card_id: Mapped[int | None] = mapped_column(ForeignKey("sim_cards.id", ondelete="CASCADE"))
    sender: Mapped[str] = mapped_column(String(64))
    reference: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(SmallInteger)
    seq: Mapped[int] = mapped_column(SmallInteger)
    content: Mapped[str] = mapped_column(Text)
    encoding: Mapped[str] = mapped_column(String(8), default="GSM-7")
    sent_at: Mapped[datetime | None]  # the SMSC timestamp
    received_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))
    # The part as the modem handed it over (hex, with SMSC part): kept in
    # raw_inbound_pdus if the message is delivered incomplete.
    pdu: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("sim_card_id", "sender", "reference", "total", "seq", name="uq_inbound_parts_key"),
    )


# Why a received PDU is kept raw (RawInboundPdu.kind).
RAW_UNDECODABLE = "undecodable"  # no decoder reading of it holds: kept instead of a message
RAW_INCOMPLETE_PART = "incomplete_part"  # a part of a message delivered with parts missing


class RawInboundPdu(Base):
    """A received PDU kept as the modem gave it, committed before its SIM copy
    is deleted or its +CMT acknowledged: nothing received is lost to a decoder."""

    __tablename__ = "raw_inbound_pdus"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    pdu: Mapped[str] = mapped_column(Text)  # hex, with the SMSC part
    reason: Mapped[str] = mapped_column(Text)
    sim_card_id: Mapped[int | None] = mapped_column(ForeignKey("sim_cards.id", ondelete="SET NULL"))
    modem_id: Mapped[str | None] = mapped_column(String(64))
    # Where it came from: "SM"/"ME"/"SR" and the slot, or "+CMT" (direct).
    origin: Mapped[str | None] = mapped_column(String(32))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    received_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))

    __table_args__ = (Index("ix_raw_inbound_pdus_kind_id", "kind", "id"),)


class Log(Base):
    """Audit trail: who did what (seed fields plus the actor)."""

    __tablename__ = "logs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    details: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="success")
    timestamp: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))
    sender_sim: Mapped[str | None] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor: Mapped[str | None] = mapped_column(String(120))
    ip: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))

    # Written in time order, read by time range (migration 0008).
    __table_args__ = (Index("ix_logs_timestamp", "timestamp", postgresql_using="brin"),)


class OptOut(Base):
    __tablename__ = "opt_outs"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    source: Mapped[str] = mapped_column(String(16), default="keyword")  # keyword | admin
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))


class Webhook(Base):
    """A user's webhook. The signing secret must be usable to sign, so it is
    stored as given (it is shown once at creation and never returned again)."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSONB)
    secret: Mapped[str] = mapped_column(String(128))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    failing: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|delivered|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id"),
        Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        Index("ix_webhook_deliveries_hook", "webhook_id", "id"),
    )


class Node(Base):
    """An edge node the centre lets in (docs/deployment.md, "Several sites").

    An admin creates it with a one-time enrolment token (only its SHA-256 is
    kept, as for API keys); the node trades the token for credentials of its
    own: a database role (`smsgw_node_<id>`, a member of the workers' role)
    and a broker user per modem. Revoking drops them."""

    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(48), unique=True)
    site: Mapped[str | None] = mapped_column(String(64))
    modems: Mapped[int] = mapped_column(SmallInteger)  # its modem ids: <name>-1 .. <name>-<modems>
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)  # None once used or revoked
    token_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    enrolled_at: Mapped[datetime | None]  # the last time its token was traded for credentials
    enrolled_from: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None]
    # Its modems' broker users: modem id -> PBKDF2 hash (mosquitto's $7$), as
    # the API writes them for the broker (NODES_BROKER_FILE); None: none yet, or revoked.
    broker_hashes: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class SitePrefix(Base):
    """Recipients starting with `prefix` prefer SIMs of `site` (domain/routing.py)."""

    __tablename__ = "site_prefixes"

    prefix: Mapped[str] = mapped_column(String(16), primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))

    __table_args__ = (
        CheckConstraint("prefix ~ '^[+][0-9]{1,15}$'", name="ck_site_prefixes_prefix"),
        CheckConstraint("site ~ '^[A-Za-z0-9._-]{1,64}$'", name="ck_site_prefixes_site"),
    )


class EventCursor(Base):
    """How far a consumer of a history table has got, durably (e.g. the
    webhook dispatcher's position in `message_events`, smsgw_api/pipeline/webhooks.py)."""

    __tablename__ = "event_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("now()"))


class StatSample(Base):
    """A statistics sample; `resolution` is seconds per sample (raw or downsampled)."""

    __tablename__ = "stat_samples"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime]
    resolution: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)

    __table_args__ = (Index("ix_stat_samples_source_res_ts", "source", "resolution", "ts"),)
