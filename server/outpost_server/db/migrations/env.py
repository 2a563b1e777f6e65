"""Alembic environment: runs against the connection `db/engine.py` passes in."""

from alembic import context

from outpost_server.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via `alembic` CLI
    raise RuntimeError("run migrations through outpost_server.db.engine.open_database")
context.configure(
    connection=connection, target_metadata=Base.metadata, render_as_batch=True
)
with context.begin_transaction():
    context.run_migrations()
