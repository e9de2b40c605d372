"""The ledger's bulk SQL: one statement per step of a batch, whatever the batch's size.

On PostgreSQL a list of keys travels as one array parameter (``= ANY(:keys)``) and rows
as one array per column (``INSERT ... SELECT * FROM unnest(...)``): the statement text
is the same for every batch, so psycopg prepares it once, and the server parses eight
parameters instead of 8 x 512. (With ``IN (512 parameters)`` the server re-planned a new
statement per batch size, and a generic plan made while the table was small scanned it
whole: about 2 s a batch while seeding.) On SQLite, ``IN`` lists and ``executemany``
run in the library's C loop, which is already the fast path there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.types import String

from consent.store import ENTRIES_TABLE, STATES_TABLE

__all__ = [
    "ENTRY_COLUMNS",
    "STATE_COLUMNS",
    "StateRow",
    "changed_states",
    "device_history",
    "insert_entries",
    "is_postgres",
    "read_states",
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
_PG_TYPES = {
    "index": "integer[]",
    "leaf": "bytea[]",
    "leaf_hash": "bytea[]",
    "issued_epoch": "double precision[]",
    "expires_epoch": "double precision[]",
}

StateRow = tuple[str, str, str, float | None]
"""``(device_key, purpose, action, expires_epoch)``: what eligibility needs of a state."""


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _unnest(columns: Sequence[str]) -> str:
    """One array parameter per column (the names are this module's constants)."""
    arrays = ", ".join(f"CAST(:{c} AS {_PG_TYPES.get(c, 'varchar[]')})" for c in columns)
    return f"SELECT * FROM unnest({arrays})"  # noqa: S608  # constant column names only


def _quoted(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


_PG_INSERT_ENTRIES = text(
    f"INSERT INTO log_entries ({_quoted(ENTRY_COLUMNS)}) {_unnest(ENTRY_COLUMNS)}"
)
_PG_UPSERT_STATES = text(
    f"INSERT INTO consent_states ({_quoted(STATE_COLUMNS)}) {_unnest(STATE_COLUMNS)} "
    'ON CONFLICT ("device_key", "purpose") DO UPDATE SET '
    + ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in STATE_COLUMNS[2:])
)
_KEYS = bindparam("keys", type_=ARRAY(String))
_PG_HISTORY = text(
    'SELECT "device_key", "nonce", NULL, NULL FROM log_entries '
    'WHERE "device_key" = ANY(:keys) AND "nonce" = ANY(:nonces) '
    "UNION ALL "
    'SELECT "device_key", NULL, "purpose", "issued_epoch" FROM consent_states '
    'WHERE "device_key" = ANY(:keys)'
).bindparams(_KEYS, bindparam("nonces", type_=ARRAY(String)))
_SQLITE_NONCES = text(
    'SELECT "device_key", "nonce" FROM log_entries WHERE "device_key" IN :keys'
).bindparams(bindparam("keys", expanding=True))
_SQLITE_LATEST = text(
    'SELECT "device_key", "purpose", "issued_epoch" FROM consent_states WHERE "device_key" IN :keys'
).bindparams(bindparam("keys", expanding=True))
_CHANGED = text(
    'SELECT s."device_key", s."purpose", s."action", s."expires_epoch" '
    "FROM log_entries e JOIN consent_states s "
    'ON s."device_key" = e."device_key" AND s."purpose" = e."purpose" '
    'WHERE e."index" >= :start AND e."index" < :end'
)
_ALL_STATES = text('SELECT "device_key", "purpose", "action", "expires_epoch" FROM consent_states')


def device_history(
    session: Session, devices: Sequence[str], nonces: Sequence[str]
) -> tuple[set[tuple[str, str]], list[tuple[str, str, float]]]:
    """The ``(device_key, nonce)`` pairs already logged for these devices (a superset of
    the ones asked about, on SQLite), and their ``(device_key, purpose, issued_epoch)``."""
    if is_postgres(session):
        used: set[tuple[str, str]] = set()
        latest: list[tuple[str, str, float]] = []
        for key, nonce, purpose, issued in session.execute(
            _PG_HISTORY, {"keys": list(devices), "nonces": list(nonces)}
        ):
            if nonce is not None:
                used.add((key, nonce))
            else:
                latest.append((key, purpose, issued))
        return used, latest
    # By the indexed device_key, then filtered by the caller: a row-value IN over
    # (device_key, nonce) made SQLite scan the whole log on every batch.
    used = {(key, nonce) for key, nonce in session.execute(_SQLITE_NONCES, {"keys": devices})}
    latest = [
        (key, purpose, issued)
        for key, purpose, issued in session.execute(_SQLITE_LATEST, {"keys": devices})
    ]
    return used, latest


def insert_entries(session: Session, rows: list[tuple[Any, ...]]) -> None:
    """Insert log entries, each a tuple in :data:`ENTRY_COLUMNS` order."""
    if is_postgres(session):
        session.execute(_PG_INSERT_ENTRIES, _columns(ENTRY_COLUMNS, rows))
    else:
        named = [dict(zip(ENTRY_COLUMNS, row, strict=True)) for row in rows]
        session.execute(ENTRIES_TABLE.insert(), named)


def upsert_states(session: Session, rows: Iterable[tuple[Any, ...]]) -> None:
    """Insert or replace the latest state per (device_key, purpose), rows in
    :data:`STATE_COLUMNS` order with no two for the same pair."""
    rows = list(rows)
    if is_postgres(session):
        session.execute(_PG_UPSERT_STATES, _columns(STATE_COLUMNS, rows))
        return
    statement = sqlite_insert(STATES_TABLE)
    statement = statement.on_conflict_do_update(
        index_elements=["device_key", "purpose"],
        set_={c: statement.excluded[c] for c in STATE_COLUMNS[2:]},
    )
    session.execute(statement, [dict(zip(STATE_COLUMNS, r, strict=True)) for r in rows])


def changed_states(session: Session, start: int, end: int) -> list[StateRow]:
    """The current state of every (device, purpose) with an entry in ``[start, end)``."""
    rows = session.execute(_CHANGED, {"start": start, "end": end})
    return [(key, purpose, action, expires) for key, purpose, action, expires in rows]


def read_states(session: Session) -> list[StateRow]:
    """Every (device, purpose)'s current state."""
    rows = session.execute(_ALL_STATES)
    return [(key, purpose, action, expires) for key, purpose, action, expires in rows]


def _columns(names: Sequence[str], rows: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
    return {name: list(values) for name, values in zip(names, zip(*rows, strict=True), strict=True)}
