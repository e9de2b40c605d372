"""moodfed's Flower ServerApp: attested, consent-gated, Poisson-sampled DP-FedAvg.

Two entry points: ``app`` (``server.app:app``, for ``flwr run`` against real devices;
settings from the run config and ``MOODFED_`` variables) and :func:`make_server_app`
(for the Simulation Engine's Python API, with settings, observers and stand-ins passed
in). Both fail closed without a consent service (:data:`server.run.NO_CONSENT_SERVICE`).
A run's steps are :func:`server.run.run_server`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.analytics import AnalyticsPlan
from server.eligibility import EligibilitySource
from server.evaluation import HoldoutSet
from server.observers import RunObserver
from server.run import RunResult, run_server
from server.settings import TrainSettings

__all__ = ["app", "forward_logs_to_flower", "make_server_app"]


def forward_logs_to_flower() -> None:
    """Show moodfed's INFO logs wherever Flower shows its own (``flwr run --stream``),
    and not dp-accounting's notes on RDP orders it skips (the bound stays valid)."""
    from flwr.supercore.logger import FLOWER_LOGGER

    logging.getLogger("absl").setLevel(logging.ERROR)
    for name in ("server", "client_sdk", "privacy"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            for handler in FLOWER_LOGGER.handlers:
                logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def make_server_app(
    settings: TrainSettings,
    *,
    observers: Sequence[RunObserver] = (),
    eligibility: EligibilitySource | None = None,
    results: list[RunResult] | None = None,
    analytics: AnalyticsPlan | None = None,
    holdout: HoldoutSet | None = None,
) -> ServerApp:
    """A ServerApp with its settings given here (for ``flwr.simulation.run_simulation``).

    ``results`` (if given) receives the :class:`~server.run.RunResult`.
    """
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        result = run_server(
            grid,
            settings=settings,
            observers=observers,
            eligibility=eligibility,
            analytics=analytics,
            holdout=holdout,
        )
        if results is not None:
            results.append(result)

    return server_app


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """``flwr run``: settings from the run config, then ``MOODFED_`` variables."""
    forward_logs_to_flower()
    run_server(grid, settings=TrainSettings.from_run_config(context.run_config))
