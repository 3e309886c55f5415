"""approval requests: the rollout an executed remediation started, followed to its end like
`kubectl rollout status` (progressing, complete, failed, timed_out) and its last progress line

Revision ID: 0011
Revises: 0010
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('approval_request', sa.Column('rollout', sa.String(length=16), nullable=True))
    op.add_column('approval_request', sa.Column('rollout_detail', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('approval_request', 'rollout_detail')
    op.drop_column('approval_request', 'rollout')
