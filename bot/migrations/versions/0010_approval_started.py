"""approval requests: when execution started and the cluster's facts just before it, so that
an execution interrupted after its call is reconciled against the cluster, never run again

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('approval_request', sa.Column('started_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('approval_request', sa.Column('before', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('approval_request', 'before')
    op.drop_column('approval_request', 'started_at')
