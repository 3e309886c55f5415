"""The audit log: an append-only, hash-chained table (bot.audit)

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'audit_entry',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('event', sa.String(length=32), nullable=False),
        sa.Column('actor', sa.String(length=128), nullable=False),
        sa.Column('incident_id', sa.Integer(), nullable=True),
        sa.Column('action', sa.String(length=64), nullable=True),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('prev_hash', sa.String(length=64), nullable=False),
        sa.Column('hash', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('hash', name='uq_audit_entry_hash'),
    )
    op.create_index('ix_audit_entry_at', 'audit_entry', ['at'], unique=False)
    op.create_index('ix_audit_entry_incident_id', 'audit_entry', ['incident_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_audit_entry_incident_id', table_name='audit_entry')
    op.drop_index('ix_audit_entry_at', table_name='audit_entry')
    op.drop_table('audit_entry')
