"""tenant quotas

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 01:22:56.355069
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tenant_quotas',
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('concurrent_jobs', sa.Integer(), nullable=True),
    sa.Column('jobs_per_day', sa.Integer(), nullable=True),
    sa.Column('max_model_params', sa.BigInteger(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_tenant_quotas_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', name=op.f('pk_tenant_quotas'))
    )


def downgrade() -> None:
    op.drop_table('tenant_quotas')
