"""The ledger's SQL, one statement per step of a batch whatever the batch's size.

Statements go to the driver as written (``exec_driver_sql``): the write path runs
eight statements a batch, and the ORM's per-statement work (compiling, caching, row
objects) cost more CPU than the rows themselves. On PostgreSQL a list of keys travels
as one array parameter (``= ANY(%s)``, or ``unnest`` joined to the table for exact
pairs), states as one array per column (``INSERT ... SELECT * FROM unnest(...)``) and
log entries by ``COPY`` (a third of the time of the same ``INSERT`` for 512 entries):
the statement text is the same for every batch, and the server parses a few parameters
instead of 9 x 512. (With ``IN (512 parameters)`` the server planned a new statement per
batch size, and a generic plan made while the table was small scanned it whole: about
2 s a batch while seeding; see :func:`consent.store.create_engine`.) On SQLite, ``IN``
lists and ``executemany`` run in the library's C loop, which is already the fast path
there.
"""

# ruff: noqa: S608
# (S608: the SQL text is built from this module's constant column names and placeholders
# only; every value travels as a driver parameter.)

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

__all__ = [
    "ENTRY_COLUMNS",
    "STATE_COLUMNS",
    "StateRow",
    "changed_states",
    "device_history",
    "head",
    "insert_checkpoint",
    "insert_entries",
    "leaf_hashes",
    "read_states",
    "root_at",
    "set_head",
    "upsert_states",
]

ENTRY_COLUMNS = (
    "index",
    "device_key",
    "purpose",
    "action",
    "nonce",
    "issued_at",
    "leaf",
    "leaf_hash",
)
STATE_COLUMNS = (
    "device_key",
    "purpose",
    "action",
    "issued_at",
    "issued_epoch",
    "expires_at",
    "expires_epoch",
    "policy_version",
    "index",
)
# The array types of the state columns that are not text, for ``unnest`` on PostgreSQL.
_PG_ARRAYS = {
    "index": "integer[]",
    "issued_epoch": "double precision[]",
    "expires_epoch": "double precision[]",
}

StateRow = tuple[str, str, str, float | None]
"""``(device_key, purpose, action, expires_epoch)``: what eligibility needs of a state."""


