"""moodfed's Flower ServerApp: attested, consent-gated, Poisson-sampled DP-FedAvg.

A run: wait for nodes; attest each (a signed nonce, :mod:`server.attestation`); then
each round: ask the consent service which attested devices may train (any failure
stops the run), set q = expected / eligible, stop before the round if it would take any
eligible user past the budget, charge every eligible user (sampled or not: the
amplification argument covers them all), Poisson-sample, send the global model to the
sampled devices only, aggregate with DP-FedAvg (:mod:`server.aggregation`), evaluate on
the server's own held-out data, and publish the round with its (epsilon, delta)
(:mod:`server.releases`).

Two entry points: ``app`` (``server.app:app``, for ``flwr run``; settings from the run
config and ``MOODFED_`` variables) and :func:`make_server_app` (for the Simulation
Engine's Python API, with settings, observers and test doubles passed in).
"""

from __future__ import annotations

import logging
import secrets
import shutil
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from client_sdk.protocol import (
    GLOBAL_MODEL_RECORD,
    TRAIN_CONFIG_RECORD,
    TRAIN_MESSAGE_TYPE,
)
from client_sdk.simulated import SPEC_FILE, FederationSpec, default_sim_root
from privacy import Accountant, BudgetExceededError, PrivacyEvent
from server.aggregation import next_global, parse_update
from server.attestation import Attestations, attest_nodes
from server.eligibility import EligibilityClient, EligibilityError
from server.evaluation import HoldoutSet
from server.releases import ReleaseStore, RunStatus
from server.sampling import poisson_sample, round_rng
from server.settings import TRAINING_PURPOSE, TrainSettings

__all__ = [
    "EligibilitySource",
    "RoundObserver",
    "RoundReport",
    "RunResult",
    "app",
    "make_server_app",
    "release_epsilon",
    "run_server",
    "run_training",
]

if TYPE_CHECKING:
    from server.analytics import AnalyticsRound
    from server.analytics_rounds import AnalyticsPlan

log = logging.getLogger(__name__)

_SAMPLING_STREAM = 0
_NOISE_STREAM = 1


class EligibilitySource(Protocol):
    """Who may take part in a purpose now (the consent service, or a test double)."""

    def eligible(self, purpose: str, device_keys: Sequence[str]) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class RoundReport:
    """One round as the server saw it. ``sampled`` and ``contributed`` are server-internal
    (they depend on the secret sample) and are never released."""

    round: int
    eligible: tuple[str, ...]
    sampling_rate: float
    expected_count: float
    sampled: tuple[str, ...]
    contributed: int
    epsilon: float
    delta: float
    holdout_mae: float | None
    release_id: int
    seconds: float


@dataclass
class RunResult:
    """How a run went."""

    run_id: str
    status: RunStatus
    reason: str
    rounds: list[RoundReport] = field(default_factory=list)
    attested: dict[int, str] = field(default_factory=dict)
    epsilon: float = 0.0
    analytics: list[AnalyticsRound] = field(default_factory=list)
    """The weekly analytics releases run after training, if any were planned."""


class RoundObserver(Protocol):
    """Hooks around each round (progress display, simulated withdrawals, tests)."""

    def before_round(self, round_number: int) -> None: ...

    def after_round(self, report: RoundReport) -> None: ...


