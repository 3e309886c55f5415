"""Alembic environment: runs on the connection handed over by bot.db.Database.migrate()."""

from alembic import context
from sqlmodel import SQLModel

import bot.escalation  # (timer, paging, maintenance_window); the `import bot.models` below binds `bot`
import bot.models  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
