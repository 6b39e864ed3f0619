"""fewer bytes written per SMS: indexes that every status change rewrote for nothing, and room for HOT updates

Revision ID: 0008_fewer_writes_per_sms
Revises: 0007_raw_inbound_pdus
Create Date: 2026-12-07 01:20:00

A status change of a message is an UPDATE that Postgres cannot make
heap-only (`status` is indexed), so it adds an entry to every index of
`messages`: each index there costs four WAL records per message lifecycle
(accepted, sending, sent, delivered). On a Pi that is SD-card wear
(bench/wal_per_sms.py, docs/deployment.md "SD cards"). This revision keeps
only indexes that a query needs for every row:

- `ix_messages_direction_status_id` becomes `ix_messages_settled_status_id`,
  which holds a row once it has settled (any state but queued, sending and
  sent): a row gets one entry in its life instead of four, and the states on
  the way are listed through the queue's own partial indexes (ix_messages_queue,
  ix_messages_sending_lease, ix_messages_sent_at).
- `ix_messages_direction_id` becomes `ix_messages_inbound_id`, inbound rows
  only: the outbox (nearly every row) pages through the primary key backwards,
  and the inbox keeps an index of its own rows, which are written once.
- `ix_messages_batch_id` holds only rows that have a batch.
- `ix_messages_timestamp` and `ix_logs_timestamp` become BRIN: rows are
  written in time order, the queries on them are time ranges (statistics,
  since/until filters), and a BRIN index is written per range of pages, not
  per row.
- `message_parts` leaves 10 % of each page free (fillfactor), so that the
  delivery report's update of a part stays on its page (heap-only, no index
  entries) also once the table's pages are full. It applies to pages written
  from now on. (Not `messages`: its status changes cannot be heap-only while
  anything indexes `status`, a partial index's WHERE included, so free room
  there only made the table bigger.)
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_fewer_writes_per_sms"
down_revision = "0007_raw_inbound_pdus"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_messages_settled_status_id",
        "messages",
        ["direction", "status", "id"],
        postgresql_where=sa.text("status NOT IN ('queued', 'sending', 'sent')"),
    )
    op.drop_index("ix_messages_direction_status_id", table_name="messages")
    op.create_index(
        "ix_messages_inbound_id",
        "messages",
        ["id"],
        postgresql_where=sa.text("direction = 'inbound'"),
    )
    op.drop_index("ix_messages_direction_id", table_name="messages")
    op.drop_index("ix_messages_batch_id", table_name="messages")
    op.create_index("ix_messages_batch_id", "messages", ["batch_id"], postgresql_where=sa.text("batch_id IS NOT NULL"))
    op.drop_index("ix_messages_timestamp", table_name="messages")
    op.create_index("ix_messages_timestamp", "messages", ["timestamp"], postgresql_using="brin")
    op.drop_index("ix_logs_timestamp", table_name="logs")
    op.create_index("ix_logs_timestamp", "logs", ["timestamp"], postgresql_using="brin")
    op.execute("ALTER TABLE message_parts SET (fillfactor = 90)")


def downgrade() -> None:
    op.execute("ALTER TABLE message_parts RESET (fillfactor)")
    op.drop_index("ix_logs_timestamp", table_name="logs")
    op.create_index("ix_logs_timestamp", "logs", ["timestamp"])
    op.drop_index("ix_messages_timestamp", table_name="messages")
    op.create_index("ix_messages_timestamp", "messages", ["timestamp"])
    op.drop_index("ix_messages_batch_id", table_name="messages")
    op.create_index("ix_messages_batch_id", "messages", ["batch_id"])
    op.create_index("ix_messages_direction_id", "messages", ["direction", sa.text("id DESC")])
    op.drop_index("ix_messages_inbound_id", table_name="messages")
    op.create_index("ix_messages_direction_status_id", "messages", ["direction", "status", sa.text("id DESC")])
    op.drop_index("ix_messages_settled_status_id", table_name="messages")
