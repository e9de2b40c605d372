"""The ledger's SQL tables (SQLModel), engines and schema migrations.

SQLite (WAL, ``synchronous=FULL``: a commit is on disk before it is acknowledged)
by default; PostgreSQL by URL. Writers serialise on the single ``log_head`` row
(``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), which is
what gives appends from many processes consecutive indices with no gap.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Engine, LargeBinary, UniqueConstraint, event
from sqlalchemy import create_engine as sa_create_engine
from sqlmodel import Field, SQLModel

__all__ = [
    "ConsentState",
    "LogCheckpoint",
    "LogEntry",
    "LogHead",
    "WriterLock",
    "create_engine",
    "migrate",
]


class LogEntry(SQLModel, table=True):
    """One leaf: the signed record exactly as hashed, plus indexed copies of its fields."""

    __tablename__ = "log_entries"
    __table_args__ = (UniqueConstraint("device_key", "nonce", name="uq_log_entries_nonce"),)

    index: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    # Looked up through the (device_key, nonce) unique index: no index of its own
    # (migration 0002 dropped it: one index fewer to update per append).
    device_key: str = Field(max_length=64)
    purpose: str = Field(max_length=64)
    action: str = Field(max_length=16)
    nonce: str = Field(max_length=96)
    issued_at: str = Field(max_length=40)
    leaf: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    leaf_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ConsentState(SQLModel, table=True):
    """The latest record per (device key, purpose), so lookups never scan the log."""

    __tablename__ = "consent_states"

    device_key: str = Field(primary_key=True, max_length=64)
    purpose: str = Field(primary_key=True, max_length=64)
    action: str = Field(max_length=16)
    issued_at: str = Field(max_length=40)
    issued_epoch: float
    expires_at: str | None = Field(default=None, max_length=40)
    expires_epoch: float | None = None
    policy_version: str = Field(max_length=32)
    index: int


class LogCheckpoint(SQLModel, table=True):
    """Every checkpoint the log ever signed, so the audit can check each against the latest."""

    __tablename__ = "log_checkpoints"

    size: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    root_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    note: str


class LogHead(SQLModel, table=True):
    """The single row writers lock: the log's size and the latest signed checkpoint."""

    __tablename__ = "log_head"

    id: int = Field(default=1, primary_key=True)
    size: int = 0
    note: str = ""


def create_engine(url: str, *, immediate: bool = False, **kwargs: Any) -> Engine:
    """An engine with the pragmas durability needs; ``immediate`` for SQLite writers."""
    if not url.startswith("sqlite"):
        # Every execution planned for its own parameters. psycopg prepares a statement
        # after five runs, and the generic plan PostgreSQL then caches for the connection
        # was made from the table's statistics at that moment: prepared while a ledger was
        # still small, `device_key = ANY(%s)` kept a sequential scan as the table grew
        # (0.3 s a batch at 67,000 states, against 3 ms by the index). Planning these
        # statements costs well under a millisecond, against 0.3 s.
        connect_args = {"options": "-c plan_cache_mode=force_custom_plan"}
        connect_args.update(kwargs.pop("connect_args", {}))
        return sa_create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa_create_engine(url, connect_args={"check_same_thread": False}, **kwargs)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class WriterLock:
    """Serialises the ledger's writers across processes on one SQLite file.

    ``BEGIN IMMEDIATE`` alone does serialise them, but a writer that finds the database
    locked sleeps in SQLite's busy handler (1, 2, 5, 10 ... ms) instead of waking when
    the lock is free: with several worker processes most of the time went to those
    sleeps. An exclusive ``flock`` on a file beside the database is handed over at once
    (the kernel wakes the next waiter), and ``BEGIN IMMEDIATE`` stays as the guarantee.
    On PostgreSQL (``SELECT ... FOR UPDATE`` on the head row wakes waiters at commit)
    and for in-memory databases it does nothing.
    """

    def __init__(self, url: str) -> None:
        self.path: Path | None = None
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            self.path = Path(url.removeprefix("sqlite:///").split("?", 1)[0] + ".writer-lock")
        self._fd: int | None = None
        self._opened = threading.Lock()

    def _descriptor(self) -> int:
        with self._opened:
            if self._fd is None:
                assert self.path is not None
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            return self._fd

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock (blocking, the GIL released while waiting) for a transaction.

        One thread per process writes at a time (the ledger's own lock), so one open
        descriptor per process serves every write.
        """
        if self.path is None:
            yield
            return
        fd = self._descriptor()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._opened:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def migrate(url: str) -> None:
    """Bring the schema to the newest Alembic revision (idempotent)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["database_url"] = url
    command.upgrade(config, "head")
