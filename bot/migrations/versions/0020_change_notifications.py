"""PostgreSQL: a NOTIFY on channel oncall_changes after every statement that writes the incident
or alert_group table, whoever writes it (a replica, the CLI, a person in psql), so that each
replica knows when what it read of them may be stale (bot.db.Database.changes). SQLite needs
none: PRAGMA data_version tells the same.

Revision ID: 0020
Revises: 0019
"""
from alembic import op


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

_TABLES = ("incident", "alert_group")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Statement-level and AFTER: one notification per statement, sent at commit (PostgreSQL
    # folds a transaction's identical notifications into one), none for a rolled-back one.
    op.execute("""
        CREATE FUNCTION oncall_notify_changes() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('oncall_changes', TG_TABLE_NAME);
            RETURN NULL;
        END $$""")
    for table in _TABLES:
        op.execute(f"CREATE TRIGGER {table}_changes AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION oncall_notify_changes()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        op.execute(f"DROP TRIGGER {table}_changes ON {table}")
    op.execute("DROP FUNCTION oncall_notify_changes()")
