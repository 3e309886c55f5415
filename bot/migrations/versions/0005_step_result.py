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
    # Nullable: steps that ran before this migration have no recorded result ("not known").
    with op.batch_alter_table('runbook_step', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_ok', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('last_outcome', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runbook_step', schema=None) as batch_op:
        batch_op.drop_column('last_outcome')
        batch_op.drop_column('last_ok')
