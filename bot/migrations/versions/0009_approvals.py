"""approval requests for remediations: who asked, who decided, the dry run and the result

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'approval_request',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('token', sa.String(length=32), nullable=False),
        sa.Column('incident_id', sa.Integer(), nullable=False),
        sa.Column('step_id', sa.Integer(), nullable=False),
        sa.Column('action', sa.String(length=64), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('risk', sa.String(length=16), nullable=False),
        sa.Column('requested_by', sa.String(length=64), nullable=False),
        sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('decided_by', sa.String(length=64), nullable=True),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('dry_run_outcome', sa.Text(), nullable=True),
        sa.Column('result', sa.Text(), nullable=True),
        sa.Column('message_channel', sa.String(length=32), nullable=True),
        sa.Column('message_ts', sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(['incident_id'], ['incident.id']),
        sa.ForeignKeyConstraint(['step_id'], ['runbook_step.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token', name='uq_approval_request_token'),
    )
    op.create_index('ix_approval_request_incident_id', 'approval_request', ['incident_id'], unique=False)
    op.create_index('ix_approval_request_step_id', 'approval_request', ['step_id'], unique=False)
    op.create_index('ix_approval_request_requested_at', 'approval_request', ['requested_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_approval_request_requested_at', table_name='approval_request')
    op.drop_index('ix_approval_request_step_id', table_name='approval_request')
    op.drop_index('ix_approval_request_incident_id', table_name='approval_request')
    op.drop_table('approval_request')
