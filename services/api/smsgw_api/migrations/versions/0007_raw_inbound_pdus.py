"""received PDUs kept raw: undecodable ones, and the parts of incomplete messages

Revision ID: 0007_raw_inbound_pdus
Revises: 0006_session_revocation
Create Date: 2026-12-06 22:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007_raw_inbound_pdus'
down_revision = '0006_session_revocation'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A table of its own rather than flagged inbox rows: an undecodable PDU
    # has no trustworthy sender or text, and the inbox's rows (the seed's
    # shape) promise both to every client that lists them.
    op.create_table(
        'raw_inbound_pdus',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('pdu', sa.Text(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('sim_card_id', sa.Integer(), nullable=True),
        sa.Column('modem_id', sa.String(64), nullable=True),
        sa.Column('origin', sa.String(32), nullable=True),
        sa.Column('message_id', sa.BigInteger(), nullable=True),
        sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['sim_card_id'], ['sim_cards.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_raw_inbound_pdus_kind_id', 'raw_inbound_pdus', ['kind', sa.text('id DESC')])
    op.add_column('inbound_parts', sa.Column('pdu', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('inbound_parts', 'pdu')
    op.drop_index('ix_raw_inbound_pdus_kind_id', table_name='raw_inbound_pdus')
    op.drop_table('raw_inbound_pdus')
