"""Alembic environment: runs on the connection that :func:`bridge.records.store.upgrade`
passes in ``config.attributes["connection"]`` (no alembic.ini, no URL of its own)."""

from alembic import context

from bridge.records.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=Base.metadata, render_as_batch=connection.dialect.name == "sqlite"
)
with context.begin_transaction():
    context.run_migrations()
