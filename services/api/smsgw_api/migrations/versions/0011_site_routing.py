"""site-aware routing: a message may be bound to a site; recipient prefixes prefer one

Revision ID: 0011_site_routing
Revises: 0010_modem_node_and_site
Create Date: 2026-12-07 12:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0011_site_routing'
down_revision = '0010_modem_node_and_site'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites no row, and a message sent
    # without `site` (every one before this) is bound to none.
    op.add_column('messages', sa.Column('site', sa.String(64), nullable=True))
    op.create_table(
        'site_prefixes',
        sa.Column('prefix', sa.String(16), primary_key=True),
        sa.Column('site', sa.String(64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        # The API checks both; the database refuses what slipped past it.
        sa.CheckConstraint("prefix ~ '^[+][0-9]{1,15}$'", name='ck_site_prefixes_prefix'),
        sa.CheckConstraint("site ~ '^[A-Za-z0-9._-]{1,64}$'", name='ck_site_prefixes_site'),
    )


def downgrade() -> None:
    op.drop_table('site_prefixes')
    op.drop_column('messages', 'site')
