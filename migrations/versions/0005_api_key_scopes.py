"""api key scopes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 01:54:09.840580

Keys get a name and scopes; existing keys become 'admin' (what they could do before).
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('scopes', sa.String(length=100), server_default='admin', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('scopes')
        batch_op.drop_column('name')
