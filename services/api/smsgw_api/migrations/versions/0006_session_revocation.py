"""users.token_version, api_keys.parent_key_id and api_keys.is_login_key: sessions and keys that can be revoked

Revision ID: 0006_session_revocation
Revises: 0005_seed_import
Create Date: 2026-12-06 22:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_session_revocation"
down_revision = "0005_seed_import"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("token_version", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("api_keys", sa.Column("parent_key_id", sa.Integer(), nullable=True))
    op.create_foreign_key(
        "api_keys_parent_key_id_fkey", "api_keys", "api_keys", ["parent_key_id"], ["id"], ondelete="CASCADE"
    )
    op.create_index("ix_api_keys_parent_key_id", "api_keys", ["parent_key_id"])
    op.add_column("api_keys", sa.Column("is_login_key", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    # Until now a login's key was known by its name alone.
    op.execute("UPDATE api_keys SET is_login_key = true WHERE name = 'login'")


def downgrade() -> None:
    op.drop_column("api_keys", "is_login_key")
    op.drop_index("ix_api_keys_parent_key_id", table_name="api_keys")
    op.drop_constraint("api_keys_parent_key_id_fkey", "api_keys", type_="foreignkey")
    op.drop_column("api_keys", "parent_key_id")
    op.drop_column("users", "token_version")
