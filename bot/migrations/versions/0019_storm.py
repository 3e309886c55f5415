"""storm mode: incident.kind ('storm'), its members (storm_member), the group each alert came
from (alert.group_id, unique per group: a storm holds many groups' alerts), and an index on
incident.created_at for the storm rule's rate

Revision ID: 0019
Revises: 0018
"""
from alembic import op
import sqlalchemy as sa


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='incident'))
        batch_op.create_index('ix_incident_created_at', ['created_at'], unique=False)
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.add_column(sa.Column('group_id', sa.Integer(), nullable=True))
    # Every alert so far came from its incident's own group.
    op.execute("UPDATE alert SET group_id = (SELECT incident.group_id FROM incident WHERE incident.id = alert.incident_id)")
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.create_foreign_key('fk_alert_group_id', 'alert_group', ['group_id'], ['id'])
        batch_op.create_index('ix_alert_group_id', ['group_id'], unique=False)
        batch_op.drop_constraint('uq_alert_fingerprint', type_='unique')
        batch_op.create_unique_constraint('uq_alert_group_fingerprint', ['incident_id', 'group_id', 'fingerprint'])
    op.create_table(
        'storm_member',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('storm_id', sa.Integer(), nullable=False),
        sa.Column('group_id', sa.Integer(), nullable=False),
        sa.Column('joined_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('severity', sa.String(length=2), nullable=False),
        sa.Column('title', sa.Text(), nullable=False),
        sa.Column('alertname', sa.Text(), nullable=False),
        sa.Column('service', sa.Text(), nullable=True),
        sa.Column('namespace', sa.Text(), nullable=True),
        sa.Column('labels', sa.JSON(), nullable=False),
        sa.Column('annotations', sa.JSON(), nullable=False),
        sa.Column('external_url', sa.Text(), nullable=False),
        sa.Column('truncated_alerts', sa.Integer(), nullable=False),
        sa.Column('firing', sa.Integer(), nullable=False),
        sa.Column('alerts', sa.Integer(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('split_incident_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['storm_id'], ['incident.id']),
        sa.ForeignKeyConstraint(['group_id'], ['alert_group.id']),
        sa.ForeignKeyConstraint(['split_incident_id'], ['incident.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('storm_id', 'group_id', name='uq_storm_member'),
    )
    op.create_index('ix_storm_member_storm_id', 'storm_member', ['storm_id'], unique=False)
    op.create_index('ix_storm_member_group_id', 'storm_member', ['group_id'], unique=False)
    op.create_index('ix_storm_member_joined_at', 'storm_member', ['joined_at'], unique=False)


def downgrade() -> None:
    op.drop_table('storm_member')
    op.execute("DELETE FROM alert WHERE incident_id IN (SELECT id FROM incident WHERE kind = 'storm')")
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.drop_constraint('uq_alert_group_fingerprint', type_='unique')
        batch_op.create_unique_constraint('uq_alert_fingerprint', ['incident_id', 'fingerprint'])
        batch_op.drop_index('ix_alert_group_id')
        batch_op.drop_constraint('fk_alert_group_id', type_='foreignkey')
        batch_op.drop_column('group_id')
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.drop_index('ix_incident_created_at')
        batch_op.drop_column('kind')
