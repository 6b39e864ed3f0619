"""webhook deliveries derived from message_events: a durable cursor

Revision ID: 0002_webhook_event_cursor
Revises: 0001
Create Date: 2026-11-27 10:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0002_webhook_event_cursor'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'event_cursors',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('last_id', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    # Start at the present: history from before this revision already had
    # its deliveries queued (from MQTT) and must not be sent again.
    op.execute(
        "INSERT INTO event_cursors (name, last_id) "
        "SELECT 'webhooks.message_events', coalesce(max(id), 0) FROM message_events"
    )


def downgrade() -> None:
    op.drop_table('event_cursors')
