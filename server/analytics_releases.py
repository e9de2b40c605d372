"""Analytics releases in the release store: the tables, the writer and the dashboard's readers.

Two tables on the release store's own registry (:data:`server.releases.metadata`), next to
``release`` (each analytics figure is one ``release`` row of kind ``"analytics"``):

- ``analytics_release``: one query released for one period (an ISO week, named by its
  Monday): its noise, suppression threshold, its own (epsilon, delta), the epsilon of
  every analytics release so far for a user eligible in all of them, the per-user budget
  and the number of eligible devices (public, from the consent ledger).
- ``analytics_cell``: one figure of that release: its labels (level, age band, region or
  sleep bin), the noisy value with its standard deviation, the noisy count, and whether
  it was suppressed. A suppressed cell has no value, no std and no count: nothing of it
  is published but the fact that it was suppressed.

This module imports nothing from ``client_sdk`` so the dashboard can use its readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Engine, UniqueConstraint, select
from sqlmodel import Column, Field, Session, Text

from server.releases import ModelRound, Release, ReleaseStore, TrainingRun, _ReleaseModel, metadata

__all__ = [
    "ANALYTICS_KIND",
    "AnalyticsCell",
    "AnalyticsRelease",
    "CellRelease",
    "QueryRelease",
    "analytics_cells",
    "analytics_releases",
    "create_tables",
    "model_rounds",
    "record_analytics_round",
    "releases",
    "training_runs",
]

ANALYTICS_KIND = "analytics"


class AnalyticsRelease(_ReleaseModel, table=True):
    """One query released for one period."""

    __tablename__ = "analytics_release"
    __table_args__ = (UniqueConstraint("query", "period", name="uq_analytics_release_period"),)

    release_id: int = Field(primary_key=True, foreign_key="release.id")
    query: str = Field(max_length=64, index=True)
    title: str = Field(default="", sa_column=Column(Text))
    statistic: str = Field(max_length=16)  # "share" | "mean"
    unit: str = Field(default="", max_length=64)
    period: date = Field(index=True)
    round_id: str = Field(max_length=256)  # the accountant's release id of the whole round
    noise_multiplier: float
    sensitivity: float
    noise_std: float  # of every noisy sum and count of this release
    threshold: float  # a cell is released only if its noisy count is at least this
    min_contributors: int  # k: fewer true contributors than this -> released w.p. <= bound
    false_release_bound: float
    epsilon: float  # this release alone, at delta
    delta: float
    round_epsilon: float  # every query of this period's round together
    purpose_epsilon: float  # every analytics release so far, for a user eligible in all
    epsilon_budget: float
    n_eligible: int


class AnalyticsCell(_ReleaseModel, table=True):
    """One figure of an analytics release; suppressed cells carry no numbers."""

    __tablename__ = "analytics_cell"

    id: int | None = Field(default=None, primary_key=True)
    release_id: int = Field(foreign_key="analytics_release.release_id", index=True)
    cell: str = Field(max_length=128)
    level: str | None = Field(default=None, max_length=16)
    age_band: str | None = Field(default=None, max_length=32)
    region: str | None = Field(default=None, max_length=64)
    sleep_bin: str | None = Field(default=None, max_length=16)
    value: float | None = None
    value_std: float | None = None
    noisy_sum: float | None = None
    noisy_count: float | None = None
    suppressed: bool = False
    derived: bool = False  # computed from this release's other cells: no extra privacy cost


@dataclass(frozen=True, slots=True)
class CellRelease:
    """One figure as computed by the server, before it is stored."""

    cell: str
    labels: dict[str, str]
    value: float | None
    value_std: float | None
    noisy_sum: float | None
    noisy_count: float | None
    suppressed: bool
    derived: bool = False


@dataclass(frozen=True, slots=True)
class QueryRelease:
    """One query's release for one period, with everything a reader needs to judge it."""

    query: str
    title: str
    statistic: str
    unit: str
    period: date
    round_id: str
    noise_multiplier: float
    sensitivity: float
    noise_std: float
    threshold: float
    min_contributors: int
    false_release_bound: float
    epsilon: float
    delta: float
    round_epsilon: float
    purpose_epsilon: float
    epsilon_budget: float
    n_eligible: int
    cells: tuple[CellRelease, ...] = field(default=())


_LABEL_COLUMNS = ("level", "age_band", "region", "sleep_bin")


def create_tables(engine: Engine) -> None:
    """Create the release store's tables (these included) if missing."""
    metadata.create_all(engine)


