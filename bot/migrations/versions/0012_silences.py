"""silences: the Alertmanager silences approved requests created, shown on the incident card with
an Expire button (its opaque token), until they end or are expired

Revision ID: 0012
Revises: 0011
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'silence',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('token', sa.String(length=32), nullable=False),
        sa.Column('incident_id', sa.Integer(), nullable=False),
        sa.Column('approval_id', sa.Integer(), nullable=True),
        sa.Column('silence_id', sa.String(length=64), nullable=False),
        sa.Column('matchers', sa.Text(), nullable=False),
        sa.Column('comment', sa.Text(), nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expire_requested_by', sa.String(length=64), nullable=True),
        sa.Column('expire_requested_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('expired_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('expired_by', sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(['incident_id'], ['incident.id']),
        sa.ForeignKeyConstraint(['approval_id'], ['approval_request.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('silence_id', name='uq_silence_silence_id'),
        sa.UniqueConstraint('token', name='uq_silence_token'),
    )
    op.create_index('ix_silence_incident_id', 'silence', ['incident_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_silence_incident_id', table_name='silence')
    op.drop_table('silence')
