"""PagerDuty webhook events remembered: applied once and in order

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pagerduty_event',
    sa.Column('event_id', sa.Text(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('event_type', sa.Text(), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incident.id'], ),
    sa.PrimaryKeyConstraint('event_id')
    )
    with op.batch_alter_table('pagerduty_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pagerduty_event_incident_id'), ['incident_id'], unique=False)

    # Rows from before this revision keep NULL: the episode then counts from incident.created_at.
    with op.batch_alter_table('paging', schema=None) as batch_op:
        batch_op.add_column(sa.Column('episode_started_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_event_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('paging', schema=None) as batch_op:
        batch_op.drop_column('last_event_at')
        batch_op.drop_column('episode_started_at')
    op.drop_table('pagerduty_event')