def _wait_for_nodes(grid: Grid, *, minimum: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum or time.monotonic() >= deadline:
            return nodes
        time.sleep(0.5)


def _train_config(settings: TrainSettings, round_number: int) -> ConfigRecord:
    return ConfigRecord(
        {
            "round": round_number,
            "clipping-norm": settings.clipping_norm,
            "local-epochs": settings.local_epochs,
            "batch-size": settings.batch_size,
            "learning-rate": settings.learning_rate,
            "device-noise-multiplier": settings.device_noise_multiplier,
            "device-max-grad-norm": settings.device_max_grad_norm,
            "device-epsilon-budget": settings.device_epsilon_budget,
            "device-delta": settings.device_delta,
        }
    )


def _model_name() -> str:
    from client_sdk.features import FEATURE_DIM
    from client_sdk.model import HIDDEN_UNITS

    return f"MoodModel MLP {FEATURE_DIM}-{HIDDEN_UNITS}-1 (next-day mood)"


def _initial_weights(seed: int | None) -> list[np.ndarray]:
    from client_sdk.model import create_model, get_weights

    return get_weights(create_model(seed=seed))


def release_epsilon(accountant: Accountant, user_ids: Collection[str]) -> float:
    """The epsilon a release carries: the largest total spend (every purpose, every run)
    of any user whose data could have shaped it, i.e. eligible in some round so far.

    Users who never were eligible in this run did not influence its models, so their
    spend (from other runs or analytics) is not this release's cost.
    """
    from privacy.accounting import canonical_history, history_epsilon
    from privacy.ledger import load_histories

    with accountant.engine.connect() as connection:
        histories = load_histories(connection, sorted(user_ids))
    distinct = {canonical_history(history) for history in histories.values()}
    return max(
        (
            history_epsilon(
                {(q, sigma): count for q, sigma, count in history},
                delta=accountant.delta,
                method=accountant.method,
            )
            for history in distinct
        ),
        default=0.0,
    )


class _Stop(Exception):
    def __init__(self, status: RunStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def run_training(
    grid: Grid,
    *,
    settings: TrainSettings,
    eligibility: EligibilitySource,
    store: ReleaseStore,
    accountant: Accountant,
    holdout: HoldoutSet | None = None,
    observers: Sequence[RoundObserver] = (),
    attestations: Attestations | None = None,
) -> RunResult:
    """Run the rounds; record every release and how the run ended.

    Returns normally when the run completes or is stopped on purpose (budget, no
    eligible devices); raises :class:`EligibilityError` (after recording it) when the
    consent service cannot be asked.
    """
    flower_run_id = grid.run.run_id
    run_id = uuid.uuid4().hex
    result = RunResult(run_id=run_id, status="running", reason="")
    store.start_run(
        run_id=run_id,
        flower_run_id=str(flower_run_id),
        purpose=TRAINING_PURPOSE,
        planned_rounds=settings.rounds,
        epsilon_budget=settings.epsilon_budget,
        delta=settings.delta,
        accounting=settings.accounting,
        noise_multiplier=settings.noise_multiplier,
        clipping_norm=settings.clipping_norm,
        expected_devices=settings.expected_devices,
        model=_model_name(),
        metric_label=holdout.label if holdout is not None else "no server-side evaluation",
        settings=settings.describe(),
    )
    log.info("Training run %s (Flower run %s) started", run_id, flower_run_id)
    try:
        if attestations is None:
            nodes = _wait_for_nodes(
                grid, minimum=settings.min_nodes, seconds=settings.node_wait_seconds
            )
            attestations = attest_nodes(grid, nodes, timeout=settings.attestation_timeout)
        result.attested = dict(attestations.device_keys)
        store.set_attested(run_id, len(attestations.device_keys))
        log.info(
            "%d node(s) attested, %d left out",
            len(attestations.device_keys),
            len(attestations.rejected),
        )
        if len(attestations.device_keys) < settings.min_nodes:
            raise _Stop(
                "stopped",
                f"only {len(attestations.device_keys)} node(s) attested, fewer than "
                f"min_nodes={settings.min_nodes}",
            )
        weights = _initial_weights(settings.seed)
        contributors: set[str] = set()  # eligible in some round of this run
        for round_number in range(1, settings.rounds + 1):
            report, weights = _run_round(
                grid,
                round_number=round_number,
                weights=weights,
                settings=settings,
                eligibility=eligibility,
                store=store,
                accountant=accountant,
                holdout=holdout,
                observers=observers,
                attestations=attestations,
                run_id=run_id,
                contributors=contributors,
            )
            result.rounds.append(report)
            result.epsilon = report.epsilon
        raise _Stop("completed", f"all {settings.rounds} planned rounds ran")
    except _Stop as stop:
        result.status, result.reason = stop.status, stop.reason
        store.finish_run(run_id, status=stop.status, reason=stop.reason)
        level = logging.INFO if stop.status == "completed" else logging.WARNING
        log.log(level, "Training run %s %s: %s", run_id, stop.status, stop.reason)
        return result
    except EligibilityError as error:
        reason = f"consent service failure, no round run on unchecked devices: {error}"
        store.finish_run(run_id, status="failed", reason=reason)
        log.error("Training run %s failed: %s", run_id, reason)
        raise
    except BaseException as error:
        store.finish_run(run_id, status="failed", reason=f"{type(error).__name__}: {error}")
        raise


def _run_round(
    grid: Grid,
    *,
    round_number: int,
    weights: list[np.ndarray],
    settings: TrainSettings,
    eligibility: EligibilitySource,
    store: ReleaseStore,
    accountant: Accountant,
    holdout: HoldoutSet | None,
    observers: Sequence[RoundObserver],
    attestations: Attestations,
    run_id: str,
    contributors: set[str],
) -> tuple[RoundReport, list[np.ndarray]]:
    started = time.monotonic()
    for observer in observers:
        observer.before_round(round_number)

    # 1. The server's consent gate: only devices whose ledger record is a grant now.
    node_for = attestations.node_for()
    answer = set(eligibility.eligible(TRAINING_PURPOSE, list(node_for)))
    # Sorted by key, not by node id: node ids are random, keys are stable, so a seeded
    # (test) run samples the same devices every time.
    eligible = sorted(key for key in node_for if key in answer)
    if not eligible:
        raise _Stop("stopped", f"no eligible devices before round {round_number}")

    # 2. The hard stop, before anything is sent.
    q = settings.sampling_rate(eligible=len(eligible))
    expected_count = q * len(eligible)
    event = PrivacyEvent.training_round(sampling_rate=q, noise_multiplier=settings.noise_multiplier)
    refused = accountant.would_exceed(eligible, event)
    if refused:
        raise _Stop(
            "stopped",
            f"privacy budget: round {round_number} would take {len(refused)} user(s) past "
            f"epsilon={settings.epsilon_budget:g} (delta={settings.delta:g}); stopped before it",
        )
    # 3. Charge every eligible user before the round runs (charge, then spend: a crash
    # in between over-counts, never under-counts). The charge re-checks the budget in
    # its own transaction.
    try:
        accountant.charge(
            eligible, event, purpose=TRAINING_PURPOSE, release_id=f"{run_id}/round-{round_number}"
        )
    except BudgetExceededError as error:
        raise _Stop("stopped", f"privacy budget (at charge time): {error}") from None

    # 4. Poisson sampling, then the round itself.
    sampled = poisson_sample(
        eligible, rate=q, rng=round_rng(settings.seed, round_number, stream=_SAMPLING_STREAM)
    )
    sampled_nodes = {node_for[key] for key in sampled}
    content = RecordDict(
        {
            GLOBAL_MODEL_RECORD: ArrayRecord(weights),
            TRAIN_CONFIG_RECORD: _train_config(settings, round_number),
        }
    )
    messages = [
        Message(
            content,
            dst_node_id=node_id,
            message_type=TRAIN_MESSAGE_TYPE,
            group_id=str(round_number),
        )
        for node_id in sorted(sampled_nodes)
    ]
    updates: dict[int, list[np.ndarray]] = {}
    if messages:
        for reply in grid.send_and_receive(messages, timeout=settings.round_timeout):
            source = reply.metadata.src_node_id
            if source not in sampled_nodes or source in updates:
                continue
            update = parse_update(reply, weights)
            if update is not None:
                updates[source] = update
    log.debug(
        "Round %s: %d eligible, q=%.4g, %d sampled, %d update(s)",
        round_number,
        len(eligible),
        q,
        len(sampled),
        len(updates),
    )

    # 5. DP-FedAvg: the failed and the silent contribute zero; noise and denominator fixed.
    seed = settings.seed
    noise_rng = None if seed is None else round_rng(seed, round_number, stream=_NOISE_STREAM)
    new_weights = next_global(
        weights,
        list(updates.values()),
        clipping_norm=settings.clipping_norm,
        noise_multiplier=settings.noise_multiplier,
        expected_count=expected_count,
        rng=noise_rng,
    )

    # 6. Publish: the model, its privacy cost, DP-safe counts and the server's metric.
    contributors.update(eligible)
    epsilon = release_epsilon(accountant, contributors)
    mae = holdout.mae(new_weights) if holdout is not None else None
    release_id = store.record_model_round(
        run_id=run_id,
        round_number=round_number,
        weights=new_weights,
        epsilon=epsilon,
        delta=settings.delta,
        sampling_rate=q,
        noise_multiplier=settings.noise_multiplier,
        clipping_norm=settings.clipping_norm,
        eligible_devices=len(eligible),
        expected_devices=expected_count,
        holdout_mae=mae,
        holdout_devices=holdout.devices if holdout is not None else None,
        holdout_examples=holdout.examples if holdout is not None else None,
    )
    report = RoundReport(
        round=round_number,
        eligible=tuple(eligible),
        sampling_rate=q,
        expected_count=expected_count,
        sampled=tuple(sampled),
        contributed=len(updates),
        epsilon=epsilon,
        delta=settings.delta,
        holdout_mae=mae,
        release_id=release_id,
        seconds=time.monotonic() - started,
    )
    log.info(
        "Round %s published: %d eligible, q=%.4g, epsilon=%.4g, holdout MAE %s",
        round_number,
        len(eligible),
        q,
        epsilon,
        "n/a" if mae is None else f"{mae:.4f}",
    )
    for observer in observers:
        observer.after_round(report)
    return report, new_weights


@contextmanager
def _self_contained(
    grid: Grid, settings: TrainSettings, root: Path
) -> Iterator[tuple[TrainSettings, RoundObserver, HoldoutSet | None]]:
    """No consent service configured: set a synthetic federation up for this run."""
    from server.simulation import SimulatedFederation, local_consent_service

    nodes = _wait_for_nodes(grid, minimum=settings.min_nodes, seconds=settings.node_wait_seconds)
    with local_consent_service(root / "consent") as service:
        federation = SimulatedFederation.create(
            root,
            devices=len(nodes),
            holdout_devices=settings.holdout_devices,
            days=settings.days,
            seed=settings.seed if settings.seed is not None else secrets.randbits(31),
            consent_url=service.url,
            log_key=service.log_key,
            withdraw_at_round=settings.withdraw_at_round,
            withdraw_fraction=settings.withdraw_fraction,
        )
        granted = federation.grant_share(settings.grant_fraction)
        log.info(
            "Simulated federation in %s: %d device(s), %d granted model-training",
            root,
            len(nodes),
            len(granted),
        )
        configured = settings.model_copy(
            update={"consent_url": service.url, "eligibility_token": service.token}
        )
        yield configured, federation, federation.holdout()


def run_server(
    grid: Grid,
    *,
    settings: TrainSettings,
    observers: Sequence[RoundObserver] = (),
    eligibility: EligibilitySource | None = None,
    analytics: AnalyticsPlan | None = None,
) -> RunResult:
    """Open the stores and the consent client, then :func:`run_training`, then the
    ``analytics`` plan's weekly rounds over the same attested devices (if given)."""
    with ExitStack() as stack:
        holdout: HoldoutSet | None = None
        observers = list(observers)
        if settings.consent_url is None and eligibility is None:
            root = settings.sim_root or default_sim_root(grid.run.run_id)
            if settings.sim_root is None:  # the devices' state is this run's alone
                stack.callback(shutil.rmtree, root, ignore_errors=True)
            settings, federation, holdout = stack.enter_context(
                _self_contained(grid, settings, root)
            )
            observers.insert(0, federation)
        elif settings.sim_root is not None and (settings.sim_root / SPEC_FILE).exists():
            from server.simulation import SimulatedFederation

            spec = FederationSpec.load(settings.sim_root)
            holdout = SimulatedFederation(root=settings.sim_root, spec=spec).holdout()
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
        accountant = stack.enter_context(
            Accountant(
                settings.resolved_accountant_database_url,
                epsilon_budget=settings.epsilon_budget,
                delta=settings.delta,
                method=settings.accounting,
            )
        )
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
            from server.analytics_rounds import run_analytics

            result.analytics = run_analytics(
                grid,
                plan=analytics,
                attested=result.attested,
                eligibility=eligibility,
                store=store,
                accountant=accountant,
            )
        return result


def _forward_logs_to_flower() -> None:
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
    observers: Sequence[RoundObserver] = (),
    eligibility: EligibilitySource | None = None,
    results: list[RunResult] | None = None,
    analytics: AnalyticsPlan | None = None,
) -> ServerApp:
    """A ServerApp with its settings given here (for ``flwr.simulation.run_simulation``).

    ``results`` (if given) receives the :class:`RunResult`.
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
        )
        if results is not None:
            results.append(result)

    return server_app


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """``flwr run``: settings from the run config, then ``MOODFED_`` variables."""
    _forward_logs_to_flower()
    run_server(grid, settings=TrainSettings.from_run_config(context.run_config))
