"""heartbeat: the Watchdog heartbeat's one row (bot.heartbeat), and timers about no incident
(timer.incident_id nullable: the heartbeat's `heartbeat.missing` timer has none)

Revision ID: 0018
Revises: 0017
"""
from alembic import op
import sqlalchemy as sa


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'heartbeat',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('watching_since', sa.DateTime(timezone=True), nullable=True),
        sa.Column('lost_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('routing_key', sa.String(length=64), nullable=True),
        sa.Column('timer_id', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('timer', schema=None) as batch_op:
        batch_op.alter_column('incident_id', existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM timer WHERE incident_id IS NULL")
    with op.batch_alter_table('timer', schema=None) as batch_op:
        batch_op.alter_column('incident_id', existing_type=sa.Integer(), nullable=False)
    op.drop_table('heartbeat')
