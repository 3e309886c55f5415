"""incidents: an index for the card's past incidents (same alertname and service, resolved),
read on every card redraw (9.6 ms → 0.19 ms at 50,000 incidents on PostgreSQL)

Revision ID: 0016
Revises: 0015
"""
from alembic import op


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_incident_memory', 'incident', ['alertname', 'service', 'resolved_at'])


def downgrade() -> None:
    op.drop_index('ix_incident_memory', table_name='incident')
