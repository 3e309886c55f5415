"""roles and timeline capture: an incident's scribe and comms (beside its commander), and the
channel messages marked for its timeline (a :pushpin: or a pin), once per message

Revision ID: 0015
Revises: 0014
"""
from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scribe', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('comms', sa.String(length=64), nullable=True))
    op.create_table(
        'captured_message',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('incident_id', sa.Integer(), nullable=False),
        sa.Column('channel', sa.String(length=32), nullable=False),
        sa.Column('ts', sa.String(length=32), nullable=False),
        sa.Column('thread_ts', sa.String(length=32), nullable=True),
        sa.Column('via', sa.String(length=16), nullable=False),
        sa.Column('marked_by', sa.String(length=64), nullable=False),
        sa.Column('marked_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('entry_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['incident_id'], ['incident.id']),
        sa.ForeignKeyConstraint(['entry_id'], ['timeline_entry.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('channel', 'ts', name='uq_captured_message'),
    )
    op.create_index('ix_captured_message_incident_id', 'captured_message', ['incident_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_captured_message_incident_id', table_name='captured_message')
    op.drop_table('captured_message')
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.drop_column('comms')
        batch_op.drop_column('scribe')
