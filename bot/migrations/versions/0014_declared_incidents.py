"""declared incidents: where an incident came from (alertmanager, or slack: declared by a person)
and whether it is private (a private channel, an announcement without details)

Revision ID: 0014
Revises: 0013
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=32), nullable=False,
                                      server_default='alertmanager'))
        batch_op.add_column(sa.Column('private', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.drop_column('private')
        batch_op.drop_column('source')
