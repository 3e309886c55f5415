"""alert_group: the digest of the last notification applied to the group, so that an exact
repeat (Alertmanager's repeat_interval, an HA peer) is answered from a read, without a lock

Revision ID: 0017
Revises: 0016
"""
from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('alert_group', schema=None) as batch_op:
        batch_op.add_column(sa.Column('applied_digest', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('alert_group', schema=None) as batch_op:
        batch_op.drop_column('applied_digest')
