"""crash-safe Slack steps

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # stub: filled in by the engineer who owns this migration


def downgrade() -> None:
    pass
