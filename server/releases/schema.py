"""The release store's tables: everything the server publishes, each with its (epsilon, delta).

Nothing in it is per-user. Tables (on their own SQLAlchemy registry, :data:`metadata`):

- ``training_run``: one federated training run: its settings, status and why it stopped.
- ``release``: one row per published thing, model round or analytics figure, with the
  (epsilon, delta) of the users it could depend on: ``epsilon`` is *composed* (the largest
  total any of them had spent by then, every purpose) and ``release_epsilon`` the
  *incremental* cost of this release alone. ``aggregation`` says how it was made
  (``secure``: SecAgg+ with the noise added on the devices; ``central``: a trusted server
  saw the clipped contributions and added the noise) and ``private`` is false when a
  fixed seed made its sampling and noise reproducible (demos and tests: not private).
  The one list an analyst scans to see the privacy cost of every figure.
- ``model_round``: a round's global model (weights as a NumPy ``.npz`` blob), its DP
  parameters (q, sigma, C), the DP-safe counts (eligible devices, which the consent
  ledger makes public, and the expected count q * eligible; never the number of
  replies, which depends on who was sampled) and a quality metric computed by the
  server on data it holds (in simulation, synthetic held-out devices), labelled so.
- ``analytics_release``: one query released for one period (an ISO week, named by its
  Monday; a ``release`` row of kind ``"analytics"``): its noise, suppression threshold,
  its own (epsilon, delta), the epsilon of every analytics release so far for a user
  eligible in all of them, the per-user budget and the number of eligible devices.
- ``analytics_cell``: one figure of that release: its labels (level, age band, region or
  sleep bin), the noisy value with its standard deviation, the noisy count, and whether
  it was suppressed. A suppressed cell has no value, no std and no count.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Final

from sqlalchemy import Boolean, Engine, LargeBinary, String, UniqueConstraint, inspect, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import registry
from sqlalchemy.schema import DDLElement
from sqlalchemy.sql.compiler import DDLCompiler
from sqlmodel import Column, Field, SQLModel, Text

__all__ = [
    "ANALYTICS_KIND",
    "MODEL_ROUND_KIND",
    "AnalyticsCell",
    "AnalyticsRelease",
    "ModelRound",
    "Release",
    "TrainingRun",
    "create_tables",
    "metadata",
    "utc_now",
]

MODEL_ROUND_KIND: Final = "model-round"
ANALYTICS_KIND: Final = "analytics"

_registry = registry()


class _ReleaseModel(SQLModel, registry=_registry):
    pass


metadata = _ReleaseModel.metadata
"""The release store's tables, apart from other metadata (for ``create_all`` or Alembic)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class TrainingRun(_ReleaseModel, table=True):
    """One federated training run."""

    __tablename__ = "training_run"

    id: str = Field(primary_key=True, max_length=64)
    flower_run_id: str = Field(max_length=32)
    purpose: str = Field(max_length=64)
    started_at: datetime = Field(default_factory=utc_now)
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
    kind: str = Field(max_length=32, index=True)  # MODEL_ROUND_KIND | ANALYTICS_KIND
    purpose: str = Field(max_length=64)
    run_id: str | None = Field(default=None, foreign_key="training_run.id", index=True)
    created_at: datetime = Field(default_factory=utc_now)
    epsilon: float
    delta: float
    title: str = Field(default="", sa_column=Column(Text))
    release_epsilon: float | None = None
    aggregation: str = Field(
        default="central", sa_column=Column(String(16), nullable=False, server_default="central")
    )
    private: bool = Field(
        default=True, sa_column=Column(Boolean, nullable=False, server_default=true())
    )


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


class AddColumn(DDLElement):
    """``ALTER TABLE ... ADD COLUMN``, compiled for the engine's dialect (SQLite, PostgreSQL)."""

    inherit_cache = False

    def __init__(self, table: str, column: Column[object]) -> None:
        self.table = table
        self.column = column


@compiles(AddColumn)
def _add_column(element: AddColumn, compiler: DDLCompiler, **_: object) -> str:
    spec = compiler.get_column_specification(element.column)
    return f"ALTER TABLE {compiler.preparer.quote(element.table)} ADD COLUMN {spec}"


def create_tables(engine: Engine) -> None:
    """Create the release store's tables if missing, and add the columns a store made by
    an earlier release lacks (each new column is nullable or has a server default)."""
    metadata.create_all(engine)
    existing = inspect(engine)
    with engine.begin() as connection:
        for table in metadata.sorted_tables:
            present = {column["name"] for column in existing.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    connection.execute(AddColumn(table.name, column))
