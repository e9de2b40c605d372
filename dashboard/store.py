"""The dashboard's read-only view of the release store, as pandas DataFrames.

SQLite is opened with a ``mode=ro`` URI (and ``PRAGMA query_only``), so every write fails
in SQLite itself. The server keeps the store in WAL mode, and SQLite then wants to create
the ``-shm`` (and ``-wal``) file next to the database even to read it. When the dashboard
may not write to that folder and no ``-wal`` file holds changes (the server has closed the
store: nothing is being written and everything is in the database file), the store is
opened ``immutable=1``, which reads the file as it is without those files; while the server
has it open, its ``-wal`` and ``-shm`` files only need to be readable. Each connection
decides afresh (no pooling), so a server that starts writing later is seen.

PostgreSQL connections start with ``default_transaction_read_only=on``, but any session
can turn that off (``SET TRANSACTION READ WRITE``): only a role that may not write is
read-only for real. ``moodfed dashboard create-readonly-role`` makes one (CONNECT on the
database, SELECT on the release tables, nothing else), and :meth:`ReleaseView.write_privileges`
says what the dashboard's own role could change.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import pandas as pd
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from server.releases import readers

__all__ = [
    "RELEASE_TABLES",
    "ReleaseStoreError",
    "ReleaseView",
    "read_only_engine",
    "write_privileges",
]

RELEASE_TABLES: Final = (
    "release",
    "training_run",
    "model_round",
    "analytics_release",
    "analytics_cell",
)
_TABLES = RELEASE_TABLES
_TABLE_WRITES: Final = ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES")


class ReleaseStoreError(RuntimeError):
    """The release store cannot be opened or read; the message says why."""


def _query_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only = ON")
    cursor.close()


def _in_wal_mode(path: Path) -> bool:
    # Bytes 18 and 19 of a SQLite header are the file format versions: 2 means WAL.
    try:
        with path.open("rb") as database:
            header = database.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[:16] == b"SQLite format 3\x00" and header[18] == 2


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection: ``mode=ro``, or ``immutable=1`` where that alone is exact."""
    uri = f"file:{quote(str(path))}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return connection
    except sqlite3.OperationalError:
        connection.close()
        if os.access(path.parent, os.W_OK) or not _in_wal_mode(path):
            raise  # not the unwritable-folder case: SQLite's own message says what is wrong
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise ReleaseStoreError(
            f"{wal} holds changes not yet in {path.name}, and the dashboard may not write to "
            f"{path.parent} to read them (SQLite needs {path.name}-shm there): let the server "
            "close the store (it then folds the log into the file), or make the -wal and "
            "-shm files readable to the dashboard while the server runs"
        )
    return sqlite3.connect(f"{uri}&immutable=1", uri=True, check_same_thread=False)


def read_only_engine(url: str, *, password: str | None = None) -> Engine:
    """An engine on the release store that cannot write (SQLite or PostgreSQL).

    ``password`` is the PostgreSQL role's (kept out of the URL; see
    ``MOODFED_RELEASES_PASSWORD_FILE``).

    >>> read_only_engine("sqlite://")
    Traceback (most recent call last):
    ...
    dashboard.store.ReleaseStoreError: the release store must be a SQLite file path, got 'sqlite://'
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = parsed.database or ""
        if not path or path == ":memory:" or path.startswith("file:"):
            raise ReleaseStoreError(f"the release store must be a SQLite file path, got {url!r}")
        resolved = Path(path).resolve()
        engine = create_engine(
            "sqlite+pysqlite://", creator=lambda: _open_read_only(resolved), poolclass=NullPool
        )
        event.listen(engine, "connect", _query_only)
        return engine
    if backend == "postgresql":
        if password is not None:
            parsed = parsed.set(password=password)
        return create_engine(
            parsed, connect_args={"options": "-c default_transaction_read_only=on"}
        )
    raise ReleaseStoreError(f"the release store must be SQLite or PostgreSQL, not {backend}")


def write_privileges(
    connection: Connection, *, role: str | None = None, schema: str = "public"
) -> list[str]:
    """What a PostgreSQL role (default: the connection's) could change in the release store.

    Empty for a role made by ``moodfed dashboard create-readonly-role``. Lists superuser,
    each table privilege beyond SELECT on a release table, and CREATE in the schema.
    """
    who = role or str(connection.execute(text("SELECT current_user")).scalar())
    found: list[str] = []
    if connection.execute(
        text("SELECT rolsuper FROM pg_roles WHERE rolname = :role"), {"role": who}
    ).scalar():
        found.append("superuser")
    for table in RELEASE_TABLES:
        qualified = f"{schema}.{table}"
        if connection.execute(text("SELECT to_regclass(:t)"), {"t": qualified}).scalar() is None:
            continue
        for privilege in _TABLE_WRITES:
            if connection.execute(
                text("SELECT has_table_privilege(:role, :t, :p)"),
                {"role": who, "t": qualified, "p": privilege},
            ).scalar():
                found.append(f"{privilege} on {table}")
    if connection.execute(
        text("SELECT has_schema_privilege(:role, :s, 'CREATE')"), {"role": who, "s": schema}
    ).scalar():
        found.append(f"CREATE in schema {schema}")
    return found


class ReleaseView:
    """Everything the pages read, as DataFrames; empty frames when nothing is published."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write_privileges(self) -> list[str]:
        """What the store's PostgreSQL role could change (see :func:`write_privileges`);
        always empty for SQLite, which is opened read-only."""
        if self.engine.dialect.name != "postgresql":
            return []
        try:
            with self.engine.connect() as connection:
                return write_privileges(connection)
        except Exception as error:
            raise ReleaseStoreError(f"cannot read the release store: {error}") from error

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
