"""Writing and reading the release store: runs, model rounds and analytics releases.

The server writes (:class:`ReleaseStore`); the dashboard opens it read-only and uses
:mod:`server.releases.readers`. The tables are :mod:`server.releases.schema`'s.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, create_engine, event, select
from sqlmodel import Session, col

from server.errors import RunStatus
from server.releases.schema import (
    ANALYTICS_KIND,
    MODEL_ROUND_KIND,
    AnalyticsCell,
    AnalyticsRelease,
    ModelRound,
    Release,
    TrainingRun,
    create_tables,
    utc_now,
)

__all__ = [
    "CellRelease",
    "ModelRelease",
    "QueryRelease",
    "ReleaseStore",
    "decode_weights",
    "encode_weights",
]


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


@dataclass(frozen=True, slots=True)
class ModelRelease:
    """A model round as read back: the row, its release and the decoded weights."""

    run_id: str
    round: int
    epsilon: float
    delta: float
    sampling_rate: float
    noise_multiplier: float
    clipping_norm: float
    eligible_devices: int
    expected_devices: float
    holdout_mae: float | None
    weights: list[np.ndarray]
    created_at: datetime


def encode_weights(weights: Sequence[np.ndarray]) -> bytes:
    """Weights as an uncompressed ``.npz`` (arrays ``arr_0``.., no pickles)."""
    buffer = io.BytesIO()
    np.savez(buffer, *[np.asarray(w) for w in weights])
    return buffer.getvalue()


def decode_weights(blob: bytes) -> list[np.ndarray]:
    """The inverse of :func:`encode_weights`; refuses pickled objects.

    >>> [w.tolist() for w in decode_weights(encode_weights([np.arange(3)]))]
    [[0, 1, 2]]
    """
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _make_sqlite_folder(url: str) -> None:
    """SQLite creates the file but not its folder (``sqlite:///path``; not ``:memory:``)."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///file:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def _read_only_url(url: str) -> str:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///file:"):
        return f"sqlite:///file:{url.removeprefix('sqlite:///')}?mode=ro&uri=true"
    return url


class ReleaseStore:
    """Writes releases (the server) or reads them (the dashboard, ``read_only=True``).

    >>> store = ReleaseStore("sqlite://")
    >>> store.start_run(run_id="r1", flower_run_id="7", purpose="model-training",
    ...     planned_rounds=2, epsilon_budget=3.0, delta=1e-5, accounting="rdp",
    ...     noise_multiplier=1.0, clipping_norm=1.0, expected_devices=5.0)
    >>> _ = store.record_model_round(run_id="r1", round_number=1, weights=[np.zeros(2)],
    ...     epsilon=0.5, delta=1e-5, sampling_rate=0.5, noise_multiplier=1.0,
    ...     clipping_norm=1.0, eligible_devices=10, expected_devices=5.0)
    >>> store.latest_model().round, store.run("r1").rounds_completed
    (1, 1)
    """

    def __init__(self, engine: Engine | str, *, read_only: bool = False) -> None:
        self._owns_engine = isinstance(engine, str)
        if isinstance(engine, str):
            if not read_only:
                _make_sqlite_folder(engine)
            url = _read_only_url(engine) if read_only else engine
            engine = create_engine(url)
            if engine.dialect.name == "sqlite":
                event.listen(engine, "connect", _configure_sqlite)
        self.engine = engine
        self.read_only = read_only
        if not read_only:
            create_tables(engine)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> ReleaseStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _writable(self) -> None:
        if self.read_only:
            raise PermissionError("this release store was opened read-only")

    # -- runs --------------------------------------------------------------------------

    def start_run(
        self,
        *,
        run_id: str,
        flower_run_id: str,
        purpose: str,
        planned_rounds: int,
        epsilon_budget: float,
        delta: float,
        accounting: str,
        noise_multiplier: float,
        clipping_norm: float,
        expected_devices: float,
        model: str = "",
        metric_label: str = "",
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Record that a run started (status ``running``)."""
        self._writable()
        with Session(self.engine) as session:
            session.add(
                TrainingRun(
                    id=run_id,
                    flower_run_id=flower_run_id,
                    purpose=purpose,
                    planned_rounds=planned_rounds,
                    epsilon_budget=epsilon_budget,
                    delta=delta,
                    accounting=accounting,
                    noise_multiplier=noise_multiplier,
                    clipping_norm=clipping_norm,
                    expected_devices=expected_devices,
                    model=model,
                    metric_label=metric_label,
                    settings_json=json.dumps(settings or {}, sort_keys=True, default=str),
                )
            )
            session.commit()

    def set_attested(self, run_id: str, attested_devices: int) -> None:
        self._writable()
        with Session(self.engine) as session:
            run = session.get(TrainingRun, run_id)
            if run is None:
                raise KeyError(f"no training run {run_id!r}")
            run.attested_devices = attested_devices
            session.add(run)
            session.commit()

    def finish_run(self, run_id: str, *, status: RunStatus, reason: str) -> None:
        """Record how the run ended and why."""
        self._writable()
        with Session(self.engine) as session:
            run = session.get(TrainingRun, run_id)
            if run is None:
                raise KeyError(f"no training run {run_id!r}")
            run.status = status
            run.stop_reason = reason
            run.finished_at = utc_now()
            session.add(run)
            session.commit()

    def run(self, run_id: str) -> TrainingRun:
        with Session(self.engine) as session:
            run = session.get(TrainingRun, run_id)
            if run is None:
                raise KeyError(f"no training run {run_id!r}")
            session.expunge(run)
            return run

    def runs(self) -> list[TrainingRun]:
        """Every run, newest first."""
        with Session(self.engine) as session:
            rows = list(
                session.scalars(select(TrainingRun).order_by(col(TrainingRun.started_at).desc()))
            )
            for row in rows:
                session.expunge(row)
            return rows

    # -- model rounds ------------------------------------------------------------------

    def record_model_round(
        self,
        *,
        run_id: str,
        round_number: int,
        weights: Sequence[np.ndarray],
        epsilon: float,
        delta: float,
        sampling_rate: float,
        noise_multiplier: float,
        clipping_norm: float,
        eligible_devices: int,
        expected_devices: float,
        holdout_mae: float | None = None,
        holdout_devices: int | None = None,
        holdout_examples: int | None = None,
        release_epsilon: float | None = None,
        aggregation: str = "central",
        private: bool = True,
    ) -> int:
        """Publish one round's model; returns the release id. One transaction.

        ``epsilon`` is composed (the largest total spend of the users it may reflect),
        ``release_epsilon`` this round's own cost; ``aggregation`` is ``secure`` or
        ``central``; ``private`` is false for a seeded (reproducible) run.
        """
        self._writable()
        blob = encode_weights(weights)
        with Session(self.engine) as session:
            run = session.get(TrainingRun, run_id)
            if run is None:
                raise KeyError(f"no training run {run_id!r}")
            release = Release(
                kind=MODEL_ROUND_KIND,
                purpose=run.purpose,
                run_id=run_id,
                epsilon=epsilon,
                delta=delta,
                title=f"global model after round {round_number}",
                release_epsilon=release_epsilon,
                aggregation=aggregation,
                private=private,
            )
            session.add(release)
            session.flush()
            assert release.id is not None
            session.add(
                ModelRound(
                    release_id=release.id,
                    run_id=run_id,
                    round=round_number,
                    sampling_rate=sampling_rate,
                    noise_multiplier=noise_multiplier,
                    clipping_norm=clipping_norm,
                    eligible_devices=eligible_devices,
                    expected_devices=expected_devices,
                    weights=blob,
                    weights_sha256=hashlib.sha256(blob).hexdigest(),
                    holdout_mae=holdout_mae,
                    holdout_devices=holdout_devices,
                    holdout_examples=holdout_examples,
                )
            )
            run.rounds_completed = max(run.rounds_completed, round_number)
            session.add(run)
            session.commit()
            return release.id

    def model_rounds(self, run_id: str) -> list[ModelRelease]:
        """A run's published rounds, in order."""
        query = (
            select(ModelRound, Release)
            .join(Release, col(Release.id) == col(ModelRound.release_id))
            .where(col(ModelRound.run_id) == run_id)
            .order_by(col(ModelRound.round))
        )
        with Session(self.engine) as session:
            return [_model_release(row, release) for row, release in session.execute(query)]

    def latest_model(self, *, run_id: str | None = None) -> ModelRelease | None:
        """The most recently published global model (of a run, or of any run)."""
        query = select(ModelRound, Release).join(
            Release, col(Release.id) == col(ModelRound.release_id)
        )
        if run_id is not None:
            query = query.where(col(ModelRound.run_id) == run_id)
        query = query.order_by(col(Release.id).desc()).limit(1)
        with Session(self.engine) as session:
            found = session.execute(query).first()
            return None if found is None else _model_release(*found)

    def releases(self, *, kind: str | None = None) -> list[Release]:
        """Every release (optionally of one kind), oldest first."""
        query = select(Release).order_by(col(Release.id))
        if kind is not None:
            query = query.where(col(Release.kind) == kind)
        with Session(self.engine) as session:
            rows = list(session.scalars(query))
            for row in rows:
                session.expunge(row)
            return rows

    # -- analytics ---------------------------------------------------------------------

    def record_analytics_week(
        self,
        releases: Sequence[QueryRelease],
        *,
        epsilon: float,
        purpose: str,
        aggregation: str = "central",
        private: bool = True,
    ) -> list[int]:
        """Write one period's query releases in one transaction; returns their release ids.

        ``epsilon`` is the release epsilon (the largest spend of the users eligible for
        this round once it was charged): each ``release`` row carries it, as model rounds do.
        """
        self._writable()
        ids: list[int] = []
        with Session(self.engine) as session:
            for released in releases:
                release = Release(
                    kind=ANALYTICS_KIND,
                    purpose=purpose,
                    epsilon=epsilon,
                    delta=released.delta,
                    title=f"{released.title}, week of {released.period.isoformat()}",
                    release_epsilon=released.round_epsilon,
                    aggregation=aggregation,
                    private=private,
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
                        level=cell.labels.get("level"),
                        age_band=cell.labels.get("age_band"),
                        region=cell.labels.get("region"),
                        sleep_bin=cell.labels.get("sleep_bin"),
                    )
                    for cell in released.cells
                )
                ids.append(release.id)
            session.commit()
        return ids


def _model_release(row: ModelRound, release: Release) -> ModelRelease:
    return ModelRelease(
        run_id=row.run_id,
        round=row.round,
        epsilon=release.epsilon,
        delta=release.delta,
        sampling_rate=row.sampling_rate,
        noise_multiplier=row.noise_multiplier,
        clipping_norm=row.clipping_norm,
        eligible_devices=row.eligible_devices,
        expected_devices=row.expected_devices,
        holdout_mae=row.holdout_mae,
        weights=decode_weights(row.weights),
        created_at=release.created_at,
    )
