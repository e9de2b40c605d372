"""The release store: everything the server publishes, each with its (epsilon, delta).

The dashboard reads it (read-only); nothing in it is per-user. Tables:

- ``training_run``: one federated training run: its settings, status and why it stopped.
- ``release``: one row per published thing, model round or analytics figure, with the
  (epsilon, delta) in force after it (the largest epsilon any user had spent by then):
  the one list an analyst scans to see the privacy cost of every figure.
- ``model_round``: a round's global model (weights as a NumPy ``.npz`` blob), its DP
  parameters (q, sigma, C), the DP-safe counts (eligible devices, which the consent
  ledger makes public, and the expected count q * eligible; never the number of
  replies, which depends on who was sampled) and a quality metric computed by the
  server on data it holds (in simulation, synthetic held-out devices), labelled so.

Analytics releases add their own detail table keyed by ``release.id`` with
``release.kind == "analytics"``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import Engine, LargeBinary, create_engine, event, select
from sqlalchemy.orm import registry
from sqlmodel import Column, Field, Session, SQLModel, Text

__all__ = [
    "ModelRelease",
    "ModelRound",
    "Release",
    "ReleaseStore",
    "RunStatus",
    "TrainingRun",
    "decode_weights",
    "encode_weights",
    "metadata",
]

RunStatus = Literal["running", "completed", "stopped", "failed"]

_registry = registry()


class _ReleaseModel(SQLModel, registry=_registry):
    pass


metadata = _ReleaseModel.metadata
"""The release store's tables, apart from other metadata (for ``create_all`` or Alembic)."""


def _now() -> datetime:
    return datetime.now(UTC)


class TrainingRun(_ReleaseModel, table=True):
    """One federated training run."""

    __tablename__ = "training_run"

    id: str = Field(primary_key=True, max_length=64)
    flower_run_id: str = Field(max_length=32)
    purpose: str = Field(max_length=64)
    started_at: datetime = Field(default_factory=_now)
    finished_at: datetime | None = None
    status: str = Field(default="running", max_length=16)
    stop_reason: str | None = Field(default=None, sa_column=Column(Text))
    planned_rounds: int
    rounds_completed: int = 0
    epsilon_budget: float
    delta: float
    accounting: str = Field(max_length=8)
    noise_multiplier: float
    clipping_norm: float
    expected_devices: float
    attested_devices: int = 0
    model: str = Field(default="", max_length=128)
    metric_label: str = Field(default="", sa_column=Column(Text))
    settings_json: str = Field(default="{}", sa_column=Column(Text))


class Release(_ReleaseModel, table=True):
    """A published thing and the privacy cost in force after it."""

    __tablename__ = "release"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32, index=True)  # "model-round" | "analytics"
    purpose: str = Field(max_length=64)
    run_id: str | None = Field(default=None, foreign_key="training_run.id", index=True)
    created_at: datetime = Field(default_factory=_now)
    epsilon: float
    delta: float
    title: str = Field(default="", sa_column=Column(Text))


class ModelRound(_ReleaseModel, table=True):
    """One round's global model and what may be said about it."""

    __tablename__ = "model_round"

    release_id: int = Field(primary_key=True, foreign_key="release.id")
    run_id: str = Field(foreign_key="training_run.id", index=True)
    round: int
    sampling_rate: float
    noise_multiplier: float
    clipping_norm: float
    eligible_devices: int
    expected_devices: float
    weights: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    weights_sha256: str = Field(max_length=64)
    holdout_mae: float | None = None
    holdout_devices: int | None = None
    holdout_examples: int | None = None


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
            metadata.create_all(engine)

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
            run.finished_at = _now()
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
                session.scalars(select(TrainingRun).order_by(TrainingRun.started_at.desc()))  # type: ignore[attr-defined]
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
    ) -> int:
        """Publish one round's model; returns the release id. One transaction."""
        self._writable()
        blob = encode_weights(weights)
        with Session(self.engine) as session:
            run = session.get(TrainingRun, run_id)
            if run is None:
                raise KeyError(f"no training run {run_id!r}")
            release = Release(
                kind="model-round",
                purpose=run.purpose,
                run_id=run_id,
                epsilon=epsilon,
                delta=delta,
                title=f"global model after round {round_number}",
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
            .join(Release, Release.id == ModelRound.release_id)  # type: ignore[arg-type]
            .where(ModelRound.run_id == run_id)
            .order_by(ModelRound.round)  # type: ignore[arg-type]
        )
        with Session(self.engine) as session:
            return [_model_release(row, release) for row, release in session.execute(query)]

    def latest_model(self, *, run_id: str | None = None) -> ModelRelease | None:
        """The most recently published global model (of a run, or of any run)."""
        query = select(ModelRound, Release).join(
            Release,
            Release.id == ModelRound.release_id,  # type: ignore[arg-type]
        )
        if run_id is not None:
            query = query.where(ModelRound.run_id == run_id)
        query = query.order_by(Release.id.desc()).limit(1)  # type: ignore[union-attr]
        with Session(self.engine) as session:
            found = session.execute(query).first()
            return None if found is None else _model_release(*found)

    def releases(self, *, kind: str | None = None) -> list[Release]:
        """Every release (optionally of one kind), oldest first."""
        query = select(Release).order_by(Release.id)  # type: ignore[arg-type]
        if kind is not None:
            query = query.where(Release.kind == kind)
        with Session(self.engine) as session:
            rows = list(session.scalars(query))
            for row in rows:
                session.expunge(row)
            return rows


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
