"""the last result of a runbook step (ok or failed, and why)

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # stub: filled in by the engineer who owns this migration


def downgrade() -> None:
    pass
