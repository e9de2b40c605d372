"""SQL storage of privacy charges: an audit log per release and a compact spend per user."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, Index, Table, UniqueConstraint, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from privacy.accounting import PrivacyEvent, SampledGaussian

__all__ = [
    "Histories",
    "PrivacyCharge",
    "PrivacySpend",
    "already_charged",
    "create_tables",
    "load_all_histories",
    "load_histories",
    "load_histories_by_purpose",
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


class PrivacySpend(_PrivacyModel, table=True):
    """Per user, how many times each distinct (q, sigma) was charged: the history."""

    __tablename__ = "privacy_spend"

    user_id: str = Field(primary_key=True, max_length=256)
    sampling_rate: float = Field(primary_key=True)
    noise_multiplier: float = Field(primary_key=True)
    count: int


_charge: Table = metadata.tables[PrivacyCharge.__tablename__]
_spend: Table = metadata.tables[PrivacySpend.__tablename__]

Histories = dict[str, dict[SampledGaussian, int]]


def create_tables(engine: Engine) -> None:
    """Create the privacy tables if missing (until the project's migrations own them)."""
    metadata.create_all(engine)


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
    transaction. The spend is an upsert so concurrent writers add up, never overwrite."""
    if not user_ids:
        return
    now = datetime.now(UTC)
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
            }
            for user_id in user_ids
        ],
    )
    dialect = connection.dialect.name
    insert: sqlite.Insert | postgresql.Insert
    if dialect == "sqlite":
        insert = sqlite.insert(_spend)
    elif dialect == "postgresql":
        insert = postgresql.insert(_spend)
    else:
        raise NotImplementedError(f"privacy ledger supports SQLite and PostgreSQL, not {dialect}")
    upsert = insert.on_conflict_do_update(
        index_elements=[_spend.c.user_id, _spend.c.sampling_rate, _spend.c.noise_multiplier],
        set_={"count": _spend.c.count + insert.excluded.count},
    )
    connection.execute(
        upsert,
        [
            {
                "user_id": user_id,
                "sampling_rate": event.sampling_rate,
                "noise_multiplier": event.noise_multiplier,
                "count": event.count,
            }
            for user_id in user_ids
        ],
    )


def _collect(rows: Iterable[tuple[str, float, float, int]], histories: Histories) -> Histories:
    for user_id, sampling_rate, noise_multiplier, count in rows:
        histories[user_id][SampledGaussian(sampling_rate, noise_multiplier)] += count
    return histories


def load_histories(connection: Connection, user_ids: Sequence[str]) -> Histories:
    """The spend of each of ``user_ids`` (users never charged are absent)."""
    histories: Histories = defaultdict(lambda: defaultdict(int))
    columns = (_spend.c.user_id, _spend.c.sampling_rate, _spend.c.noise_multiplier, _spend.c.count)
    for chunk in _chunks(user_ids):
        _collect(connection.execute(select(*columns).where(_spend.c.user_id.in_(chunk))), histories)
    return histories


def load_all_histories(connection: Connection) -> Histories:
    """The spend of every user ever charged."""
    columns = (_spend.c.user_id, _spend.c.sampling_rate, _spend.c.noise_multiplier, _spend.c.count)
    return _collect(connection.execute(select(*columns)), defaultdict(lambda: defaultdict(int)))


def load_histories_by_purpose(connection: Connection, user_id: str) -> Histories:
    """One user's charges regrouped per purpose, from the audit log."""
    query = select(
        _charge.c.purpose, _charge.c.sampling_rate, _charge.c.noise_multiplier, _charge.c.count
    ).where(_charge.c.user_id == user_id)
    return _collect(connection.execute(query), defaultdict(lambda: defaultdict(int)))
