"""The release store: what the server publishes, each figure with its (epsilon, delta).

:mod:`~server.releases.schema` holds the tables, :mod:`~server.releases.store` the writer
(and typed reads), :mod:`~server.releases.readers` the plain-row readers the dashboard uses.
"""

from server.releases.schema import (
    ANALYTICS_KIND,
    MODEL_ROUND_KIND,
    AnalyticsCell,
    AnalyticsRelease,
    ModelRound,
    Release,
    TrainingRun,
    create_tables,
    metadata,
)
from server.releases.store import (
    CellRelease,
    ModelRelease,
    QueryRelease,
    ReleaseStore,
    decode_weights,
    encode_weights,
)

__all__ = [
    "ANALYTICS_KIND",
    "MODEL_ROUND_KIND",
    "AnalyticsCell",
    "AnalyticsRelease",
    "CellRelease",
    "ModelRelease",
    "ModelRound",
    "QueryRelease",
    "Release",
    "ReleaseStore",
    "TrainingRun",
    "create_tables",
    "decode_weights",
    "encode_weights",
    "metadata",
]
