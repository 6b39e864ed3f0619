"""edge nodes: enrolment tokens and the credentials they trade for

Revision ID: 0012_nodes
Revises: 0011_site_routing
Create Date: 2026-12-07 13:00:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0012_nodes'
down_revision = '0011_site_routing'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'nodes',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('name', sa.String(48), nullable=False, unique=True),
        sa.Column('site', sa.String(64), nullable=True),
        sa.Column('modems', sa.SmallInteger(), nullable=False),
        sa.Column('token_hash', sa.String(64), nullable=True, unique=True),
        sa.Column('token_expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('created_by', sa.Integer(), sa.ForeignKey('users.id', ondelete='SET NULL'), nullable=True),
        sa.Column('enrolled_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('enrolled_from', sa.String(64), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('broker_hashes', postgresql.JSONB(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table('nodes')
