"""The release store's readers: plain rows, so the dashboard can make DataFrames.

Imports nothing from ``client_sdk`` or the server's round code, so the dashboard can use
it over a read-only connection. A store written by an older version may lack columns
added since (``release_epsilon``, ``aggregation``, ``private``); the dashboard cannot
migrate it (it only reads), so a missing column reads as the value the server's own
migration would give it (:func:`server.releases.schema.create_tables`): its server
default, else NULL.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Table,
    inspect,
    literal,
    null,
    select,
    type_coerce,
)
from sqlalchemy.schema import Column, DefaultClause
from sqlmodel import SQLModel

from server.releases.schema import AnalyticsCell, AnalyticsRelease, ModelRound, Release, TrainingRun

__all__ = [
    "analytics_cells",
    "analytics_releases",
    "model_rounds",
    "releases",
    "training_runs",
]


# -- readers (plain rows, so the dashboard can make DataFrames without this module's types)


def _rows(engine: Engine, query: Any) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def _table(model: type[SQLModel]) -> Table:
    """The table behind a model (``Model.__table__``, which SQLModel does not declare)."""
    table = inspect(model).local_table
    if not isinstance(table, Table):  # every model here maps one plain table
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


_release = _table(Release)
_analytics = _table(AnalyticsRelease)
_cell = _table(AnalyticsCell)
_model = _table(ModelRound)
_run = _table(TrainingRun)


class _Columns:
    """The columns each table really has in one store, to read old stores as migrated ones."""

    def __init__(self, engine: Engine) -> None:
        found = inspect(engine)
        self._present = {
            table.name: {column["name"] for column in found.get_columns(table.name)}
            for table in (_release, _analytics, _cell, _model, _run)
        }

    def get(self, column: Column[Any], label: str | None = None) -> ColumnElement[Any]:
        """``column`` if the store has it, else its server default (or NULL) under its name."""
        name = label or column.name
        if column.name in self._present[column.table.name]:
            return column.label(name) if label else column
        default = column.server_default
        if isinstance(default, DefaultClause):
            value: ColumnElement[Any] = (
                literal(default.arg, column.type)
                if isinstance(default.arg, str)
                else type_coerce(default.arg, column.type)
            )
        else:
            value = type_coerce(null(), column.type)
        return value.label(name)

    def all(self, table: Table, *, leave_out: Iterable[str] = ()) -> list[ColumnElement[Any]]:
        skipped = set(leave_out)
        return [self.get(c) for c in table.c if c.name not in skipped]


def analytics_cells(engine: Engine, *, query: str | None = None) -> list[dict[str, Any]]:
    """Every stored cell (of one query, or all) with its release's period, noise and privacy:
    ``epsilon`` is this query's release alone, ``round_epsilon`` the week's queries together
    (both incremental), ``epsilon_composed`` the largest total spend of the users it may
    reflect; ``aggregation`` and ``private`` as recorded on its ``release`` row.
    """
    have = _Columns(engine)
    columns = [
        _analytics.c.query,
        _analytics.c.period,
        _analytics.c.noise_std,
        _analytics.c.threshold,
        _analytics.c.epsilon,
        _analytics.c.round_epsilon,
        _analytics.c.delta,
        have.get(_release.c.epsilon, "epsilon_composed"),
        have.get(_release.c.aggregation),
        have.get(_release.c.private),
        *have.all(_cell, leave_out=("id",)),
    ]
    statement = (
        select(*columns)
        .join(_analytics, _analytics.c.release_id == _cell.c.release_id)
        .join(_release, _release.c.id == _cell.c.release_id)
    )
    if query is not None:
        statement = statement.where(_analytics.c.query == query)
    return _rows(engine, statement.order_by(_analytics.c.period, _cell.c.id))


def analytics_releases(engine: Engine) -> list[dict[str, Any]]:
    """Every analytics release with its ``release`` row: ``epsilon_after`` is composed (the
    largest total spend after it), ``release_epsilon`` incremental (NULL in old stores)."""
    have = _Columns(engine)
    statement = (
        select(
            *have.all(_analytics),
            have.get(_release.c.epsilon, "epsilon_after"),
            have.get(_release.c.release_epsilon),
            have.get(_release.c.aggregation),
            have.get(_release.c.private),
            _release.c.created_at,
            _release.c.purpose,
        )
        .join(_release, _release.c.id == _analytics.c.release_id)
        .order_by(_analytics.c.period, _analytics.c.release_id)
    )
    return _rows(engine, statement)


def releases(engine: Engine) -> list[dict[str, Any]]:
    """Every release (model rounds and analytics), oldest first, with its budget.

    ``epsilon`` is composed, ``release_epsilon`` incremental (NULL in old stores);
    ``own_epsilon`` and ``round_epsilon`` are an analytics release's query alone and its
    week together; ``aggregation`` and ``private`` say how it was made.
    """
    have = _Columns(engine)
    statement = (
        select(
            *have.all(_release),
            _run.c.epsilon_budget.label("run_epsilon_budget"),
            _analytics.c.epsilon_budget.label("analytics_epsilon_budget"),
            _analytics.c.epsilon.label("own_epsilon"),
            _analytics.c.round_epsilon,
            _analytics.c.period,
        )
        .outerjoin(_run, _run.c.id == _release.c.run_id)
        .outerjoin(_analytics, _analytics.c.release_id == _release.c.id)
        .order_by(_release.c.id)
    )
    return _rows(engine, statement)


def model_rounds(engine: Engine) -> list[dict[str, Any]]:
    """Every published model round without its weights: ``epsilon`` composed (the largest
    total spend after it), ``release_epsilon`` this round alone (NULL in old stores), and
    its ``aggregation`` and ``private`` flags."""
    have = _Columns(engine)
    statement = (
        select(
            *have.all(_model, leave_out=("weights",)),
            _release.c.epsilon,
            have.get(_release.c.release_epsilon),
            _release.c.delta,
            have.get(_release.c.aggregation),
            have.get(_release.c.private),
            _release.c.created_at,
        )
        .join(_release, _release.c.id == _model.c.release_id)
        .order_by(_model.c.run_id, _model.c.round)
    )
    return _rows(engine, statement)


def training_runs(engine: Engine) -> list[dict[str, Any]]:
    """Every training run, newest first."""
    have = _Columns(engine)
    return _rows(engine, select(*have.all(_run)).order_by(_run.c.started_at.desc()))
