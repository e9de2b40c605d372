"""The release store's readers: plain rows, so the dashboard can make DataFrames.

Imports nothing from ``client_sdk`` or the server's round code, so the dashboard can use
it over a read-only connection.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, inspect, select

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


# The tables behind the models (``Model.__table__``, which SQLModel does not declare).
_release = inspect(Release).local_table
_analytics = inspect(AnalyticsRelease).local_table
_cell = inspect(AnalyticsCell).local_table
_model = inspect(ModelRound).local_table
_run = inspect(TrainingRun).local_table


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
