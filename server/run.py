"""One run of the ServerApp: wait for nodes, attest them, train, then release analytics.

:func:`run_server` opens what a run needs (the consent client, the release store, the
per-user accountant) and fails closed: without a consent service it refuses to start,
so a mis-configured deployment never trains against a stand-in ledger.
:func:`run_training` runs the rounds (:mod:`server.training`) and records how the run
ended; :func:`server.analytics.run_analytics` the weeks after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

from flwr.serverapp import Grid

from privacy import Accountant
from server.analytics import AnalyticsPlan, AnalyticsReport, AnalyticsRun, run_analytics
from server.attestation import Attestations, attest_nodes
from server.eligibility import EligibilityClient, EligibilityError, EligibilitySource
from server.errors import ConfigurationError, RunStatus, RunStopped
from server.evaluation import HoldoutSet
from server.observers import RunObserver
from server.releases import ReleaseStore
from server.settings import TrainSettings
from server.training import RoundReport, TrainingRound, TrainingRun, initial_weights, model_name
from server.transcript import Transcript

__all__ = ["NO_CONSENT_SERVICE", "RunResult", "run_server", "run_training", "wait_for_nodes"]

log = logging.getLogger(__name__)

NO_CONSENT_SERVICE = (
    "no consent service is configured, so no device's consent can be checked and nothing "
    "will run: set MOODFED_CONSENT_URL to the consent service's address and "
    "MOODFED_ELIGIBILITY_TOKEN to its eligibility token (for a local simulation on "
    "synthetic devices instead: flwr run . --run-config simulation=true)"
)


@dataclass
class RunResult:
    """How a run went."""

    run_id: str
    status: RunStatus
    reason: str
    rounds: list[RoundReport] = field(default_factory=list)
    attested: dict[int, str] = field(default_factory=dict)
    attestations: Attestations | None = None
    epsilon: float = 0.0
    analytics: list[AnalyticsReport] = field(default_factory=list)
    """The weekly analytics releases run after training, if any were planned."""


def wait_for_nodes(grid: Grid, *, minimum: int, seconds: float) -> list[int]:
    """The connected nodes, once at least ``minimum`` are there or ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum or time.monotonic() >= deadline:
            return nodes
        time.sleep(0.5)


def run_training(
    grid: Grid,
    *,
    settings: TrainSettings,
    eligibility: EligibilitySource,
    store: ReleaseStore,
    accountant: Accountant,
    holdout: HoldoutSet | None = None,
    observers: Sequence[RunObserver] = (),
    attestations: Attestations | None = None,
) -> RunResult:
    """Attest the nodes (unless given), run the rounds; record every release and how the
    run ended.

    Returns normally when the run completes or is stopped on purpose (budget, no
    eligible devices); raises :class:`EligibilityError` (after recording it) when the
    consent service cannot be asked.
    """
    run = TrainingRun(
        grid=grid,
        settings=settings,
        eligibility=eligibility,
        accountant=accountant,
        store=store,
        attestations=attestations or Attestations(device_keys={}),
        holdout=holdout,
        observers=observers,
    )
    result = RunResult(run_id=run.run_id, status="running", reason="")
    run.record_start(
        model=model_name(),
        metric_label=holdout.label if holdout is not None else "no server-side evaluation",
    )
    log.info("Training run %s (Flower run %s) started", run.run_id, grid.run.run_id)
    try:
        if attestations is None:
            nodes = wait_for_nodes(
                grid, minimum=settings.min_nodes, seconds=settings.node_wait_seconds
            )
            run.attestations = attest_nodes(
                grid, nodes, timeout=settings.attestation_timeout, observers=observers
            )
        attested = run.attestations.device_keys
        result.attested = dict(attested)
        result.attestations = run.attestations
        store.set_attested(run.run_id, len(attested))
        log.info("%d node(s) attested, %d left out", len(attested), len(run.attestations.rejected))
        if len(attested) < settings.min_nodes:
            raise RunStopped(
                "stopped",
                f"only {len(attested)} node(s) attested, fewer than min_nodes={settings.min_nodes}",
            )
        weights = initial_weights(settings.seed)
        for number in range(1, settings.rounds + 1):
            report, weights = TrainingRound(run, number)(weights)
            result.rounds.append(report)
            result.epsilon = report.epsilon
        raise RunStopped("completed", f"all {settings.rounds} planned rounds ran")
    except RunStopped as stop:
        result.status, result.reason = stop.status, stop.reason
        store.finish_run(run.run_id, status=stop.status, reason=stop.reason)
        level = logging.INFO if stop.status == "completed" else logging.WARNING
        log.log(level, "Training run %s %s: %s", run.run_id, stop.status, stop.reason)
        return result
    except EligibilityError as error:
        reason = f"consent service failure, no round run on unchecked devices: {error}"
        store.finish_run(run.run_id, status="failed", reason=reason)
        log.error("Training run %s failed: %s", run.run_id, reason)
        raise
    except BaseException as error:
        store.finish_run(run.run_id, status="failed", reason=f"{type(error).__name__}: {error}")
        raise


def run_server(
    grid: Grid,
    *,
    settings: TrainSettings,
    observers: Sequence[RunObserver] = (),
    eligibility: EligibilitySource | None = None,
    analytics: AnalyticsPlan | None = None,
    holdout: HoldoutSet | None = None,
) -> RunResult:
    """Open the stores and the consent client, then :func:`run_training`, then the
    ``analytics`` plan's weekly rounds over the same attested devices (if given).

    Raises :class:`ConfigurationError` before touching anything when there is no consent
    service to ask (``settings.consent_url`` unset and no ``eligibility`` given).
    """
    if eligibility is None and settings.consent_url is None:
        raise ConfigurationError(NO_CONSENT_SERVICE)
    if settings.transcript_dir is not None:
        observers = [*observers, Transcript(settings.transcript_dir)]
    with ExitStack() as stack:
        if eligibility is None:
            assert settings.consent_url is not None and settings.eligibility_token is not None
            eligibility = stack.enter_context(
                EligibilityClient(
                    settings.consent_url,
                    token=settings.eligibility_token,
                    timeout=settings.eligibility_timeout,
                )
            )
        store = stack.enter_context(ReleaseStore(settings.resolved_release_database_url))
        accountant = stack.enter_context(settings.open_accountant())
        result = run_training(
            grid,
            settings=settings,
            eligibility=eligibility,
            store=store,
            accountant=accountant,
            holdout=holdout,
            observers=observers,
        )
        if analytics is not None and result.attested:
            result.analytics = run_analytics(
                AnalyticsRun(
                    plan=analytics,
                    eligibility=eligibility,
                    accountant=accountant,
                    store=store,
                    grid=grid,
                    attestations=result.attestations,
                    observers=observers,
                    aggregation=settings.aggregation,
                    private=settings.seed is None,
                )
            )
        return result
