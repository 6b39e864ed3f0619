"""indexes ending in `id DESC` rebuilt with `id` ascending

Revision ID: 0009_ascending_id_indexes
Revises: 0008_fewer_writes_per_sms
Create Date: 2026-12-07 01:20:00
"""
from alembic import op

revision = '0009_ascending_id_indexes'
down_revision = '0008_fewer_writes_per_sms'
branch_labels = None
depends_on = None

# A new row has the highest id, so in an index on (key, id DESC) it goes to
# the FRONT of its key's entries: every insert with one key lands on the same
# leaf page in the middle of the index, which splits 50/50 when full (1.8x
# the pages of (key, id), each split logged in the WAL, one hot page that
# concurrent inserts queue for). That is why sending to one recipient over
# and over was slower than to new ones, and every send paid it on the sender,
# SIM and direction indexes. With id ascending a new row goes to the end of
# its key's entries, and the listings (`ORDER BY id DESC`) read the same
# index backwards.
INDEXES = {
    'ix_messages_sim_id': ('messages', 'sim_card_id, id'),
    'ix_messages_recipient_id': ('messages', 'recipient, id'),
    'ix_messages_sender_id': ('messages', 'sender, id'),
    'ix_message_parts_sim_ref': ('message_parts', 'sim_card_id, reference, id'),
    'ix_raw_inbound_pdus_kind_id': ('raw_inbound_pdus', 'kind, id'),
    'ix_webhook_deliveries_hook': ('webhook_deliveries', 'webhook_id, id'),
}


def _rebuild(columns_of) -> None:
    for name, (table, ascending) in INDEXES.items():
        # Only an index that exists is rebuilt: another revision may have
        # dropped or replaced one of them.
        op.execute(f"""
            DO $$ BEGIN
                IF to_regclass('{name}') IS NOT NULL THEN
                    DROP INDEX {name};
                    CREATE INDEX {name} ON {table} ({columns_of(ascending)});
                END IF;
            END $$""")


def upgrade() -> None:
    _rebuild(lambda ascending: ascending)


def downgrade() -> None:
    _rebuild(lambda ascending: ascending[: -len('id')] + 'id DESC')
