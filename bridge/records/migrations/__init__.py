"""Alembic migrations of the records schema (script location for :func:`bridge.records.store.upgrade`)."""
