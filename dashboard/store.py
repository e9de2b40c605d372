"""The dashboard's read-only view of the release store, as pandas DataFrames.

SQLite is opened with a ``mode=ro`` URI (and ``PRAGMA query_only``), so every write
fails in SQLite itself. PostgreSQL connections start with
``default_transaction_read_only=on``; in production also give the dashboard a role that
can only read the release tables (and not the accountant's per-user tables if they
share the database)::

    CREATE ROLE moodfed_dashboard LOGIN PASSWORD '...';
    GRANT CONNECT ON DATABASE releases TO moodfed_dashboard;
    GRANT USAGE ON SCHEMA public TO moodfed_dashboard;
    GRANT SELECT ON release, training_run, model_round, analytics_release, analytics_cell
        TO moodfed_dashboard;
    ALTER ROLE moodfed_dashboard SET default_transaction_read_only = on;
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url

from server.releases import readers

__all__ = ["ReleaseStoreError", "ReleaseView", "read_only_engine"]

_TABLES = ("release", "training_run", "model_round", "analytics_release", "analytics_cell")


class ReleaseStoreError(RuntimeError):
    """The release store cannot be opened or read; the message says why."""


def _query_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only = ON")
    cursor.close()


def read_only_engine(url: str) -> Engine:
    """An engine on the release store that cannot write (SQLite or PostgreSQL).

    >>> read_only_engine("sqlite:////nonexistent/releases.db").url.query["mode"]
    'ro'
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = parsed.database or ""
        if not path or path == ":memory:" or path.startswith("file:"):
            raise ReleaseStoreError(f"the release store must be a SQLite file path, got {url!r}")
        engine = create_engine(
            f"sqlite:///file:{quote(str(Path(path).resolve()))}?mode=ro&uri=true"
        )
        event.listen(engine, "connect", _query_only)
        return engine
    if backend == "postgresql":
        return create_engine(
            parsed, connect_args={"options": "-c default_transaction_read_only=on"}
        )
    raise ReleaseStoreError(f"the release store must be SQLite or PostgreSQL, not {backend}")


class ReleaseView:
    """Everything the pages read, as DataFrames; empty frames when nothing is published."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def missing_tables(self) -> list[str]:
        """Release-store tables that do not exist (yet); raises if the store cannot be read."""
        try:
            present = set(inspect(self.engine).get_table_names())
        except Exception as error:
            raise ReleaseStoreError(f"cannot read the release store: {error}") from error
        return [table for table in _TABLES if table not in present]

    def _frame(self, reader: Any, **kwargs: Any) -> pd.DataFrame:
        if self.missing_tables():
            return pd.DataFrame()
        try:
            return pd.DataFrame(reader(self.engine, **kwargs))
        except Exception as error:
            raise ReleaseStoreError(f"cannot read the release store: {error}") from error

    def cells(self, query: str) -> pd.DataFrame:
        """The released cells of one query over every period (``period`` as datetime)."""
        frame = self._frame(readers.analytics_cells, query=query)
        if not frame.empty:
            frame["period"] = pd.to_datetime(frame["period"])
        return frame

    def analytics_releases(self) -> pd.DataFrame:
        frame = self._frame(readers.analytics_releases)
        if not frame.empty:
            frame["period"] = pd.to_datetime(frame["period"])
        return frame

    def releases(self) -> pd.DataFrame:
        return self._frame(readers.releases)

    def model_rounds(self) -> pd.DataFrame:
        return self._frame(readers.model_rounds)

    def training_runs(self) -> pd.DataFrame:
        return self._frame(readers.training_runs)
