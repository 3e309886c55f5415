"""Slack requests acted on, so a retried or replayed click acts once; card button tokens; the
responders of an incident without a channel

Revision ID: 0007
Revises: 0006
"""
import secrets

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'slack_delivery',
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )
    op.create_index('ix_slack_delivery_received_at', 'slack_delivery', ['received_at'], unique=False)
    # Cards posted before this revision carry the bare incident id: those buttons stop working
    # (the card is redrawn with tokens at its next update) rather than trusting an id.
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.add_column(sa.Column('card_token', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('responders', sa.JSON(), nullable=False, server_default='[]'))
    bind = op.get_bind()
    incident = sa.table('incident', sa.column('id', sa.Integer), sa.column('card_token', sa.String))
    for (incident_id,) in bind.execute(sa.select(incident.c.id)).all():
        bind.execute(incident.update().where(incident.c.id == incident_id)
                     .values(card_token=secrets.token_urlsafe(16)))
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.alter_column('card_token', existing_type=sa.String(length=32), nullable=False)
        batch_op.create_unique_constraint('uq_incident_card_token', ['card_token'])


def downgrade() -> None:
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.drop_constraint('uq_incident_card_token', type_='unique')
        batch_op.drop_column('responders')
        batch_op.drop_column('card_token')
    op.drop_index('ix_slack_delivery_received_at', table_name='slack_delivery')
    op.drop_table('slack_delivery')
