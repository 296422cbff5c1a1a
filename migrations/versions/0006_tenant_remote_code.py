"""tenant remote code permission

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 03:40:00.000000

Tenants get ``allow_remote_code`` (off): only a tenant an operator allowed may submit a model
loaded with ``trust_remote_code``.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('allow_remote_code', sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('allow_remote_code')
