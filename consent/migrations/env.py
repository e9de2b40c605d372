"""Alembic environment for the consent ledger's schema."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from consent.store import create_engine

url = context.config.attributes["database_url"]
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=SQLModel.metadata)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