def record_analytics_round(
    store: ReleaseStore, releases: Sequence[QueryRelease], *, epsilon_after: float, purpose: str
) -> list[int]:
    """Write one period's query releases in one transaction; returns their release ids.

    ``epsilon_after`` is the largest epsilon any user has spent once this round was
    charged: each ``release`` row carries it, as model rounds do.
    """
    if store.read_only:
        raise PermissionError("this release store was opened read-only")
    create_tables(store.engine)
    ids: list[int] = []
    with Session(store.engine) as session:
        for released in releases:
            release = Release(
                kind=ANALYTICS_KIND,
                purpose=purpose,
                epsilon=epsilon_after,
                delta=released.delta,
                title=f"{released.title}, week of {released.period.isoformat()}",
            )
            session.add(release)
            session.flush()
            assert release.id is not None
            values = {
                name: getattr(released, name)
                for name in AnalyticsRelease.model_fields
                if name != "release_id"
            }
            session.add(AnalyticsRelease(release_id=release.id, **values))
            session.flush()
            session.add_all(
                AnalyticsCell(
                    release_id=release.id,
                    cell=cell.cell,
                    value=cell.value,
                    value_std=cell.value_std,
                    noisy_sum=cell.noisy_sum,
                    noisy_count=cell.noisy_count,
                    suppressed=cell.suppressed,
                    derived=cell.derived,
                    **{k: v for k, v in cell.labels.items() if k in _LABEL_COLUMNS},
                )
                for cell in released.cells
            )
            ids.append(release.id)
        session.commit()
    return ids


# -- readers (plain rows, so the dashboard can make DataFrames without this module's types)


def _rows(engine: Engine, query: Any) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


_release = Release.__table__  # type: ignore[attr-defined]
_analytics = AnalyticsRelease.__table__  # type: ignore[attr-defined]
_cell = AnalyticsCell.__table__  # type: ignore[attr-defined]
_model = ModelRound.__table__  # type: ignore[attr-defined]
_run = TrainingRun.__table__  # type: ignore[attr-defined]


def analytics_cells(engine: Engine, *, query: str | None = None) -> list[dict[str, Any]]:
    """Every stored cell (of one query, or all) with its release's period and noise, by period."""
    columns = [
        _analytics.c.query,
        _analytics.c.period,
        _analytics.c.noise_std,
        _analytics.c.threshold,
        _analytics.c.epsilon,
        _analytics.c.delta,
        *(c for c in _cell.c if c.name != "id"),
    ]
    statement = select(*columns).join(_analytics, _analytics.c.release_id == _cell.c.release_id)
    if query is not None:
        statement = statement.where(_analytics.c.query == query)
    return _rows(engine, statement.order_by(_analytics.c.period, _cell.c.id))


def analytics_releases(engine: Engine) -> list[dict[str, Any]]:
    """Every analytics release with its ``release`` row (epsilon after it, creation time)."""
    statement = (
        select(
            *_analytics.c,
            _release.c.epsilon.label("epsilon_after"),
            _release.c.created_at,
            _release.c.purpose,
        )
        .join(_release, _release.c.id == _analytics.c.release_id)
        .order_by(_analytics.c.period, _analytics.c.release_id)
    )
    return _rows(engine, statement)


def releases(engine: Engine) -> list[dict[str, Any]]:
    """Every release (model rounds and analytics), oldest first, with its budget."""
    statement = (
        select(
            *_release.c,
            _run.c.epsilon_budget.label("run_epsilon_budget"),
            _analytics.c.epsilon_budget.label("analytics_epsilon_budget"),
            _analytics.c.epsilon.label("own_epsilon"),
            _analytics.c.period,
        )
        .outerjoin(_run, _run.c.id == _release.c.run_id)
        .outerjoin(_analytics, _analytics.c.release_id == _release.c.id)
        .order_by(_release.c.id)
    )
    return _rows(engine, statement)


def model_rounds(engine: Engine) -> list[dict[str, Any]]:
    """Every published model round without its weights, with the epsilon after it."""
    statement = (
        select(
            *(c for c in _model.c if c.name != "weights"),
            _release.c.epsilon,
            _release.c.delta,
            _release.c.created_at,
        )
        .join(_release, _release.c.id == _model.c.release_id)
        .order_by(_model.c.run_id, _model.c.round)
    )
    return _rows(engine, statement)


def training_runs(engine: Engine) -> list[dict[str, Any]]:
    """Every training run, newest first."""
    return _rows(engine, select(_run).order_by(_run.c.started_at.desc()))
