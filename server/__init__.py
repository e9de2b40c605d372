"""The moodfed server side: the Flower ServerApp, its rounds, accounting and the release store.

Simulations (the synthetic federation, ``moodfed train``, ``moodfed demo``, seeded
stores) live in :mod:`server.sim`, which nothing here imports. Names load on first use,
so ``moodfed consent serve`` and the dashboard (which reads the release store) do not
import Flower or torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.aggregation import dp_fedavg, next_global, parse_update
    from server.analytics import (
        AnalyticsPlan,
        AnalyticsReport,
        AnalyticsRound,
        AnalyticsRun,
        run_analytics,
    )
    from server.app import make_server_app
    from server.attestation import Attestations, attest_nodes
    from server.eligibility import EligibilityClient, EligibilityError, EligibilitySource
    from server.errors import ConfigurationError, RunStopped
    from server.evaluation import HoldoutSet
    from server.observers import RunObserver
    from server.releases import ModelRelease, ReleaseStore
    from server.run import RunResult, run_server, run_training
    from server.sampling import poisson_sample, round_rng
    from server.settings import TrainSettings
    from server.training import RoundReport, TrainingRound, TrainingRun

_LAZY = {
    "AnalyticsPlan": "server.analytics",
    "AnalyticsReport": "server.analytics",
    "AnalyticsRound": "server.analytics",
    "AnalyticsRun": "server.analytics",
    "Attestations": "server.attestation",
    "ConfigurationError": "server.errors",
    "EligibilityClient": "server.eligibility",
    "EligibilityError": "server.eligibility",
    "EligibilitySource": "server.eligibility",
    "HoldoutSet": "server.evaluation",
    "ModelRelease": "server.releases",
    "ReleaseStore": "server.releases",
    "RoundReport": "server.training",
    "RunObserver": "server.observers",
    "RunResult": "server.run",
    "RunStopped": "server.errors",
    "TrainSettings": "server.settings",
    "TrainingRound": "server.training",
    "TrainingRun": "server.training",
    "attest_nodes": "server.attestation",
    "dp_fedavg": "server.aggregation",
    "make_server_app": "server.app",
    "next_global": "server.aggregation",
    "parse_update": "server.aggregation",
    "poisson_sample": "server.sampling",
    "round_rng": "server.sampling",
    "run_analytics": "server.analytics",
    "run_server": "server.run",
    "run_training": "server.run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'server' has no attribute {name!r}")


__all__ = [
    "AnalyticsPlan",
    "AnalyticsReport",
    "AnalyticsRound",
    "AnalyticsRun",
    "Attestations",
    "ConfigurationError",
    "EligibilityClient",
    "EligibilityError",
    "EligibilitySource",
    "HoldoutSet",
    "ModelRelease",
    "ReleaseStore",
    "RoundReport",
    "RunObserver",
    "RunResult",
    "RunStopped",
    "TrainSettings",
    "TrainingRound",
    "TrainingRun",
    "attest_nodes",
    "dp_fedavg",
    "make_server_app",
    "next_global",
    "parse_update",
    "poisson_sample",
    "round_rng",
    "run_analytics",
    "run_server",
    "run_training",
]
