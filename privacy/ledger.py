"""SQL storage of privacy charges: an audit log per release and a compact spend per user.

Schema. ``privacy_charge`` has one row per (user, purpose, release); its ``variance``,
``l1_sensitivity`` and ``l2_sensitivity`` columns are NULL for a central Gaussian event
and hold the lattice parameters of a distributed Skellam event (:class:`SampledSkellam`).
The spend, counts per user and distinct mechanism, is split by kind: ``privacy_spend``
keyed (user_id, sampling_rate, noise_multiplier) for Gaussian events, exactly as before,
and ``privacy_skellam_spend`` keyed by the user and every field of the Skellam key. (One
table cannot hold both: the Gaussian primary key would make a Skellam event with the same
(q, sigma) collide with it, and SQLite cannot change a primary key in place.) Databases
made before the Skellam columns existed are brought up to date by :func:`create_tables`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Select,
    Table,
    UniqueConstraint,
    func,
    inspect,
    null,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import registry
from sqlalchemy.schema import CreateColumn
from sqlmodel import Field, SQLModel

from privacy.accounting import MechanismKey, PrivacyEvent, SampledGaussian, SampledSkellam
from privacy.errors import PrivacyError

__all__ = [
    "Histories",
    "PrivacyCharge",
    "PrivacySkellamSpend",
    "PrivacySpend",
    "already_charged",
    "create_tables",
    "load_all_histories",
    "load_histories",
    "load_histories_by_purpose",
    "load_purpose_histories",
    "metadata",
    "record_charge",
]

# Tables of their own, apart from SQLModel.metadata, so the privacy schema can be
# created, migrated and inspected on its own (Alembic can take several metadatas).
_registry = registry()


class _PrivacyModel(SQLModel, registry=_registry):
    pass


metadata = _PrivacyModel.metadata
"""The MetaData holding the privacy tables (for ``create_all`` or Alembic)."""

_CHUNK = 500  # bound parameters per IN (...) query, well under every backend's limit


class PrivacyCharge(_PrivacyModel, table=True):
    """One event charged to one user: the audit trail of who paid for what."""

    __tablename__ = "privacy_charge"
    __table_args__ = (
        UniqueConstraint("user_id", "purpose", "release_id", name="uq_privacy_charge_release"),
        Index("ix_privacy_charge_purpose_release", "purpose", "release_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=256)
    purpose: str = Field(max_length=64)
    release_id: str = Field(max_length=256)
    kind: str = Field(max_length=16)
    sampling_rate: float
    noise_multiplier: float
    count: int
    charged_at: datetime
    # NULL for a Gaussian event; the SampledSkellam key's lattice fields otherwise.
    variance: float | None = Field(default=None)
    l1_sensitivity: float | None = Field(default=None)
    l2_sensitivity: float | None = Field(default=None)


class PrivacySpend(_PrivacyModel, table=True):
    """Per user, how many times each distinct Gaussian (q, sigma) was charged."""

    __tablename__ = "privacy_spend"

    user_id: str = Field(primary_key=True, max_length=256)
    sampling_rate: float = Field(primary_key=True)
    noise_multiplier: float = Field(primary_key=True)
    count: int


class PrivacySkellamSpend(_PrivacyModel, table=True):
    """Per user, how many times each distinct distributed Skellam mechanism was charged."""

    __tablename__ = "privacy_skellam_spend"

    user_id: str = Field(primary_key=True, max_length=256)
    sampling_rate: float = Field(primary_key=True)
    noise_multiplier: float = Field(primary_key=True)
    variance: float = Field(primary_key=True)
    l1_sensitivity: float = Field(primary_key=True)
    l2_sensitivity: float = Field(primary_key=True)
    count: int


_charge: Table = metadata.tables[PrivacyCharge.__tablename__]
_spend: Table = metadata.tables[PrivacySpend.__tablename__]
_skellam_spend: Table = metadata.tables[PrivacySkellamSpend.__tablename__]
_LATTICE = ("variance", "l1_sensitivity", "l2_sensitivity")

log = logging.getLogger(__name__)

Histories = dict[str, dict[MechanismKey, int]]

# Each failed attempt means a concurrent creator won the race for a table or a column,
# so one attempt per table and column, plus one, always suffices.
_SCHEMA_ATTEMPTS = 1 + sum(1 + len(table.columns) for table in metadata.tables.values())


def create_tables(engine: Engine) -> None:
    """Create the privacy tables and add the columns missing from older databases.

    Idempotent and safe to run from several processes at once: a statement that loses a
    race to a concurrent creator fails, and the next attempt finds its table or column.
    (Until the project's migrations own the schema.)
    """
    for attempt in range(1, _SCHEMA_ATTEMPTS + 1):
        try:
            metadata.create_all(engine)
            _add_missing_columns(engine)
            return
        except DBAPIError:
            if attempt == _SCHEMA_ATTEMPTS:
                raise
            log.info("Privacy schema changed concurrently; checking it again")


def _add_missing_columns(engine: Engine) -> None:
    """ALTER TABLE ... ADD COLUMN for each nullable column a table was created without.

    Every table is checked before anything changes: a table lacking a required column
    (which cannot be added in place) raises :class:`PrivacyError` and alters nothing.
    """
    with engine.begin() as connection:
        inspector = inspect(connection)
        missing: list[tuple[Table, Column[Any]]] = []
        for table in metadata.sorted_tables:
            present = {column["name"] for column in inspector.get_columns(table.name)}
            missing.extend(
                (table, column) for column in table.columns if column.name not in present
            )
        required = [f"{table.name}.{col.name}" for table, col in missing if not col.nullable]
        if required:
            raise PrivacyError(
                f"the privacy tables lack required column(s) {', '.join(required)}, which "
                "cannot be added in place: migrate the database"
            )
        preparer = connection.dialect.identifier_preparer
        for table, column in missing:
            definition = CreateColumn(column).compile(dialect=connection.dialect)
            log.info("Adding column %s to %s", column.name, table.name)
            connection.exec_driver_sql(
                f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {definition}"
            )


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def already_charged(
    connection: Connection, user_ids: Sequence[str], *, purpose: str, release_id: str
) -> list[str]:
    """Those of ``user_ids`` already charged for this release."""
    found: list[str] = []
    for chunk in _chunks(user_ids):
        query = select(_charge.c.user_id).where(
            _charge.c.purpose == purpose,
            _charge.c.release_id == release_id,
            _charge.c.user_id.in_(chunk),
        )
        found.extend(connection.scalars(query))
    return found


def record_charge(
    connection: Connection,
    user_ids: Sequence[str],
    event: PrivacyEvent,
    *,
    purpose: str,
    release_id: str,
) -> None:
    """Append the audit rows and add ``event`` to each user's spend, in the caller's
    transaction. The spend is an upsert so concurrent writers add up, never overwrite;
    rows are written in user order, so concurrent writers lock them in the same order."""
    if not user_ids:
        return
    now = datetime.now(UTC)
    key = event.mechanism
    lattice = {
        name: getattr(key, name) if isinstance(key, SampledSkellam) else None for name in _LATTICE
    }
    connection.execute(
        _charge.insert(),
        [
            {
                "user_id": user_id,
                "purpose": purpose,
                "release_id": release_id,
                "kind": event.kind,
                "sampling_rate": event.sampling_rate,
                "noise_multiplier": event.noise_multiplier,
                "count": event.count,
                "charged_at": now,
                **lattice,
            }
            for user_id in user_ids
        ],
    )
    table = _skellam_spend if isinstance(key, SampledSkellam) else _spend
    dialect = connection.dialect.name
    insert: sqlite.Insert | postgresql.Insert
    if dialect == "sqlite":
        insert = sqlite.insert(table)
    elif dialect == "postgresql":
        insert = postgresql.insert(table)
    else:
        raise NotImplementedError(f"privacy ledger supports SQLite and PostgreSQL, not {dialect}")
    upsert = insert.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={"count": table.c.count + insert.excluded.count},
    )
    fields = key._asdict()
    connection.execute(
        upsert,
        [{"user_id": user_id, **fields, "count": event.count} for user_id in sorted(user_ids)],
    )


def _collect(rows: Iterable[Sequence[Any]], histories: Histories) -> Histories:
    # Each row: owner (user or purpose), q, sigma, variance, L1, L2 (NULL: Gaussian), count.
    for owner, sampling_rate, noise_multiplier, variance, l1, l2, count in rows:
        key: MechanismKey
        if variance is None or l1 is None or l2 is None:
            key = SampledGaussian(sampling_rate, noise_multiplier)
        else:
            key = SampledSkellam(sampling_rate, noise_multiplier, variance, l1, l2)
        histories[owner][key] += count
    return histories


def _new_histories() -> Histories:
    return defaultdict(lambda: defaultdict(int))


def _spend_queries() -> list[tuple[Table, Select[Any]]]:
    """Each spend table with a query of its rows in the shape ``_collect`` reads (NULL
    lattice fields for the Gaussian table)."""
    absent = null().cast(Float)
    gaussian = select(
        _spend.c.user_id,
        _spend.c.sampling_rate,
        _spend.c.noise_multiplier,
        absent,
        absent,
        absent,
        _spend.c.count,
    )
    skellam = select(
        _skellam_spend.c.user_id,
        _skellam_spend.c.sampling_rate,
        _skellam_spend.c.noise_multiplier,
        *(_skellam_spend.c[name] for name in _LATTICE),
        _skellam_spend.c.count,
    )
    return [(_spend, gaussian), (_skellam_spend, skellam)]


def load_histories(connection: Connection, user_ids: Sequence[str]) -> Histories:
    """The spend of each of ``user_ids`` (users never charged are absent)."""
    histories = _new_histories()
    for chunk in _chunks(user_ids):
        for table, query in _spend_queries():
            rows = connection.execute(query.where(table.c.user_id.in_(chunk)))
            _collect(rows, histories)
    return histories


def load_all_histories(connection: Connection) -> Histories:
    """The spend of every user ever charged."""
    histories = _new_histories()
    for _table, query in _spend_queries():
        _collect(connection.execute(query), histories)
    return histories


def _charge_totals(grouped_by: Any) -> Select[Any]:
    """Counts from the audit log summed per (``grouped_by``, mechanism) in the database."""
    lattice = [_charge.c[name] for name in _LATTICE]
    mechanism = [_charge.c.sampling_rate, _charge.c.noise_multiplier, *lattice]
    return select(grouped_by, *mechanism, func.sum(_charge.c.count)).group_by(
        grouped_by, *mechanism
    )


def load_histories_by_purpose(connection: Connection, user_id: str) -> Histories:
    """One user's charges regrouped per purpose, from the audit log."""
    query = _charge_totals(_charge.c.purpose).where(_charge.c.user_id == user_id)
    return _collect(connection.execute(query), _new_histories())


def load_purpose_histories(
    connection: Connection, purpose: str, user_ids: Sequence[str] | None = None
) -> Histories:
    """Each user's charges for ``purpose`` alone (every user when ``user_ids`` is None),
    from the audit log; users never charged for it are absent."""
    query = _charge_totals(_charge.c.user_id).where(_charge.c.purpose == purpose)
    histories = _new_histories()
    if user_ids is None:
        return _collect(connection.execute(query), histories)
    for chunk in _chunks(user_ids):
        _collect(connection.execute(query.where(_charge.c.user_id.in_(chunk))), histories)
    return histories
