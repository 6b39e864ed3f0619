"""where a modem is: its edge node and site, and its worker's journal backlog

Revision ID: 0010_modem_node_and_site
Revises: 0009_ascending_id_indexes
Create Date: 2026-12-07 10:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010_modem_node_and_site'
down_revision = '0009_ascending_id_indexes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding them rewrites nothing, and a modem of the
    # centre (or one whose worker predates them) simply has none.
    op.add_column('modems', sa.Column('node', sa.String(64), nullable=True))
    op.add_column('modems', sa.Column('site', sa.String(64), nullable=True))
    op.add_column('modems', sa.Column('journal_backlog', sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column('modems', 'journal_backlog')
    op.drop_column('modems', 'site')
    op.drop_column('modems', 'node')
