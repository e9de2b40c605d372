"""The moodfed server side: the Flower ServerApp, accounting and the release store.

Names load on first use, so ``moodfed consent serve`` and the dashboard (which reads
the release store) do not import Flower or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.aggregation import dp_fedavg, next_global, parse_update
    from server.app import (
        RoundReport,
        RunResult,
        make_server_app,
        run_server,
        run_training,
    )
    from server.attestation import Attestations, attest_nodes
    from server.eligibility import EligibilityClient, EligibilityError
    from server.evaluation import HoldoutSet
    from server.releases import ModelRelease, ReleaseStore
    from server.sampling import poisson_sample, round_rng
    from server.settings import TrainSettings
    from server.simulation import SimulatedFederation, local_consent_service
    from server.train import run_train

_LAZY = {
    "Attestations": "server.attestation",
    "EligibilityClient": "server.eligibility",
    "EligibilityError": "server.eligibility",
    "HoldoutSet": "server.evaluation",
    "ModelRelease": "server.releases",
    "ReleaseStore": "server.releases",
    "RoundReport": "server.app",
    "RunResult": "server.app",
    "SimulatedFederation": "server.simulation",
    "TrainSettings": "server.settings",
    "attest_nodes": "server.attestation",
    "dp_fedavg": "server.aggregation",
    "local_consent_service": "server.simulation",
    "make_server_app": "server.app",
    "next_global": "server.aggregation",
    "parse_update": "server.aggregation",
    "poisson_sample": "server.sampling",
    "round_rng": "server.sampling",
    "run_server": "server.app",
    "run_train": "server.train",
    "run_training": "server.app",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'server' has no attribute {name!r}")


__all__ = [
    "Attestations",
    "EligibilityClient",
    "EligibilityError",
    "HoldoutSet",
    "ModelRelease",
    "ReleaseStore",
    "RoundReport",
    "RunResult",
    "SimulatedFederation",
    "TrainSettings",
    "attest_nodes",
    "dp_fedavg",
    "local_consent_service",
    "make_server_app",
    "next_global",
    "parse_update",
    "poisson_sample",
    "round_rng",
    "run_server",
    "run_train",
    "run_training",
]
