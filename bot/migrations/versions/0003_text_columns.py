"""text columns for alert-derived values (no VARCHAR limit refuses an alert)

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# (table, column, old VARCHAR length, nullable): values that come from Alertmanager. The webhook
# models bound them (integrations/alertmanager.py); the columns must not refuse what those accept.
_COLUMNS = [
    ('alert_group', 'receiver', 256, False),
    ('incident', 'alertname', 256, False),
    ('incident', 'service', 256, True),
    ('incident', 'namespace', 256, True),
    ('alert', 'fingerprint', 64, False),
    ('alert', 'alertname', 256, False),
]


def upgrade() -> None:
    for table, column, length, nullable in _COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=length), type_=sa.Text(),
                                  existing_nullable=nullable)


def downgrade() -> None:
    # Values longer than the old limit are cut so that the old schema can hold them.
    for table, column, length, nullable in _COLUMNS:
        op.execute(sa.text(f"UPDATE {table} SET {column} = substr({column}, 1, {length}) "
                           f"WHERE length({column}) > {length}"))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.Text(), type_=sa.String(length=length),
                                  existing_nullable=nullable)
