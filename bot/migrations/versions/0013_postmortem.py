"""postmortem: every generated version of an incident's post-mortem document, and whether its
file was posted in the incident's channel

Revision ID: 0013
Revises: 0012
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'postmortem',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('incident_id', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('markdown', sa.Text(), nullable=False),
        sa.Column('language', sa.String(length=8), nullable=False),
        sa.Column('generated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('generated_by', sa.String(length=128), nullable=False),
        sa.Column('posted_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('file_id', sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(['incident_id'], ['incident.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('incident_id', 'version', name='uq_postmortem_version'),
    )
    op.create_index('ix_postmortem_incident_id', 'postmortem', ['incident_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_postmortem_incident_id', table_name='postmortem')
    op.drop_table('postmortem')
