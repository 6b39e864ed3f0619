"""opt-out keywords applied from inbound messages past a durable cursor

Revision ID: 0003_optout_inbound_cursor
Revises: 0002_webhook_event_cursor
Create Date: 2026-11-28 10:00:00
"""
from alembic import op

revision = '0003_optout_inbound_cursor'
down_revision = '0002_webhook_event_cursor'
branch_labels = None
depends_on = None

CURSOR = 'optouts.inbound_messages'


def upgrade() -> None:
    # Start at the present: inbound messages from before this revision had
    # their STOP/START applied already (from MQTT) and must not be applied
    # again (an admin may have edited the list since).
    op.execute(
        "INSERT INTO event_cursors (name, last_id) "
        f"SELECT '{CURSOR}', coalesce(max(id), 0) FROM messages WHERE direction = 'inbound' "
        "ON CONFLICT (name) DO NOTHING"
    )


def downgrade() -> None:
    op.execute(f"DELETE FROM event_cursors WHERE name = '{CURSOR}'")
