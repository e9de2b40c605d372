"""The witness's own small store: the latest checkpoint it cosigned, one row per log.

Its own SQLAlchemy metadata (one table, created on start; nothing to migrate yet), on
SQLite by default or PostgreSQL by URL, with the ledger's durable engine settings. The
check of the old size and the write of the new checkpoint are one compare-and-swap (an
``UPDATE ... WHERE size = old AND root_hash = old root``, or an ``INSERT`` for a log never
cosigned), so two concurrent requests can never roll the witness's view back.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, LargeBinary, MetaData, Table, Text, select, update
from sqlalchemy.exc import IntegrityError

from consent.store import create_engine

__all__ = ["WITNESS_METADATA", "StoredCheckpoint", "WitnessStore"]

WITNESS_METADATA = MetaData()

_CHECKPOINTS = Table(
    "witness_checkpoints",
    WITNESS_METADATA,
    Column("origin", Text, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary, nullable=False),
    Column("note", Text, nullable=False),  # the log's signatures and this witness's cosignature
    Column("cosigned_at", BigInteger, nullable=False),
)


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """The latest checkpoint the witness cosigned for one log."""

    origin: str
    size: int
    root_hash: bytes
    note: str
    cosigned_at: int


class WitnessStore:
    """The witness's state over one database (safe from several threads)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        WITNESS_METADATA.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def latest(self, origin: str) -> StoredCheckpoint | None:
        """The latest checkpoint cosigned for ``origin``, or None if there is none yet."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(_CHECKPOINTS).where(_CHECKPOINTS.c.origin == origin)
            ).one_or_none()
        if row is None:
            return None
        return StoredCheckpoint(
            origin=row.origin,
            size=row.size,
            root_hash=bytes(row.root_hash),
            note=row.note,
            cosigned_at=row.cosigned_at,
        )

    def replace(self, *, expected: StoredCheckpoint | None, new: StoredCheckpoint) -> bool:
        """Store ``new`` if the log's row is still ``expected``; False if another request won."""
        values = {
            "size": new.size,
            "root_hash": new.root_hash,
            "note": new.note,
            "cosigned_at": new.cosigned_at,
        }
        try:
            with self.engine.begin() as connection:
                if expected is None:
                    connection.execute(_CHECKPOINTS.insert().values(origin=new.origin, **values))
                    return True
                result = connection.execute(
                    update(_CHECKPOINTS)
                    .where(
                        _CHECKPOINTS.c.origin == expected.origin,
                        _CHECKPOINTS.c.size == expected.size,
                        _CHECKPOINTS.c.root_hash == expected.root_hash,
                    )
                    .values(**values)
                )
                return result.rowcount == 1
        except IntegrityError:  # another request cosigned this log's first checkpoint first
            return False
