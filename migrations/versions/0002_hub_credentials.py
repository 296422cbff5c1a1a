"""hub credentials

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 00:35:58.471741
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('hub_credentials',
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('token_encrypted', sa.Text(), nullable=False),
    sa.Column('token_hint', sa.String(length=8), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_hub_credentials_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', name=op.f('pk_hub_credentials'))
    )


def downgrade() -> None:
    op.drop_table('hub_credentials')
