"""rows imported from the seed's SQLite database (python -m smsgw_api import-seed)

Revision ID: 0005_seed_import
Revises: 0003_optout_inbound_cursor
Create Date: 2026-12-06 22:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005_seed_import'
down_revision = '0003_optout_inbound_cursor'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One map for every seed table instead of a column per table: the seed's
    # ids are the importer's idempotency key and the seed's SIM UUIDs stay
    # usable, without the shared models carrying seed columns forever. A row
    # deleted here after the import keeps its entry, so a re-run does not
    # bring back what an operator removed.
    op.create_table(
        'seed_rows',
        sa.Column('seed_table', sa.String(16), nullable=False),
        sa.Column('seed_id', sa.String(64), nullable=False),
        sa.Column('target_table', sa.String(32), nullable=False),
        sa.Column('target_id', sa.BigInteger(), nullable=True),
        sa.Column('imported_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('seed_table', 'seed_id'),
    )


def downgrade() -> None:
    op.drop_table('seed_rows')