def _names(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _updates(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}" = excluded."{c}"' for c in columns)


@dataclass(frozen=True, slots=True)
class _Sql:
    """One dialect's statements (the column names are this module's constants)."""

    head: str
    head_for_update: str
    set_head: str
    insert_checkpoint: str
    insert_entries: str
    upsert_states: str
    leaf_hashes: str
    root_at: str
    changed: str
    all_states: str


def _sql(placeholder: str, *, postgres: bool) -> _Sql:
    p = placeholder
    if postgres:
        # COPY: a third of the INSERT ... unnest's time for a batch of 512 entries.
        insert_entries = f"COPY log_entries ({_names(ENTRY_COLUMNS)}) FROM STDIN"
        arrays = ", ".join(f"{p}::{_PG_ARRAYS.get(c, 'varchar[]')}" for c in STATE_COLUMNS)
        upsert_source = f"SELECT * FROM unnest({arrays})"
    else:
        insert_entries = (
            f"INSERT INTO log_entries ({_names(ENTRY_COLUMNS)}) "
            f"VALUES ({', '.join([p] * len(ENTRY_COLUMNS))})"
        )
        upsert_source = f"VALUES ({', '.join([p] * len(STATE_COLUMNS))})"
    return _Sql(
        head="SELECT size FROM log_head WHERE id = 1",
        head_for_update="SELECT size FROM log_head WHERE id = 1"
        + (" FOR UPDATE" if postgres else ""),
        set_head=f"UPDATE log_head SET size = {p}, note = {p} WHERE id = 1",
        insert_checkpoint="INSERT INTO log_checkpoints (size, root_hash, note) "
        f"VALUES ({p}, {p}, {p})",
        insert_entries=insert_entries,
        upsert_states=f"INSERT INTO consent_states ({_names(STATE_COLUMNS)}) {upsert_source} "
        f'ON CONFLICT ("device_key", "purpose") DO UPDATE SET {_updates(STATE_COLUMNS[2:])}',
        leaf_hashes=f'SELECT leaf_hash FROM log_entries WHERE "index" >= {p} AND "index" < {p} '
        'ORDER BY "index"',
        root_at=f"SELECT root_hash FROM log_checkpoints WHERE size = {p}",
        changed='SELECT s."device_key", s."purpose", s."action", s."expires_epoch" '
        "FROM log_entries e JOIN consent_states s "
        'ON s."device_key" = e."device_key" AND s."purpose" = e."purpose" '
        f'WHERE e."index" >= {p} AND e."index" < {p}',
        all_states='SELECT "device_key", "purpose", "action", "expires_epoch" FROM consent_states',
    )


_SQLITE = _sql("?", postgres=False)
_POSTGRES = _sql("%s", postgres=True)


def _for(connection: Connection) -> _Sql:
    return _POSTGRES if connection.dialect.name == "postgresql" else _SQLITE


def _is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def head(connection: Connection, *, lock: bool = False) -> int:
    """The log's size; ``lock``: the row writers serialise on (FOR UPDATE on PostgreSQL;
    SQLite's writers hold the database's write lock from BEGIN IMMEDIATE on)."""
    sql = _for(connection)
    size: int = connection.exec_driver_sql(sql.head_for_update if lock else sql.head).scalar_one()
    return size


def set_head(connection: Connection, size: int, note: str) -> None:
    connection.exec_driver_sql(_for(connection).set_head, (size, note))


def insert_checkpoint(connection: Connection, size: int, root_hash: bytes, note: str) -> None:
    connection.exec_driver_sql(_for(connection).insert_checkpoint, (size, root_hash, note))


def device_history(
    connection: Connection, pairs: Sequence[tuple[str, str]]
) -> tuple[set[tuple[str, str]], list[tuple[str, str, float]]]:
    """Of these ``(device_key, nonce)`` pairs: those already logged (a superset of them
    may be returned), and the ``(device_key, purpose, issued_epoch)`` of the devices'
    states."""
    devices = sorted({key for key, _ in pairs})
    if _is_postgres(connection):
        used = {
            (key, nonce)
            for key, nonce in connection.exec_driver_sql(
                'SELECT e."device_key", e."nonce" FROM unnest(%s::varchar[], %s::varchar[]) '
                'AS q("device_key", "nonce") JOIN log_entries e '
                'ON e."device_key" = q."device_key" AND e."nonce" = q."nonce"',
                ([key for key, _ in pairs], [nonce for _, nonce in pairs]),
            )
        }
        rows = connection.exec_driver_sql(
            'SELECT "device_key", "purpose", "issued_epoch" FROM consent_states '
            'WHERE "device_key" = ANY(%s)',
            (devices,),
        )
    else:
        # By device_key (the unique index's first column), filtered by the caller: a
        # row-value IN over (device_key, nonce) made SQLite scan the whole log.
        marks = ", ".join("?" * len(devices))
        used = {
            (key, nonce)
            for key, nonce in connection.exec_driver_sql(
                f'SELECT "device_key", "nonce" FROM log_entries WHERE "device_key" IN ({marks})',
                tuple(devices),
            )
        }
        rows = connection.exec_driver_sql(
            'SELECT "device_key", "purpose", "issued_epoch" FROM consent_states '
            f'WHERE "device_key" IN ({marks})',  # placeholders only
            tuple(devices),
        )
    return used, [(key, purpose, issued) for key, purpose, issued in rows]


def insert_entries(connection: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert log entries, each a tuple in :data:`ENTRY_COLUMNS` order."""
    sql = _for(connection)
    if _is_postgres(connection):
        # The same transaction: psycopg's connection under SQLAlchemy's.
        driver = connection.connection.driver_connection
        assert driver is not None  # a checked-out connection always has one
        with driver.cursor() as cursor, cursor.copy(sql.insert_entries) as copy:
            for row in rows:
                copy.write_row(row)
    else:
        connection.exec_driver_sql(sql.insert_entries, rows)


def upsert_states(connection: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert or replace the latest state per (device_key, purpose), rows in
    :data:`STATE_COLUMNS` order with no two for the same pair."""
    sql = _for(connection)
    if _is_postgres(connection):
        connection.exec_driver_sql(sql.upsert_states, _columns(rows))
    else:
        connection.exec_driver_sql(sql.upsert_states, rows)


def root_at(connection: Connection, size: int) -> bytes | None:
    """The root hash the log signed at ``size`` (None if it signed no checkpoint there)."""
    root = connection.exec_driver_sql(_for(connection).root_at, (size,)).scalar_one_or_none()
    return None if root is None else bytes(root)


def leaf_hashes(connection: Connection, start: int, end: int) -> list[bytes]:
    """The leaf hashes of entries ``start`` to ``end`` (exclusive), in order."""
    result = connection.exec_driver_sql(_for(connection).leaf_hashes, (start, end))
    return [bytes(leaf_hash) for (leaf_hash,) in result]


def changed_states(connection: Connection, start: int, end: int) -> list[StateRow]:
    """The current state of every (device, purpose) with an entry in ``[start, end)``."""
    rows = connection.exec_driver_sql(_for(connection).changed, (start, end))
    return [(key, purpose, action, expires) for key, purpose, action, expires in rows]


def read_states(connection: Connection) -> list[StateRow]:
    """Every (device, purpose)'s current state."""
    rows = connection.exec_driver_sql(_for(connection).all_states)
    return [(key, purpose, action, expires) for key, purpose, action, expires in rows]


def _columns(rows: list[tuple[Any, ...]]) -> tuple[list[Any], ...]:
    """Rows as one list per column: the arrays ``unnest`` turns back into rows."""
    return tuple(list(column) for column in zip(*rows, strict=True))
