"""text columns for alert-derived values (no VARCHAR limit refuses an alert)

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # stub: filled in by the engineer who owns this migration


def downgrade() -> None:
    pass
